"""The board's "DRAM": 64-bit words in FPGA block RAM, shared by the accelerator and the host.

The accelerator (``hw.top.Accelerator``) is a DRAM master with an in-order read port
(``hw.layouts.dram_read_signature``) and a write stream (``hw.layouts.dram_write_layout``).
On the board both are served by one ``lib.memory.Memory`` with one synchronous read port and
one write port, so Yosys infers ECP5 DP16KD block RAM (no asynchronous reads). The host
bridge (``fpga.bridge``) gets a second pair of ports with the same signatures. The host has
priority on each memory port: its traffic arrives at UART speed (at most one word per 80 bit
times), so it costs the accelerator one stall cycle per host word, while accelerator
priority could starve the host for a whole STORE and overrun the UART receiver.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.layouts import DRAM_ADDR_BITS, dram_read_signature, dram_write_layout

__all__ = ["BramDram", "RESP_DEPTH"]

#: Words per response FIFO. A read takes 3 cycles from request to the FIFO output, so 3
#: credits keep one word per cycle flowing; 4 leaves a cycle of slack.
RESP_DEPTH = 4


class BramDram(wiring.Component):
    """``2**dram_aw`` x 64-bit block-RAM memory with an accelerator and a host port pair.

    Reads are pipelined: the memory's synchronous read port returns a word the cycle after
    its request, into a per-master response FIFO (``RESP_DEPTH`` words). A request is taken
    only when its response has a FIFO slot reserved, so back-pressure on ``resp`` never
    loses a word, and with ``resp.ready`` high a master reads one word per cycle (3 cycles
    latency). Responses come back in request order.

    Parameters
    ----------
    dram_aw : int
        Address bits of the memory (1..24): ``2**dram_aw`` 64-bit words (``2**dram_aw * 8``
        bytes).

    Ports
    -----
    acc_rd : In(dram_read_signature())
        Accelerator read port (``req``: 32-bit word address; ``resp``: 64-bit words).
    acc_wr : In(stream.Signature(dram_write_layout()))
        Accelerator write beats (32-bit word address, 64-bit data).
    host_rd : In(dram_read_signature())
        Host (bridge) read port; served only in cycles in which the accelerator does not
        issue a read.
    host_wr : In(stream.Signature(dram_write_layout()))
        Host write beats; taken only when the accelerator has no write beat.
    acc_rst : In(1)
        Resets the accelerator side: while high, the accelerator's requests and beats are not
        taken and its queued and in-flight read responses are dropped (use together with the
        accelerator's own reset).
    range_err : Out(1)
        Sticky: a request addressed a word at or above ``2**dram_aw`` (address bits above
        ``dram_aw`` are not ignored, so nothing aliases). Such a read returns 0, such a write
        is dropped.
    range_err_clear : In(1)
        Clears ``range_err``.

    Raises
    ------
    ValueError
        ``dram_aw`` outside 1..24.
    """

    def __init__(self, dram_aw: int):
        if not isinstance(dram_aw, int) or not 1 <= dram_aw <= 24:
            raise ValueError(f"dram_aw must be an int in 1..24 (address bits of 64-bit "
                             f"words), not {dram_aw!r}")
        self.dram_aw = dram_aw
        self.depth = 1 << dram_aw
        super().__init__({
            "acc_rd": In(dram_read_signature()),
            "acc_wr": In(stream.Signature(dram_write_layout())),
            "host_rd": In(dram_read_signature()),
            "host_wr": In(stream.Signature(dram_write_layout())),
            "acc_rst": In(1),
            "range_err": Out(1),
            "range_err_clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self.dram_aw

        m.submodules.mem = mem = Memory(shape=64, depth=self.depth, init=[])
        rd = mem.read_port(domain="sync")
        wr = mem.write_port()

        def in_range(addr):
            return addr[aw:DRAM_ADDR_BITS] == 0

        err_set = Signal()

        # ---- writes: host first, the accelerator when the host has no beat --------------
        acc_w = Signal()
        m.d.comb += [
            self.host_wr.ready.eq(1),
            self.acc_wr.ready.eq(~self.acc_rst & ~self.host_wr.valid),
            acc_w.eq(self.acc_wr.valid & self.acc_wr.ready),
        ]
        w_fire = Signal()
        w_addr = Signal(DRAM_ADDR_BITS)
        w_data = Signal(64)
        with m.If(acc_w):
            m.d.comb += [w_fire.eq(1), w_addr.eq(self.acc_wr.payload.addr),
                         w_data.eq(self.acc_wr.payload.data)]
        with m.Else():
            m.d.comb += [w_fire.eq(self.host_wr.valid), w_addr.eq(self.host_wr.payload.addr),
                         w_data.eq(self.host_wr.payload.data)]
        m.d.comb += [wr.addr.eq(w_addr[:aw]), wr.data.eq(w_data),
                     wr.en.eq(w_fire & in_range(w_addr))]
        with m.If(w_fire & ~in_range(w_addr)):
            m.d.comb += err_set.eq(1)

        # ---- reads: one shared synchronous read port, a response FIFO per master ---------
        # Credits: words requested and not yet taken from the FIFO (in flight + queued).
        m.submodules.acc_q = acc_q = ResetInserter(self.acc_rst)(SyncFIFO(width=64,
                                                                          depth=RESP_DEPTH))
        m.submodules.host_q = host_q = SyncFIFO(width=64, depth=RESP_DEPTH)
        acc_used = Signal(range(RESP_DEPTH + 1))
        host_used = Signal(range(RESP_DEPTH + 1))

        acc_r = Signal()
        host_r = Signal()
        host_wants = Signal()
        m.d.comb += [
            self.host_rd.req.ready.eq(host_used != RESP_DEPTH),
            host_r.eq(self.host_rd.req.valid & self.host_rd.req.ready),
            host_wants.eq(self.host_rd.req.valid & (host_used != RESP_DEPTH)),
            self.acc_rd.req.ready.eq(~self.acc_rst & (acc_used != RESP_DEPTH) & ~host_wants),
            acc_r.eq(self.acc_rd.req.valid & self.acc_rd.req.ready),
        ]
        r_addr = Signal(DRAM_ADDR_BITS)
        m.d.comb += r_addr.eq(Mux(host_r, self.host_rd.req.payload, self.acc_rd.req.payload))
        m.d.comb += [rd.addr.eq(r_addr[:aw]), rd.en.eq(acc_r | host_r)]
        with m.If((acc_r | host_r) & ~in_range(r_addr)):
            m.d.comb += err_set.eq(1)

        # The word is on rd.data the cycle after its request.
        pend_acc = Signal()
        pend_host = Signal()
        pend_zero = Signal()
        m.d.sync += [pend_acc.eq(acc_r), pend_host.eq(host_r),
                     pend_zero.eq(~in_range(r_addr))]
        word = Signal(64)
        m.d.comb += word.eq(Mux(pend_zero, 0, rd.data))
        # A word arriving while acc_rst is high is dropped with the rest of acc_q (its
        # pointers are reset at the same clock edge), and no request is taken under reset.
        m.d.comb += [acc_q.w_data.eq(word), acc_q.w_en.eq(pend_acc),
                     host_q.w_data.eq(word), host_q.w_en.eq(pend_host)]

        m.d.comb += [
            self.acc_rd.resp.payload.eq(acc_q.r_data),
            self.acc_rd.resp.valid.eq(acc_q.r_rdy & ~self.acc_rst),
            acc_q.r_en.eq(self.acc_rd.resp.ready & ~self.acc_rst),
            self.host_rd.resp.payload.eq(host_q.r_data),
            self.host_rd.resp.valid.eq(host_q.r_rdy),
            host_q.r_en.eq(self.host_rd.resp.ready),
        ]
        acc_taken = Signal()
        host_taken = Signal()
        m.d.comb += [acc_taken.eq(self.acc_rd.resp.valid & self.acc_rd.resp.ready),
                     host_taken.eq(self.host_rd.resp.valid & self.host_rd.resp.ready)]
        with m.If(self.acc_rst):
            m.d.sync += acc_used.eq(0)
        with m.Else():
            m.d.sync += acc_used.eq(acc_used + acc_r - acc_taken)
        m.d.sync += host_used.eq(host_used + host_r - host_taken)

        with m.If(self.range_err_clear):
            m.d.sync += self.range_err.eq(0)
        with m.If(err_set):
            m.d.sync += self.range_err.eq(1)
        return m
