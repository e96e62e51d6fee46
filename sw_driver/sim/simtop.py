"""Simulation top: the accelerator with the DRAM model (``sim_dram.v``) beside it.

Verilator builds this top; the cocotb testbench (``sw_driver.sim.verilator_tb``) loads DRAM
in bulk through ``dram.mem``, drives the CSR port, and reads results back in bulk, so no
Python runs per cycle on the data path.

Every input port (``rst``, the CSR port's ``addr``/``wdata``/``we``/``re`` and the DRAM model's
settings) goes through one register before it reaches the accelerator or the DRAM model.
This is for simulation speed only: Verilator evaluates all logic that depends
combinationally on a top-level input on *every* ``eval()``, i.e. on both clock edges, and
Amaranth's next-state logic of every register depends on ``rst`` (``if (rst) next = init``).
Without the registers that "input combinational" region held about a third of the design's
evaluation code and ran on both edges (``gen.toolchain._public_vlt`` is the other half of
the fix). Measured with AlexNet CONV3 (C/8, M/8, batch 1, Eyeriss DRAM), simulated cycles/s
before -> after, runs back to back on the shared 2-core machine: tiny 73-114k -> 183-207k,
small 15-18k -> 45-54k, eyeriss 3.7-4.1k -> 8.9-10.4k. Everything the host does reaches the
core one cycle later, all inputs alike, so cycle counts and results are unchanged (same
``cycles`` counter before and after); the testbench waits one extra cycle for a CSR read.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Instance, Module, \
    ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.controller import CsrSignature
from hw.top import Accelerator

__all__ = ["SimTop", "SIM_DRAM_SOURCE", "DEFAULT_DRAM_AW"]

SIM_DRAM_SOURCE = Path(__file__).with_name("sim_dram.v")
#: log2 of the simulated DRAM size in 64-bit words (2**22 words = 32 MiB).
DEFAULT_DRAM_AW = 22


class SimTop(wiring.Component):
    """``Accelerator`` + ``sim_dram`` for Verilator runs.

    Ports: ``csr`` (host registers), the DRAM model's static configuration
    (``dram_latency``, ``dram_jitter_mask``, ``dram_rate_num``, ``dram_rate_den``,
    ``dram_stall`` (/256), ``dram_seed``), and ``busy``, ``done``, ``error``,
    ``dram_err`` (an access outside the model).
    """

    def __init__(self, config: AcceleratorConfig, dram_aw: int = DEFAULT_DRAM_AW):
        self.config = config
        self.dram_aw = dram_aw
        super().__init__({
            "csr": In(CsrSignature),
            "dram_latency": In(16), "dram_jitter_mask": In(16),
            "dram_rate_num": In(16), "dram_rate_den": In(16),
            "dram_stall": In(8), "dram_seed": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1), "dram_err": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        def registered(port, name=None):
            """``port`` delayed by one cycle through a reset-less register."""
            q = Signal(port.shape(), name=f"{name or port.name}_q", reset_less=True)
            m.d.sync += q.eq(port)
            return q

        # The core (accelerator + DRAM model) runs in "core": the same clock, with the reset
        # registered like every other input (see the module docstring).
        m.domains.core = core = ClockDomain("core")
        m.d.comb += [core.clk.eq(ClockSignal("sync")),
                     core.rst.eq(registered(ResetSignal("sync"), "rst"))]
        acc = Accelerator(self.config)
        m.submodules.acc = DomainRenamer("core")(acc)
        m.d.comb += [acc.csr.addr.eq(registered(self.csr.addr)),
                     acc.csr.wdata.eq(registered(self.csr.wdata)),
                     acc.csr.we.eq(registered(self.csr.we)),
                     acc.csr.re.eq(registered(self.csr.re)),
                     self.csr.rdata.eq(acc.csr.rdata)]
        m.d.comb += [self.busy.eq(acc.busy), self.done.eq(acc.done), self.error.eq(acc.error)]
        m.submodules.dram = Instance(
            "sim_dram",
            p_AW=self.dram_aw,
            i_clk=ClockSignal("core"), i_rst=ResetSignal("core"),
            i_rd_req_valid=acc.dram_rd.req.valid, o_rd_req_ready=acc.dram_rd.req.ready,
            i_rd_req_addr=acc.dram_rd.req.payload,
            o_rd_resp_valid=acc.dram_rd.resp.valid, i_rd_resp_ready=acc.dram_rd.resp.ready,
            o_rd_resp_data=acc.dram_rd.resp.payload,
            i_wr_valid=acc.dram_wr.valid, o_wr_ready=acc.dram_wr.ready,
            i_wr_addr=acc.dram_wr.payload.addr, i_wr_data=acc.dram_wr.payload.data,
            i_cfg_latency=registered(self.dram_latency),
            i_cfg_jitter_mask=registered(self.dram_jitter_mask),
            i_cfg_rate_num=registered(self.dram_rate_num),
            i_cfg_rate_den=registered(self.dram_rate_den),
            i_cfg_stall=registered(self.dram_stall), i_cfg_seed=registered(self.dram_seed),
            o_err_range=self.dram_err,
        )
        return m
