"""Run host code against the Verilator-simulated FPGA board core through its UART pins.

``fpga.core.BoardCore`` (accelerator + block-RAM DRAM + UART bridge) is converted to Verilog
and built with Verilator once per (configuration, clock, baud, DRAM size, rx timeout, source
hash) under ``build/verilator``. :func:`run_board` then runs a *scenario*, an ordinary
blocking function ``scenario(port, **args) -> dict``, inside the cocotb testbench
``sw_driver.sim.board_tb``: ``port`` is a simulated serial port (pyserial-like) whose bytes
travel bit by bit over ``uart_rx``/``uart_tx``, so the real driver (``sw_driver.serial``)
runs unchanged against the simulated hardware::

    def scenario(port, x, w):
        acc = Accelerator(preset("tiny"), "serial", port=port, clock=port.sim_seconds,
                          quiet_time=port.quiet_time)
        return {"y": acc.conv2d(x, w)[0]}

    out = run_board("mypkg.mymod:scenario", preset("tiny"), args={"x": x, "w": w})
    out["result"]["y"], out["stats"]["bytes_to_board"]

The scenario runs in the simulator process (a thread started by ``cocotb.task.bridge``):
its arguments and result travel pickled, and an exception it raises is raised again here
with the simulator-side traceback attached as a note.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hw.config import AcceleratorConfig

__all__ = ["BoardSimParams", "board_verilog", "build_board", "run_board", "BOARD_TOP"]

BOARD_TOP = "board_core"


@dataclass(frozen=True)
class BoardSimParams:
    """Board-core parameters of a simulation (see ``fpga.core.BoardCore``).

    ``clk_freq_hz`` must give an integer clock period in ns; the default runs the UART at
    4 cycles per bit (the fastest simulation). ``rx_timeout`` is the bridge's inter-byte
    timeout in cycles; ``quiet_time`` (simulated seconds) is what the host's resync waits,
    twice that timeout. ``timeout`` is the port's read timeout (simulated seconds).
    """

    clk_freq_hz: int = 4_000_000
    baud: int = 1_000_000
    dram_aw: int = 12
    rx_timeout: int = 400
    timeout: float = 2e-3

    @property
    def clk_period_ns(self) -> int:
        period = 1e9 / self.clk_freq_hz
        if abs(period - round(period)) > 1e-9:
            raise ValueError(f"clk_freq_hz={self.clk_freq_hz} does not give an integer clock "
                             f"period in ns")
        return round(period)

    @property
    def divisor(self) -> int:
        from fpga.core import uart_divisor
        return uart_divisor(self.clk_freq_hz, self.baud)

    @property
    def quiet_time(self) -> float:
        return 2 * self.rx_timeout / self.clk_freq_hz


def board_verilog(config: AcceleratorConfig, params: BoardSimParams = BoardSimParams()) -> str:
    """Verilog of ``BoardCore(config, ...)`` (module ``board_core``), cached under
    ``build/verilog`` by configuration, parameters and a hash of every hardware source."""
    import amaranth

    from gen.toolchain import build_dir_root, project_root
    h = hashlib.sha256(json.dumps([config.to_dict(), asdict(params),
                                   amaranth.__version__]).encode())
    root = project_root()
    for src in sorted((root / "hw").glob("*.py")) + sorted((root / "fpga").glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    path = build_dir_root() / "verilog" / f"{BOARD_TOP}-{h.hexdigest()[:16]}.v"
    if path.exists():
        return path.read_text()
    from fpga.core import BoardCore
    from gen.verilog import convert
    core = BoardCore(config, clk_freq_hz=params.clk_freq_hz, baud=params.baud,
                     dram_aw=params.dram_aw, rx_timeout=params.rx_timeout)
    text = convert(core, BOARD_TOP)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text


def build_board(config: AcceleratorConfig, params: BoardSimParams = BoardSimParams()):
    """Build (or reuse) the Verilator model of the board core; returns ``(runner, dir)``."""
    from gen.toolchain import cached_build
    return cached_build(board_verilog(config, params), BOARD_TOP,
                        tag=f"{config.config_hash()}-d{params.divisor}")


def run_board(scenario: str, config: AcceleratorConfig,
              params: BoardSimParams = BoardSimParams(), *, args: dict | None = None) -> dict:
    """Run ``scenario`` (``"package.module:function"``) against the simulated board.

    Returns ``{"result": <the scenario's return value>, "stats": {...}}`` with stats
    ``bytes_to_board``, ``bytes_from_board``, ``sim_seconds`` (simulated time of the
    scenario), ``wall_scenario`` (wall seconds of the scenario in the simulator) and
    ``wall_total`` (wall seconds of the whole simulation, including its start).

    Raises whatever the scenario raised (with the simulator-side traceback as a note), or
    ``RuntimeError`` if the simulation produced no result.
    """
    from gen.toolchain import run_cocotb
    runner, bdir = build_board(config, params)
    with tempfile.TemporaryDirectory(prefix="accelgen-board-") as tmp:
        job, res = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps({"scenario": scenario, "args": args or {},
                                      "params": asdict(params), "result": str(res)}))
        t0 = time.perf_counter()
        run_cocotb(runner, bdir, BOARD_TOP, "sw_driver.sim.board_tb", test_dir=tmp,
                   extra_env={"ACCELGEN_BOARD_JOB": str(job),
                              "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL",
                                                                 "WARNING")},
                   log_file=Path(tmp) / "sim.log")
        wall = time.perf_counter() - t0
        if not res.exists():
            log = Path(tmp) / "sim.log"
            raise RuntimeError("board simulation produced no result:\n"
                               + (log.read_text()[-3000:] if log.exists() else ""))
        out = pickle.loads(res.read_bytes())
    out["stats"]["wall_total"] = wall
    if "error" in out:
        exc, tb = out["error"]
        exc.add_note(f"--- in the board simulation ---\n{tb}")
        raise exc
    return out
