"""Simulation top: the accelerator with the DRAM model (``sim_dram.v``) beside it.

Verilator builds this top; the cocotb testbench (``sw_driver.sim.verilator_tb``) loads DRAM
in bulk through ``dram.mem``, drives the CSR port, and reads results back in bulk, so no
Python runs per cycle on the data path.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, ResetSignal
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
        m.submodules.acc = acc = Accelerator(self.config)
        wiring.connect(m, wiring.flipped(self.csr), acc.csr)
        m.d.comb += [self.busy.eq(acc.busy), self.done.eq(acc.done), self.error.eq(acc.error)]
        m.submodules.dram = Instance(
            "sim_dram",
            p_AW=self.dram_aw,
            i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"),
            i_rd_req_valid=acc.dram_rd.req.valid, o_rd_req_ready=acc.dram_rd.req.ready,
            i_rd_req_addr=acc.dram_rd.req.payload,
            o_rd_resp_valid=acc.dram_rd.resp.valid, i_rd_resp_ready=acc.dram_rd.resp.ready,
            o_rd_resp_data=acc.dram_rd.resp.payload,
            i_wr_valid=acc.dram_wr.valid, o_wr_ready=acc.dram_wr.ready,
            i_wr_addr=acc.dram_wr.payload.addr, i_wr_data=acc.dram_wr.payload.data,
            i_cfg_latency=self.dram_latency, i_cfg_jitter_mask=self.dram_jitter_mask,
            i_cfg_rate_num=self.dram_rate_num, i_cfg_rate_den=self.dram_rate_den,
            i_cfg_stall=self.dram_stall, i_cfg_seed=self.dram_seed,
            o_err_range=self.dram_err,
        )
        return m
