"""The accelerator top: controller, engines, global buffer and PE array.

::

     DRAM (64-bit, accelerator is master)
      |  dram_rd: command fetch + LOAD (raw, or RLC decode)    dram_wr: STORE (bias,
      v                                                          requantise, ReLU, RLC encode)
     GlobalBuffer  (glb_banks x glb_bank_words x 64 bit; 4 read ports, 2 write ports,
      |             every request through a register slice, hw.skid)
      |  filter / ifmap / psum GIN (AGU-driven, multicast by tag)    ^ GON (AGU-driven)
      v                                                              |
     PEArray  pe_rows x pe_cols row-stationary PEs, psums flowing up each column

The controller executes a command list in DRAM (``hw.controller``); the LOAD, STORE and PASS
engines run concurrently, so DRAM transfers overlap compute (Eyeriss, JSSC 2017, section IV;
DESIGN.md section 5). Host access is the CSR port (map in ``hw.layouts.CSR``).
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .controller import Controller, CsrSignature, DramReadArbiter
from .dma import LoadEngine, StoreEngine
from .glb import GLB_WORD_BITS, GlobalBuffer, glb_addr_width, glb_write_layout
from .skid import SkidBuffer
from .layouts import (CSR_COUNTERS, Engine, ErrorCode, desc_words, dram_read_signature,
                      dram_write_layout, load_desc_layout, pass_desc_layout,
                      store_desc_layout)
from .pass_engine import PassEngine

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """Eyeriss-class row-stationary CNN accelerator of any configured size.

    Parameters
    ----------
    config : AcceleratorConfig

    Ports
    -----
    csr : In(CsrSignature)
        Host registers: start, status, error code, command address, ID registers and the
        64-bit performance counters (``hw.layouts.CSR``).
    dram_rd : Out(dram_read_signature())
        DRAM read master: word addresses out, 64-bit words back in order.
    dram_wr : Out(stream.Signature(dram_write_layout()))
        DRAM write master.
    busy, done, error : Out(1)
        Status (also readable in ``CSR.STATUS``), e.g. for LEDs or an interrupt.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({
            "csr": In(CsrSignature),
            "dram_rd": Out(dram_read_signature()),
            "dram_wr": Out(stream.Signature(dram_write_layout())),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        aw = glb_addr_width(cfg)

        m.submodules.ctrl = ctrl = Controller(cfg)
        m.submodules.glb = glb = GlobalBuffer(cfg, read_ports=4, write_ports=2)
        m.submodules.load = load = LoadEngine(cfg, aw)
        m.submodules.store = store = StoreEngine(cfg, aw)
        m.submodules.pass_ = pas = PassEngine(cfg, aw)
        m.submodules.rd_arb = arb = DramReadArbiter(2)

        wiring.connect(m, wiring.flipped(self.csr), ctrl.csr)
        m.d.comb += [self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
                     self.error.eq(ctrl.error)]

        # DRAM: command fetch has priority over LOAD on the read port; STORE writes.
        wiring.connect(m, ctrl.dram, arb.m[0])
        wiring.connect(m, load.dram, arb.m[1])
        wiring.connect(m, arb.dram, wiring.flipped(self.dram_rd))
        wiring.connect(m, store.dram_wr, wiring.flipped(self.dram_wr))

        # GLB ports: reads = filter, ifmap, psum-in GIN feeders and STORE; writes = GON, LOAD.
        # Every request goes through a register slice, so the GLB's bank decode and per-bank
        # arbitration start from flops and its ready lands in a flop: no path runs from one
        # engine's address logic through the arbitration into another engine (an FPGA
        # timing fix; README's FPGA section). Responses go through a slice too: the routed
        # 2x2 board top's critical path ran from a GLB block RAM's data output through the
        # bank and response muxes into the STORE engine's bias adder (23.0 ns). A read costs
        # two more cycles of latency. The write slices count as their engine's busy, so a
        # command that waits for PASS or LOAD also waits until their last GLB write is in
        # the SRAM.
        readers = (pas.filter_rd, pas.ifmap_rd, pas.psum_rd, store.glb_rd)
        for i, port in enumerate(readers):
            req = SkidBuffer(unsigned(aw))
            m.submodules[f"glb_rd{i}_slice"] = req
            wiring.connect(m, port.req, req.i)
            wiring.connect(m, req.o, glb.rd[i].req)
            resp = SkidBuffer(unsigned(GLB_WORD_BITS))
            m.submodules[f"glb_rd{i}_resp_slice"] = resp
            wiring.connect(m, glb.rd[i].resp, resp.i)
            wiring.connect(m, resp.o, port.resp)
        write_pending = {}
        for i, (e, port) in enumerate(((Engine.PASS, pas.psum_wr), (Engine.LOAD, load.glb_wr))):
            wr = SkidBuffer(glb_write_layout(aw))
            m.submodules[f"glb_wr{i}_slice"] = wr
            wiring.connect(m, port, wr.i)
            wiring.connect(m, wr.o, glb.wr[i])
            write_pending[e] = wr.o.valid

        # Descriptor registers, written word by word by RUN commands.
        engines = {Engine.LOAD: (load, load_desc_layout()),
                   Engine.STORE: (store, store_desc_layout()),
                   Engine.PASS: (pas, pass_desc_layout())}
        # A descriptor write is registered (its word's one-hot strobe and the data) and lands
        # a cycle later; the engine's start is registered with it, so a start still follows
        # its last word, and the pending start counts as busy. Decoded in the write cycle,
        # the strobes fanned out from the controller's FIFO logic to the clock enables of
        # every descriptor flop (20.9 ns on an 8 x 8 board top, README's FPGA section).
        desc_data = Signal(64, name="desc_wr_data")
        m.d.sync += desc_data.eq(ctrl.desc_wr.data)
        start_q = Signal.like(ctrl.engine_start, name="engine_start_q")
        m.d.sync += start_q.eq(ctrl.engine_start)
        for e, (eng, layout) in engines.items():
            n = desc_words(layout)
            words = [Signal(64, name=f"desc_{e.name.lower()}_{i}") for i in range(n)]
            for i, w in enumerate(words):
                hit = Signal(name=f"desc_{e.name.lower()}_{i}_wr")
                m.d.sync += hit.eq(ctrl.desc_wr.en & (ctrl.desc_wr.engine == e)
                                   & (ctrl.desc_wr.index == i))
                with m.If(hit):
                    m.d.sync += w.eq(desc_data)
            flat = Signal(64 * n)
            m.d.comb += [flat[64 * i:64 * (i + 1)].eq(w) for i, w in enumerate(words)]
            m.d.comb += [eng.desc.eq(flat[:layout.size]),
                         eng.start.eq(start_q[e.value]),
                         ctrl.engine_busy[e.value].eq(eng.busy | start_q[e.value]
                                                      | write_pending.get(e, 0))]

        wiring.connect(m, ctrl.role_wr, pas.role_wr)

        # Errors: the first rising edge of an engine's sticky flag is reported.
        sources = [(load.error, ErrorCode.RLC_MALFORMED), (glb.error, ErrorCode.GLB_RANGE),
                   (pas.role_error, ErrorCode.BAD_ROLE)]
        for flag, code in reversed(sources):
            prev = Signal(name=f"prev_err_{code.name.lower()}")
            m.d.sync += prev.eq(flag)
            with m.If(flag & ~prev):
                m.d.comb += ctrl.error_in.eq(code)
        m.d.comb += [glb.error_clear.eq(ctrl.run_start), pas.role_error_clear.eq(ctrl.run_start)]

        # Performance counters: per-cycle increments in CSR_COUNTERS order.
        def fire(s):
            return s.valid & s.ready

        ev = dict.fromkeys(CSR_COUNTERS, 0)
        ev["busy_cycles"] = load.busy | store.busy | pas.busy
        ev["macs"] = pas.mac_count
        ev["macs_gated"] = pas.gated_count
        ev["dram_reads"] = fire(self.dram_rd.req)
        ev["dram_writes"] = fire(self.dram_wr)
        ev["glb_reads"] = sum(fire(glb.rd[i].req) for i in range(4))
        ev["glb_writes"] = sum(fire(glb.wr[i]) for i in range(2))
        ev["stall_cycles"] = pas.stall
        ev["pass_cycles"] = pas.busy
        for i, name in enumerate(CSR_COUNTERS):
            if i:
                m.d.comb += ctrl.events[i].eq(ev[name])
        return m
