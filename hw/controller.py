"""Controller: executes the command list that the driver placed in DRAM.

The host writes the command list's DRAM address to ``CSR.CMD_ADDR`` and sets ``CTRL.start``;
the controller then fetches 64-bit command words in order and dispatches them to the engines
(LOAD, STORE, PASS) and to the PE array's role registers, so whole layers and whole networks
run with no host action per word (DESIGN.md section 5). Engines run concurrently: a command
waits only for the engines named in its header's ``wait`` mask (and, for RUN, for its own
engine), so the driver overlaps DRAM transfers with compute by double-buffering GLB regions.

Command format (``hw.layouts.CMD_HEADER``): a header word, then ``n_words`` payload words.

- ``RUN engine``: the payload is the engine's descriptor, LSB-first; then the engine starts.
- ``ROLES``: each payload word is a ``pe_role_layout`` word for the PE array.
- ``END``: waits until every engine is idle, then sets ``STATUS.done``.
- ``NOP``: skips its payload words.

An engine error (malformed RLC stream, GLB address out of range, bad PE role, bad opcode)
stops dispatching and sets ``STATUS.error`` with the first ``ErrorCode``; ``busy`` drops once
the running engines are idle, so a bad stream never hangs the host.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .layouts import (CMD_HEADER, CSR, CSR_COUNTERS, DRAM_ADDR_BITS, HW_MAGIC, Engine,
                      ErrorCode, Opcode, dram_read_signature, pe_role_layout)

__all__ = ["CsrSignature", "Controller", "DramReadArbiter", "hw_config_words"]

#: Host CSR port: ``addr`` selects a 64-bit register; ``rdata`` is valid the cycle after
#: ``re``; a write takes effect at the clock edge where ``we`` is high.
CsrSignature = wiring.Signature({
    "addr": Out(8), "wdata": Out(64), "we": Out(1), "re": Out(1), "rdata": In(64),
})


def hw_config_words(config: AcceleratorConfig) -> tuple[int, int, int]:
    """Values of the HW_CONFIG0..2 ID registers (layout in ``hw.layouts.CSR``)."""
    flags = int(config.rlc) | int(config.relu) << 1 | int(config.zero_gating) << 2
    w0 = (config.pe_rows | config.pe_cols << 8 | config.data_width << 16
          | config.psum_width << 24 | flags << 32)
    w1 = config.filter_spad_depth | config.ifmap_spad_depth << 16 | config.psum_spad_depth << 32
    w2 = config.glb_bank_words | config.glb_banks << 32
    return w0, w1, w2


class DramReadArbiter(wiring.Component):
    """Shares one DRAM read port between ``n`` masters; responses return to the master that
    issued the request (in order), tracked by a FIFO of master IDs. Master 0 has priority.

    Ports: ``m[i]: In(dram_read_signature())`` (master side flipped), ``dram:
    Out(dram_read_signature())``. Up to ``max_outstanding`` requests are in flight.
    """

    def __init__(self, n: int, max_outstanding: int = 32):
        self._n = n
        self._depth = max_outstanding
        super().__init__({"m": In(dram_read_signature()).array(n),
                          "dram": Out(dram_read_signature())})

    def elaborate(self, platform):
        m = Module()
        n = self._n
        m.submodules.ids = ids = SyncFIFOBuffered(width=max(1, (n - 1).bit_length()),
                                                  depth=self._depth)
        # Request side: fixed priority, only while the ID FIFO has room.
        grant = Signal(range(n))
        any_req = Signal()
        for i in reversed(range(n)):
            with m.If(self.m[i].req.valid):
                m.d.comb += [grant.eq(i), any_req.eq(1)]
        m.d.comb += [
            self.dram.req.valid.eq(any_req & ids.w_rdy),
            ids.w_data.eq(grant),
            ids.w_en.eq(self.dram.req.valid & self.dram.req.ready),
        ]
        with m.Switch(grant):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [self.dram.req.payload.eq(self.m[i].req.payload),
                                 self.m[i].req.ready.eq(self.dram.req.ready & ids.w_rdy)]
        # Response side: route to the master at the head of the ID FIFO.
        for i in range(n):
            m.d.comb += self.m[i].resp.payload.eq(self.dram.resp.payload)
        with m.If(ids.r_rdy):
            with m.Switch(ids.r_data):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [self.m[i].resp.valid.eq(self.dram.resp.valid),
                                     self.dram.resp.ready.eq(self.m[i].resp.ready)]
        m.d.comb += ids.r_en.eq(self.dram.resp.valid & self.dram.resp.ready)
        return m


class Controller(wiring.Component):
    """Command fetch and dispatch, CSRs and 64-bit performance counters.

    Ports
    -----
    csr : In(CsrSignature)
        Host register port (map in ``hw.layouts.CSR``).
    dram : Out(dram_read_signature())
        Command fetch (shared with the LOAD engine through :class:`DramReadArbiter`).
    desc_wr : Out(...)
        ``engine``, ``index`` (word index), ``data`` and ``en``: writes descriptor words into
        the engines' descriptor registers (owned by the top).
    engine_start : Out(3)
        One start pulse per engine (bit = ``Engine`` value).
    engine_busy : In(3)
        Busy flag per engine.
    role_wr : Out(stream.Signature(pe_role_layout()))
        ROLES payload words to the PE array.
    error_in : In(8)
        Error code raised by an engine this cycle (0 = none); the first one is kept.
    events : In(len(CSR_COUNTERS) x 16 bits)
        Per-cycle increments of the performance counters except ``cycles``, counted in the
        cycles the controller is running (added one cycle later, from registers).
    run_start : Out(1)
        Pulses when the host starts a run (clears the engines' sticky error flags).
    busy, done, error : Out(1)
    """

    def __init__(self, config: AcceleratorConfig, *, fetch_depth: int = 16):
        self._config = config
        self._fetch_depth = fetch_depth
        self.n_events = len(CSR_COUNTERS)
        super().__init__({
            "csr": In(CsrSignature),
            "dram": Out(dram_read_signature()),
            "desc_wr": Out(wiring.Signature({
                "engine": Out(Engine), "index": Out(8), "data": Out(64), "en": Out(1)})),
            "engine_start": Out(3),
            "engine_busy": In(3),
            "role_wr": Out(stream.Signature(pe_role_layout())),
            "error_in": In(8),
            "events": In(data.ArrayLayout(16, len(CSR_COUNTERS))),
            "run_start": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config

        cmd_addr = Signal(DRAM_ADDR_BITS)
        fetch_ptr = Signal(DRAM_ADDR_BITS)   # next DRAM word to request
        exec_ptr = Signal(DRAM_ADDR_BITS)    # DRAM word address of the next word to execute
        running = Signal()                   # dispatching commands
        fetching = Signal()
        done = Signal()
        err_code = Signal(8)
        start = Signal()
        clear = Signal()

        # ---- command prefetch: FIFO + outstanding-request credit -------------------------
        m.submodules.cmdq = cmdq = SyncFIFOBuffered(width=64, depth=self._fetch_depth)
        outstanding = Signal(range(self._fetch_depth + 1))
        dropping = Signal(range(self._fetch_depth + 1))  # responses still to discard
        req_fire = Signal()
        resp_fire = Signal()
        m.d.comb += [
            self.dram.req.payload.eq(fetch_ptr),
            self.dram.req.valid.eq(fetching &
                                   (cmdq.level + outstanding < self._fetch_depth)),
            req_fire.eq(self.dram.req.valid & self.dram.req.ready),
            self.dram.resp.ready.eq((dropping != 0) | cmdq.w_rdy),
            resp_fire.eq(self.dram.resp.valid & self.dram.resp.ready),
            cmdq.w_data.eq(self.dram.resp.payload),
            cmdq.w_en.eq(resp_fire & (dropping == 0)),
        ]
        with m.If(req_fire):
            m.d.sync += fetch_ptr.eq(fetch_ptr + 1)
        m.d.sync += outstanding.eq(outstanding + req_fire - resp_fire)
        with m.If(resp_fire & (dropping != 0)):
            m.d.sync += dropping.eq(dropping - 1)

        # ---- dispatcher -----------------------------------------------------------------
        header = Signal(CMD_HEADER)
        remaining = Signal(16)
        index = Signal(8)
        all_busy = self.engine_busy
        wait_busy = Signal()
        m.d.comb += wait_busy.eq((all_busy & header.wait.as_value()).any())
        target_busy = Signal()
        with m.Switch(header.engine):
            for e in Engine:
                with m.Case(e):
                    m.d.comb += target_busy.eq(all_busy[e.value])

        word = cmdq.r_data
        m.d.comb += [self.role_wr.payload.eq(word),
                     self.desc_wr.engine.eq(header.engine),
                     self.desc_wr.index.eq(index),
                     self.desc_wr.data.eq(word)]

        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [fetch_ptr.eq(cmd_addr), exec_ptr.eq(cmd_addr),
                                 fetching.eq(1), running.eq(1), done.eq(0), err_code.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(err_code != 0):
                    m.next = "STOP"
                with m.Elif(cmdq.r_rdy):
                    m.d.comb += cmdq.r_en.eq(1)
                    m.d.sync += [header.eq(word),
                                 remaining.eq(data.View(CMD_HEADER, word[:CMD_HEADER.size]).n_words),
                                 index.eq(0), exec_ptr.eq(exec_ptr + 1)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(err_code != 0):
                    m.next = "STOP"
                with m.Else():
                    with m.Switch(header.opcode):
                        with m.Case(Opcode.RUN):
                            with m.If(~wait_busy & ~target_busy):
                                m.next = "PAYLOAD"
                        with m.Case(Opcode.ROLES, Opcode.NOP):
                            with m.If(~wait_busy):
                                m.next = "PAYLOAD"
                        with m.Case(Opcode.END):
                            with m.If(all_busy == 0):
                                m.next = "STOP"
                        with m.Default():
                            m.d.sync += err_code.eq(ErrorCode.BAD_OPCODE)
                            m.next = "STOP"
            with m.State("PAYLOAD"):
                with m.If(err_code != 0):
                    m.next = "STOP"
                with m.Elif(remaining == 0):
                    with m.If(header.opcode == Opcode.RUN):
                        m.d.comb += self.engine_start.eq(1 << header.engine.as_value())
                    m.next = "HEADER"
                with m.Elif(cmdq.r_rdy):
                    with m.Switch(header.opcode):
                        with m.Case(Opcode.RUN):
                            m.d.comb += [self.desc_wr.en.eq(1), cmdq.r_en.eq(1)]
                        with m.Case(Opcode.ROLES):
                            m.d.comb += [self.role_wr.valid.eq(1),
                                         cmdq.r_en.eq(self.role_wr.ready)]
                        with m.Default():
                            m.d.comb += cmdq.r_en.eq(1)
                    with m.If(cmdq.r_en):
                        m.d.sync += [remaining.eq(remaining - 1), index.eq(index + 1),
                                     exec_ptr.eq(exec_ptr + 1)]
            with m.State("STOP"):
                # Stop fetching, empty the prefetch FIFO, wait for the engines to finish.
                # Responses still in flight when we leave are counted in `dropping` and
                # discarded, so they never reach the FIFO of the next run.
                m.d.sync += fetching.eq(0)
                m.d.comb += cmdq.r_en.eq(cmdq.r_rdy)
                with m.If(~fetching & (all_busy == 0) & (cmdq.level == 0) & ~resp_fire):
                    m.d.sync += [running.eq(0), done.eq(1), dropping.eq(outstanding)]
                    m.next = "IDLE"

        with m.If(self.error_in != 0):
            with m.If(err_code == 0):
                m.d.sync += err_code.eq(self.error_in)

        m.d.comb += [self.busy.eq(running), self.done.eq(done), self.error.eq(err_code != 0),
                     self.run_start.eq(start)]

        # ---- performance counters -------------------------------------------------------
        # The event increments are registered first (with the cycle's ``running``), so the
        # adders start from flops: the events come from all over the design (the GLB ports'
        # handshakes, the PE array's sums).
        counters = [Signal(64, name=f"ctr_{n}") for n in CSR_COUNTERS]
        events_r = Signal.like(self.events, name="events_r")
        running_r = Signal(name="running_r")
        m.d.sync += [events_r.eq(self.events), running_r.eq(running)]
        with m.If(start):
            m.d.sync += [c.eq(0) for c in counters]
        with m.Else():
            with m.If(running):
                m.d.sync += counters[0].eq(counters[0] + 1)
            with m.If(running_r):
                for i in range(1, len(CSR_COUNTERS)):
                    m.d.sync += counters[i].eq(counters[i] + events_r[i])

        # ---- CSRs -----------------------------------------------------------------------
        w0, w1, w2 = hw_config_words(cfg)
        csr = self.csr
        m.d.comb += start.eq(csr.we & (csr.addr == CSR.CTRL) & csr.wdata[0] & ~running)
        m.d.comb += clear.eq(csr.we & (csr.addr == CSR.CTRL) & csr.wdata[1] & ~running)
        with m.If(clear):
            m.d.sync += [done.eq(0), err_code.eq(0)]
        with m.If(csr.we & (csr.addr == CSR.CMD_ADDR) & ~running):
            m.d.sync += cmd_addr.eq(csr.wdata)
        with m.If(csr.re):
            with m.Switch(csr.addr):
                with m.Case(CSR.STATUS):
                    m.d.sync += csr.rdata.eq(Cat(running, done, err_code != 0))
                with m.Case(CSR.ERROR):
                    m.d.sync += csr.rdata.eq(err_code)
                with m.Case(CSR.CMD_ADDR):
                    m.d.sync += csr.rdata.eq(cmd_addr)
                with m.Case(CSR.MAGIC):
                    m.d.sync += csr.rdata.eq(HW_MAGIC)
                with m.Case(CSR.HW_CONFIG0):
                    m.d.sync += csr.rdata.eq(w0)
                with m.Case(CSR.HW_CONFIG1):
                    m.d.sync += csr.rdata.eq(w1)
                with m.Case(CSR.HW_CONFIG2):
                    m.d.sync += csr.rdata.eq(w2)
                with m.Case(CSR.CMD_PTR):
                    m.d.sync += csr.rdata.eq(exec_ptr)
                for i, c in enumerate(counters):
                    with m.Case(CSR.COUNTERS + i):
                        m.d.sync += csr.rdata.eq(c)
                with m.Default():
                    m.d.sync += csr.rdata.eq(0)
        return m
