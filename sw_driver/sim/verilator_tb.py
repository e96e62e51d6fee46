"""cocotb testbench that executes one job on the Verilator-built ``SimTop``.

A job (``.npz`` written by :mod:`sw_driver.targets`) holds DRAM segments, the command-list
address, the DRAM model's settings and the regions to read back. The testbench loads DRAM in
bulk, starts the accelerator through its CSRs, waits for it in coarse steps (no Python per
cycle on the data path), then reads status, counters and DRAM regions back in bulk into a
results ``.npz``. Optionally it asserts reset in the middle of the run and reruns the job, to
show a reset mid-layer leaves nothing behind.
"""

from __future__ import annotations

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from hw.layouts import CSR, CSR_COUNTERS

CLOCK_NS = 10


class SimHost:
    """CSR and DRAM access to the simulated SimTop."""

    def __init__(self, dut):
        self.dut = dut
        self.mem = dut.dram.mem

    async def reset(self, cycles=5):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def csr_write(self, addr, value):
        d = self.dut
        d.csr__addr.value = addr
        d.csr__wdata.value = value
        d.csr__we.value = 1
        await RisingEdge(d.clk)
        d.csr__we.value = 0

    async def csr_read(self, addr):
        d = self.dut
        d.csr__addr.value = addr
        d.csr__re.value = 1
        await RisingEdge(d.clk)
        d.csr__re.value = 0
        await RisingEdge(d.clk)
        # SimTop registers its inputs (for Verilator's speed, see sw_driver.sim.simtop): the
        # accelerator sees ``re`` one cycle later, so ``rdata`` is valid one cycle later.
        await RisingEdge(d.clk)
        return int(d.csr__rdata.value)

    def write_words(self, addr, words):
        mem = self.mem
        for i, w in enumerate(words.tolist()):
            mem[addr + i].value = w

    def read_words(self, addr, n):
        mem = self.mem
        return np.array([int(mem[addr + i].value) for i in range(n)], dtype=np.uint64)

    async def run(self, cmd_addr, max_cycles, chunk=4096, abort_after=None):
        """Start the command list; return True when done, False on timeout/abort."""
        await self.csr_write(CSR.CMD_ADDR, cmd_addr)
        await self.csr_write(CSR.CTRL, 1)
        waited = 0
        while True:
            # One timer per chunk: Python wakes every `chunk` cycles, never per cycle
            # (ClockCycles would call back into Python on every clock edge).
            await Timer(chunk * CLOCK_NS, unit="ns")
            waited += chunk
            if not int(self.dut.busy.value):
                return True
            if abort_after is not None and waited >= abort_after:
                return False
            if waited >= max_cycles:
                return False


@cocotb.test()
async def run_job(dut):
    job = np.load(os.environ["ACCELGEN_JOB"], allow_pickle=False)
    out_path = os.environ["ACCELGEN_RESULT"]
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.csr__we.value = 0
    dut.csr__re.value = 0
    dut.csr__addr.value = 0
    dut.csr__wdata.value = 0
    dram = job["dram_cfg"].tolist()   # latency, jitter_mask, rate_num, rate_den, stall, seed
    dut.dram_latency.value = dram[0]
    dut.dram_jitter_mask.value = dram[1]
    dut.dram_rate_num.value = dram[2]
    dut.dram_rate_den.value = dram[3]
    dut.dram_stall.value = dram[4]
    dut.dram_seed.value = dram[5]
    host = SimHost(dut)
    await host.reset()

    t_load = time.perf_counter()
    n_seg = int(job["n_segments"])
    for k in range(n_seg):
        host.write_words(int(job[f"seg{k}_addr"]), job[f"seg{k}_data"])
    t_load = time.perf_counter() - t_load

    cmd_addr = int(job["cmd_addr"])
    max_cycles = int(job["max_cycles"])
    reset_at = int(job["reset_at"])
    result = {}
    if reset_at > 0:
        # Reset in the middle of the run, then run again from a clean state.
        finished = await host.run(cmd_addr, max_cycles, chunk=min(4096, reset_at),
                                  abort_after=reset_at)
        result["reset_while_busy"] = np.array(int(not finished))
        await host.reset()

    t_run = time.perf_counter()
    finished = await host.run(cmd_addr, max_cycles)
    t_run = time.perf_counter() - t_run

    status = await host.csr_read(CSR.STATUS)
    error = await host.csr_read(CSR.ERROR)
    counters = [await host.csr_read(CSR.COUNTERS + i) for i in range(len(CSR_COUNTERS))]
    ids = [await host.csr_read(a) for a in (CSR.MAGIC, CSR.HW_CONFIG0, CSR.HW_CONFIG1,
                                             CSR.HW_CONFIG2)]
    t_read = time.perf_counter()
    regions = job["readback"].reshape(-1, 2)
    for k, (addr, n) in enumerate(regions.tolist()):
        result[f"rb{k}"] = host.read_words(addr, n)
    t_read = time.perf_counter() - t_read

    np.savez(out_path, finished=np.array(int(finished)), status=np.array(status),
             error=np.array(error), counters=np.array(counters, dtype=np.uint64),
             ids=np.array(ids, dtype=np.uint64), dram_err=np.array(int(dut.dram_err.value)),
             wall_run=np.array(t_run), wall_load=np.array(t_load),
             wall_read=np.array(t_read), **result)
