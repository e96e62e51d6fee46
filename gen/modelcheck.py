"""``accelgen modelcheck``: the analytical cycle model against the RTL on random layers.

BENCHMARKS.md asks for a model that predicts the RTL's cycles within 5% on every layer.
``accelgen bench`` checks that on AlexNet; this command checks it on seeded random small
layers for any configuration: each layer (random N, C, H = W, M, R = S in {1, 3, 5},
stride, padding; dense random Q8.8-range data) runs on the Verilator model with the
mapper's choice of mapping, its ofmap is compared with the golden model, and
``sw_driver.perfmodel.predict_layer`` predicts its cycles from the same data. The table
gives every layer's error; the summary the mean and largest absolute error and how many
layers are off by more than 5%. Results go to ``OUT/modelcheck.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

__all__ = ["modelcheck", "random_layers", "run_modelcheck"]

#: Layers whose model error is above this fraction are counted as misses (BENCHMARKS.md).
TOLERANCE = 0.05


def random_layers(count: int, seed: int, *, max_hw: int, max_channels: int):
    """``count`` seeded random layer shapes ``(N, C, H, M, R, U, padding)`` (square ifmap
    ``H x H``, square ``R x R`` filters): R in {1, 3, 5}, stride 1 or 2 (1 for R = 1),
    padding 0..R//2, H in max(R, 5)..``max_hw``, C and M in 1..``max_channels``, N in 1..2."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        R = int(rng.choice([1, 3, 5]))
        U = int(rng.choice([1, 2])) if R > 1 else 1
        P = int(rng.integers(0, R // 2 + 1))
        H = int(rng.integers(max(R, 5), max(R, 5, max_hw) + 1))
        C = int(rng.integers(1, max_channels + 1))
        M = int(rng.integers(1, max_channels + 1))
        N = int(rng.integers(1, 3))
        out.append((N, C, H, M, R, U, P))
    return out


def run_modelcheck(config, shapes, *, dram, seed: int = 0, progress=None) -> list[dict]:
    """Run every layer of ``shapes`` (:func:`random_layers` tuples) on the Verilator model
    and the analytical model. Returns one dict per layer: the shape, ``rtl`` and ``model``
    cycles, ``error`` ((model - rtl) / rtl) and the mapping in one line.

    Raises
    ------
    AssertionError
        If an ofmap is not bit-exact against the golden model.
    """
    from sw_driver.accelerator import Accelerator
    from sw_driver.golden import conv2d
    from sw_driver.mapper import LayerShape
    from sw_driver.perfmodel import predict_layer

    acc = Accelerator(config, "verilator", dram=dram)
    rows = []
    for i, (N, C, H, M, R, U, P) in enumerate(shapes):
        rng = np.random.default_rng([seed, i])
        x = rng.integers(-300, 301, size=(N, C, H, H)).astype(np.int16)
        w = rng.integers(-60, 61, size=(M, C, R, R)).astype(np.int16)
        y, stats = acc.conv2d(x, w, None, stride=U, padding=P, output_shift=6)
        ref = conv2d(x, w, None, stride=U, padding=P, output_shift=6,
                     psum_width=config.psum_width, data_width=config.data_width)
        assert np.array_equal(y, ref), f"layer {i} {(N, C, H, M, R, U, P)}: not bit-exact"
        pred = predict_layer(config, LayerShape(N, C, H, H, M, R, R, U, P), dram=dram,
                             ifmap=x, ofmap=y)
        rtl = stats.counters["cycles"]
        mp = stats.layers[0].mapping
        rows.append({"N": N, "C": C, "H": H, "M": M, "R": R, "U": U, "padding": P,
                     "rtl": rtl, "model": pred.cycles, "error": (pred.cycles - rtl) / rtl,
                     "mapping": f"p={mp.p} q={mp.q} r={mp.r_sets} t={mp.t_sets} "
                                f"chunks={mp.n_rchunks} fold={mp.n_fold} nb={mp.nb} "
                                f"buffers={mp.buffers} passes={mp.n_passes}"})
        if progress is not None:
            progress(rows[-1])
    return rows


def summary(rows) -> dict:
    """Mean and largest absolute error and the layers above :data:`TOLERANCE`."""
    err = np.array([r["error"] for r in rows])
    return {"layers": len(rows), "mean_abs_error": float(np.mean(np.abs(err))),
            "mean_error": float(np.mean(err)), "max_abs_error": float(np.max(np.abs(err))),
            "over_tolerance": int(np.sum(np.abs(err) > TOLERANCE)), "tolerance": TOLERANCE}


@click.command()
@click.option("--preset", "preset_name", default="tiny", show_default=True,
              help="Named configuration.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one configuration parameter (repeatable).")
@click.option("--count", default=40, show_default=True, help="Random layers to run.")
@click.option("--seed", default=1, show_default=True, help="Seed of the shapes and data.")
@click.option("--max-hw", default=None, type=int,
              help="Largest ifmap height/width (default: 13, or 23 for 32+ PEs).")
@click.option("--max-channels", default=None, type=int,
              help="Largest C and M (default: 8, or 32 for 32+ PEs).")
@click.option("--dram", type=click.Choice(["unlimited", "eyeriss"]), default="unlimited",
              show_default=True, help="DRAM link: 1 word/cycle, or Eyeriss's 0.3.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/modelcheck"), show_default=True,
              help="Where modelcheck.json goes.")
def modelcheck(preset_name, overrides, count, seed, max_hw, max_channels, dram, out_dir):
    """Check the analytical cycle model against the RTL on seeded random layers.

    Every layer runs on the Verilator model (bit-exact against the golden model) and
    through sw_driver.perfmodel; the table gives each layer's error and the summary how
    many are off by more than 5%. Exits with status 1 if any is.

    \b
    Examples:
      accelgen modelcheck                                  # 40 tiny layers, about 3 min
      accelgen modelcheck --preset small --count 25 --seed 3
      accelgen modelcheck --preset tiny --dram eyeriss --count 10
    """
    from tqdm import tqdm

    from gen.cli import load_config
    from sw_driver.targets import DramModel

    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--count")
    config = load_config(preset_name, overrides)
    big = config.num_pes >= 32
    shapes = random_layers(count, seed, max_hw=max_hw or (23 if big else 13),
                           max_channels=max_channels or (32 if big else 8))
    dram_model = DramModel.eyeriss() if dram == "eyeriss" else DramModel()
    t0 = time.perf_counter()
    bar = tqdm(total=count, desc=f"modelcheck {preset_name}", unit="layer")

    def step(row):
        bar.set_postfix_str(f"{row['error']:+.1%}")
        bar.update()

    try:
        rows = run_modelcheck(config, shapes, dram=dram_model, seed=seed, progress=step)
    except AssertionError as e:
        raise click.ClickException(str(e)) from None
    finally:
        bar.close()
    click.echo(f"{'N':>2} {'C':>3} {'H':>3} {'M':>3} {'R':>2} {'U':>2} {'P':>2} "
               f"{'RTL':>9} {'model':>9} {'error':>7}  mapping")
    for r in rows:
        flag = "  <-- over 5%" if abs(r["error"]) > TOLERANCE else ""
        click.echo(f"{r['N']:>2} {r['C']:>3} {r['H']:>3} {r['M']:>3} {r['R']:>2} {r['U']:>2} "
                   f"{r['padding']:>2} {r['rtl']:>9,} {r['model']:>9,} {r['error']:>+7.2%}  "
                   f"{r['mapping']}{flag}")
    s = summary(rows)
    click.echo(f"{s['layers']} layers: mean |error| {s['mean_abs_error']:.2%} (mean "
               f"{s['mean_error']:+.2%}), largest {s['max_abs_error']:.2%}, "
               f"{s['over_tolerance']} over {TOLERANCE:.0%}")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"preset": preset_name, "overrides": list(overrides), "seed": seed,
            "dram": dram, "wall_s": round(time.perf_counter() - t0, 1)}
    (out_dir / "modelcheck.json").write_text(json.dumps(
        {"meta": meta, "summary": s, "layers": rows}, indent=2) + "\n")
    click.echo(f"wrote {out_dir / 'modelcheck.json'}")
    if s["over_tolerance"]:
        raise SystemExit(1)
