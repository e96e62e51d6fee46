"""Execution targets: where a compiled program (DRAM image + command list) runs.

:class:`VerilatorTarget` builds ``SimTop`` (accelerator + DRAM model) with Verilator through
cocotb's runner, once per configuration (cached under ``build/verilator``), and runs each job
as one simulation: DRAM is loaded and read back in bulk, and Python does not act per cycle.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.config import AcceleratorConfig
from hw.layouts import CSR_COUNTERS

__all__ = ["DramModel", "RunResult", "VerilatorTarget", "AcceleratorError"]


class AcceleratorError(RuntimeError):
    """The accelerator reported an error (``code`` is the ``hw.layouts.ErrorCode``) or did
    not finish."""

    def __init__(self, message, code=None, result=None):
        super().__init__(message)
        self.code = code
        self.result = result


@dataclass(frozen=True)
class DramModel:
    """Simulated DRAM link: ``rate_num/rate_den`` 64-bit words per core cycle (shared by
    reads and writes), read latency ``latency`` + random ``0..jitter_mask`` cycles, and a
    probability ``stall/256`` per cycle of refusing a transfer (backpressure)."""

    latency: int = 20
    jitter_mask: int = 0
    rate_num: int = 1
    rate_den: int = 1
    stall: int = 0
    seed: int = 1

    @classmethod
    def eyeriss(cls):
        """Eyeriss's link: 64 bits at 60 MHz against a 200 MHz core = 0.3 words/cycle."""
        return cls(latency=20, rate_num=3, rate_den=10)

    def as_array(self):
        return np.array([self.latency, self.jitter_mask, self.rate_num, self.rate_den,
                         self.stall, self.seed], dtype=np.int64)


@dataclass
class RunResult:
    finished: bool
    status: int
    error: int
    counters: dict
    regions: list
    wall_run: float
    ids: list
    dram_err: bool
    reset_while_busy: bool = False

    @property
    def cycles(self) -> int:
        return self.counters["cycles"]


class VerilatorTarget:
    """Runs programs on the Verilator build of ``SimTop`` for ``config``."""

    def __init__(self, config: AcceleratorConfig, *, dram_aw: int = 22, waves: bool = False):
        self.config = config
        self.dram_aw = dram_aw
        self.waves = waves
        self._built = None

    def build(self):
        """Build (or reuse) the simulator; returns ``(runner, build_dir)``."""
        if self._built is None:
            from gen.toolchain import cached_build
            from gen.verilog import convert
            from sw_driver.sim.simtop import SIM_DRAM_SOURCE, SimTop
            text = convert(SimTop(self.config, self.dram_aw), "sim_top")
            text = text + "\n" + SIM_DRAM_SOURCE.read_text()
            self._built = cached_build(text, "sim_top", tag=self.config.config_hash(),
                                       waves=self.waves)
        return self._built

    def run(self, segments, cmd_addr, readback, *, dram: DramModel = DramModel(),
            max_cycles: int = 50_000_000, reset_at: int = 0) -> RunResult:
        """Run one job. ``segments``: [(addr, uint64 words)]; ``readback``: [(addr, n)]."""
        from gen.toolchain import run_cocotb
        runner, bdir = self.build()
        with tempfile.TemporaryDirectory(prefix="accelgen-job-") as tmp:
            job = Path(tmp) / "job.npz"
            res = Path(tmp) / "result.npz"
            arrays = {"n_segments": np.array(len(segments)), "cmd_addr": np.array(cmd_addr),
                      "dram_cfg": dram.as_array(), "max_cycles": np.array(max_cycles),
                      "reset_at": np.array(reset_at),
                      "readback": np.array(readback, dtype=np.int64).reshape(-1, 2)}
            for k, (addr, words) in enumerate(segments):
                arrays[f"seg{k}_addr"] = np.array(addr)
                arrays[f"seg{k}_data"] = np.asarray(words, dtype=np.uint64)
            np.savez(job, **arrays)
            run_cocotb(runner, bdir, "sim_top", "sw_driver.sim.verilator_tb", test_dir=tmp,
                       extra_env={"ACCELGEN_JOB": str(job), "ACCELGEN_RESULT": str(res),
                                  "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL",
                                                                     "WARNING")},
                       waves=self.waves, log_file=Path(tmp) / "sim.log")
            if not res.exists():
                log = (Path(tmp) / "sim.log").read_text() if (Path(tmp) / "sim.log").exists() \
                    else ""
                raise AcceleratorError(f"simulation produced no result:\n{log[-3000:]}")
            r = np.load(res)
            counters = dict(zip(CSR_COUNTERS, (int(v) for v in r["counters"])))
            regions = [r[f"rb{k}"] for k in range(len(readback))]
            return RunResult(finished=bool(r["finished"]), status=int(r["status"]),
                             error=int(r["error"]), counters=counters, regions=regions,
                             wall_run=float(r["wall_run"]), ids=[int(v) for v in r["ids"]],
                             dram_err=bool(r["dram_err"]),
                             reset_while_busy=bool(r["reset_while_busy"])
                             if "reset_while_busy" in r else False)
