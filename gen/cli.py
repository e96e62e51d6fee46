"""``accelgen``: the one command-line entry point (DESIGN.md section 6).

Each subcommand is a function in its own module under ``gen/``; this file only wires them.
"""

from __future__ import annotations

import click

from hw.config import PRESETS, parse_overrides, preset as get_preset

__all__ = ["main"]


def load_config(preset_name: str, overrides: tuple[str, ...]):
    """Preset plus ``--set key=value`` overrides, with errors as click usage errors."""
    try:
        return parse_overrides(get_preset(preset_name), list(overrides))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="accelgen")
def main():
    """Generate, simulate, benchmark and build Eyeriss-class row-stationary CNN
    accelerators.

    \b
    Examples:
      accelgen verilog --preset eyeriss -o out/
      accelgen verilog --preset tiny --set pe_rows=4 --set zero_gating=off -o out/
      accelgen run --model digits
    """


@main.command()
@click.option("--preset", "preset_name", default="default", show_default=True,
              type=click.Choice(sorted(PRESETS)), help="Named configuration.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one configuration parameter (repeatable).")
@click.option("--top", default="accelerator", show_default=True,
              help="Design to emit: accelerator, pe, glb, rlc_encoder, rlc_decoder.")
@click.option("--name", default=None, help="Verilog module name (default: the --top name).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (created if missing).")
@click.option("--lint/--no-lint", default=False, show_default=True,
              help="Run verilator --lint-only on the result.")
def verilog(preset_name, overrides, top, name, out_dir, lint):
    """Write DIR/<top>.v and DIR/<top>.json (config, ports, widths, SHA-256).

    The same inputs always give a byte-identical file.

    \b
    Examples:
      accelgen verilog --preset eyeriss -o out/
      accelgen verilog --preset tiny --set pe_cols=6 --lint -o out/tiny6
      accelgen verilog --preset eyeriss --top pe -o out/pe
    """
    from gen.verilog import generate

    config = load_config(preset_name, overrides)
    try:
        vpath, mpath = generate(config, out_dir, top=top, name=name, preset_name=preset_name)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote {vpath} ({vpath.stat().st_size} bytes) and {mpath}")
    if lint:
        from gen.toolchain import lint as run_lint
        result = run_lint(vpath, name or top)
        if result.returncode != 0:
            click.echo(result.stdout + result.stderr, err=True)
            raise click.ClickException("verilator --lint-only reported problems")
        click.echo("verilator --lint-only: clean")


def _register_optional():
    """Subcommands that live in their own modules are added when those modules exist."""
    import importlib
    for mod_name, attr in (("gen.run_cmd", "run"), ("gen.bench", "bench"),
                           ("gen.sweep", "sweep"), ("gen.fpga_cmd", "fpga"),
                           ("gen.modelcheck", "modelcheck")):
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        main.add_command(getattr(mod, attr))


_register_optional()


if __name__ == "__main__":  # pragma: no cover
    main()
