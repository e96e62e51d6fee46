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

__all__ = ["DramModel", "RunResult", "VerilatorTarget", "PysimTarget", "AcceleratorError",
           "auto_threads", "THREADS_MIN_PES", "THREADS_MIN_CORES"]


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


#: Smallest array (PEs) for which :func:`auto_threads` picks a 2-thread Verilator model.
THREADS_MIN_PES = 100
#: Fewest cores for which :func:`auto_threads` picks a 2-thread Verilator model.
THREADS_MIN_CORES = 4


def auto_threads(config: AcceleratorConfig) -> int:
    """Verilator threads worth using for ``config`` on this machine: 2 for arrays of at
    least :data:`THREADS_MIN_PES` PEs when the machine has :data:`THREADS_MIN_CORES` or more
    cores, else 1.

    Measured on the 2-core development machine, idle, the ``eyeriss`` 12 x 14 model with
    49-entry PE psum FIFOs (AlexNet at batch 4, bit-exact both ways): CONV5 24,501
    simulated cycles/s with one thread against 21,237 with two, CONV4 21,794 against 20,845.
    Verilator's threads spin while they wait, so a threaded model only pays when each thread
    has a core of its own besides the Python driver: the ``small`` model (64 PEs) ran at
    22,871 cycles/s with one thread and 6,625 with two while the other core was busy with
    Yosys. (With the 7-entry FIFOs of session 6, AlexNet CONV3 with C and M halved ran
    at 10,341 cycles/s with one thread and 19,510 with two.) Two threads on 4+ cores are not
    measured here. Never for parallel test workers.
    """
    cores = os.cpu_count() or 1
    return 2 if cores >= THREADS_MIN_CORES and config.num_pes >= THREADS_MIN_PES else 1


class VerilatorTarget:
    """Runs programs on the Verilator build of ``SimTop`` for ``config``.

    Parameters
    ----------
    config : AcceleratorConfig
    dram_aw : int, keyword-only
        Address bits of the simulated DRAM (64-bit words).
    waves : bool, keyword-only
        Record an FST waveform.
    threads : int, keyword-only
        Verilator ``--threads`` of the model (default 1; :func:`auto_threads` picks one for
        a configuration). Each value is its own cached build.

    Raises
    ------
    ValueError
        ``threads`` is not an int of at least 1.
    """

    def __init__(self, config: AcceleratorConfig, *, dram_aw: int = 22, waves: bool = False,
                 threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1 (Verilator --threads), "
                             f"not {threads!r}")
        self.config = config
        self.dram_aw = dram_aw
        self.waves = waves
        self.threads = threads
        self._built = None

    def build(self):
        """Build (or reuse) the simulator; returns ``(runner, build_dir)``."""
        if self._built is None:
            from gen.toolchain import cached_build
            args = ("--threads", str(self.threads)) if self.threads > 1 else ()
            self._built = cached_build(self.verilog(), "sim_top",
                                       tag=self.config.config_hash(), waves=self.waves,
                                       extra_build_args=args)
        return self._built

    def verilog(self) -> str:
        """Verilog of ``SimTop`` (accelerator + DRAM model) for this configuration.

        Elaborating the 12x14 array takes about a minute, so the text is cached under
        ``build/verilog``, keyed by the configuration, the DRAM size and a hash of every
        hardware source file: a changed design is always converted again.
        """
        import hashlib
        import json

        import amaranth

        from gen.toolchain import build_dir_root, project_root
        from sw_driver.sim.simtop import SIM_DRAM_SOURCE

        h = hashlib.sha256(json.dumps([self.config.to_dict(), self.dram_aw,
                                       amaranth.__version__]).encode())
        root = project_root()
        for src in sorted((root / "hw").glob("*.py")) + [root / "sw_driver/sim/simtop.py",
                                                        SIM_DRAM_SOURCE]:
            h.update(src.name.encode() + b"\0" + src.read_bytes())
        path = build_dir_root() / "verilog" / f"sim_top-{h.hexdigest()[:16]}.v"
        if path.exists():
            return path.read_text()
        from gen.verilog import convert
        from sw_driver.sim.simtop import SimTop
        text = convert(SimTop(self.config, self.dram_aw), "sim_top") + "\n" + \
            SIM_DRAM_SOURCE.read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)          # atomic: parallel workers never read a partial file
        return text

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


class PysimTarget:
    """Runs programs in Amaranth's own simulator: no C++ toolchain needed, for small presets.

    The DRAM is a Python model with the same knobs as :class:`DramModel` (bandwidth as a
    token bucket, latency + jitter, random backpressure); it acts every cycle, so this target
    is for small layers and for checking the Verilator results, not for big runs.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config

    def build(self):
        return None

    def run(self, segments, cmd_addr, readback, *, dram: DramModel = DramModel(),
            max_cycles: int = 2_000_000, reset_at: int = 0) -> RunResult:
        import random
        import time

        from amaranth.sim import Simulator

        from hw.layouts import CSR
        from hw.top import Accelerator as Top

        if reset_at:
            raise ValueError("the pysim target does not model a reset in the middle of a run")
        top = Top(self.config)
        mem = {}
        for addr, words in segments:
            for i, w in enumerate(np.asarray(words, dtype=np.uint64).tolist()):
                mem[addr + i] = w
        rng = random.Random(dram.seed)
        out = {}

        async def csr_write(ctx, addr, value):
            ctx.set(top.csr.addr, addr)
            ctx.set(top.csr.wdata, value)
            ctx.set(top.csr.we, 1)
            await ctx.tick()
            ctx.set(top.csr.we, 0)

        async def csr_read(ctx, addr):
            ctx.set(top.csr.addr, addr)
            ctx.set(top.csr.re, 1)
            await ctx.tick()
            ctx.set(top.csr.re, 0)
            await ctx.tick()
            return ctx.get(top.csr.rdata)

        async def host(ctx):
            await csr_write(ctx, CSR.CMD_ADDR, cmd_addr)
            await csr_write(ctx, CSR.CTRL, 1)
            cycles = 0
            while True:
                await ctx.tick().repeat(64)
                cycles += 64
                if not ctx.get(top.busy) or cycles >= max_cycles:
                    break
            out["finished"] = not ctx.get(top.busy)
            out["status"] = await csr_read(ctx, CSR.STATUS)
            out["error"] = await csr_read(ctx, CSR.ERROR)
            out["counters"] = [await csr_read(ctx, CSR.COUNTERS + i)
                               for i in range(len(CSR_COUNTERS))]
            out["ids"] = [await csr_read(ctx, a) for a in
                          (CSR.MAGIC, CSR.HW_CONFIG0, CSR.HW_CONFIG1, CSR.HW_CONFIG2)]

        async def dram_proc(ctx):
            rd, wr = top.dram_rd, top.dram_wr
            queue, now, tokens, last_due, prefer_write = [], 0, 0, 0, False
            unlimited = dram.rate_num >= dram.rate_den
            while True:
                ok = (unlimited or tokens >= dram.rate_den) and rng.random() * 256 >= dram.stall
                # One transfer per cycle, priority alternating when both wait (as
                # sim/sim_dram.v): only the picked side sees ready. The valids do not depend
                # on ready (stream rules), so they are read before ready is driven.
                full = len(queue) >= 64
                pick_write = ctx.get(wr.valid) and (not ctx.get(rd.req.valid)
                                                    or prefer_write or full)
                wr_ok = ok and pick_write
                rd_ok = ok and not pick_write and not full
                ctx.set(wr.ready, wr_ok)
                ctx.set(rd.req.ready, rd_ok)
                head = queue[0] if queue and queue[0][0] <= now else None
                ctx.set(rd.resp.valid, head is not None)
                ctx.set(rd.resp.payload, head[1] if head else 0)
                _, _, wv, wp, qv, qa, rr = await ctx.tick().sample(
                    wr.valid, wr.payload, rd.req.valid, rd.req.payload, rd.resp.ready)
                fired = False
                if wv and wr_ok:
                    mem[int(wp.addr)] = int(wp.data)
                    fired, prefer_write = True, False
                elif qv and rd_ok:
                    prefer_write = True
                    due = max(now + dram.latency + (rng.getrandbits(16) & dram.jitter_mask),
                              last_due)
                    queue.append((due, mem.get(int(qa), 0)))
                    last_due = due
                    fired = True
                if head is not None and rr:
                    queue.pop(0)
                if not unlimited:
                    tokens = tokens + dram.rate_num - (dram.rate_den if fired else 0)
                    tokens = min(tokens, 4 * dram.rate_den)
                now += 1

        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(host)
        sim.add_testbench(dram_proc, background=True)
        t0 = time.perf_counter()
        sim.run()
        wall = time.perf_counter() - t0
        regions = [np.array([mem.get(a + i, 0) for i in range(n)], dtype=np.uint64)
                   for a, n in readback]
        return RunResult(finished=out["finished"], status=out["status"], error=out["error"],
                         counters=dict(zip(CSR_COUNTERS, out["counters"])), regions=regions,
                         wall_run=wall, ids=out["ids"], dram_err=False)
