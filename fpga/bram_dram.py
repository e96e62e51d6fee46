"""The board's "DRAM": 64-bit words in FPGA block RAM, shared by the accelerator and the host.

The accelerator (``hw.top.Accelerator``) is a DRAM master with an in-order read port
(``hw.layouts.dram_read_signature``) and a write stream (``hw.layouts.dram_write_layout``).
On the board both are served by block RAM with one synchronous read port and one write
port, so Yosys infers ECP5 DP16KD (iCE40 EBR) block RAM (no asynchronous reads).

The 64-bit word is split into ``groups`` byte lanes, each its own ``lib.memory.Memory`` with
its own registered copy of the read and write addresses and enables. At 128 KiB the memory
is 64 DP16KD blocks spread over the whole ECP5-85F; fed from one address net each, those
nets were the most congested of the 8 x 8 board top and stalled nextpnr's router at 4 x 8
(README, "FPGA"). A register per lane lets the placer put each copy next to its eight
blocks, at the cost of one cycle of read latency. The host
bridge (``fpga.bridge``) gets a second pair of ports with the same signatures. The host has
priority on each memory port: its traffic arrives at UART speed (at most one word per 80 bit
times), so it costs the accelerator one stall cycle per host word, while accelerator
priority could starve the host for a whole STORE and overrun the UART receiver.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.layouts import DRAM_ADDR_BITS, dram_read_signature, dram_write_layout

__all__ = ["BramDram", "LANE_KEEP_SCRIPT", "READ_LATENCY", "RESP_DEPTH"]

#: Cycles from a taken read request to its word at the response FIFO's output: the input
#: register, the block RAM's synchronous read, and the FIFO's write-to-read cycle.
READ_LATENCY = 3

#: Words per response FIFO. ``READ_LATENCY + 1`` credits keep one word per cycle flowing
#: (a credit returns the cycle after its word is taken); one more leaves a cycle of slack.
RESP_DEPTH = READ_LATENCY + 2

#: Yosys commands, run after reading the design and before synthesis, that put "keep" on
#: the registers driving the lanes' addresses and enables (Signals ``dram_lane<g>_*``), so
#: that ``opt_merge`` does not fold the per-lane copies back into one register feeding all
#: 64 block RAMs. Amaranth's build template takes it as ``script_after_read``.
LANE_KEEP_SCRIPT = (
    "proc\n"
    "setattr -set keep 1 w:dram_lane*_waddr w:dram_lane*_wen w:dram_lane*_raddr "
    "w:dram_lane*_ren %u %u %u %a %ci1 t:$dff %i\n")


class BramDram(wiring.Component):
    """``2**dram_aw`` x 64-bit block-RAM memory with an accelerator and a host port pair.

    Reads are pipelined: a taken request goes through the lanes' input register and the
    block RAM's synchronous read into a per-master response FIFO (``RESP_DEPTH`` words),
    whose output has the word ``READ_LATENCY`` (3) cycles after the request. A request is
    taken only when its response has a FIFO slot reserved, so back-pressure on ``resp``
    never loses a word, and with ``resp.ready`` high a master reads one word per cycle.
    Responses come back in request order. Writes pass the same input register, so a read
    taken after a write sees it.

    Parameters
    ----------
    dram_aw : int
        Address bits of the memory (1..24): ``2**dram_aw`` 64-bit words (``2**dram_aw * 8``
        bytes).
    groups : int, keyword-only
        Lanes of the 64-bit word (1, 2, 4, ..., 64), each a ``64 // groups``-bit memory with
        its own registered read and write address and enable (default 8: byte lanes, 8
        DP16KD each at ``dram_aw=14``).

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
        ``dram_aw`` outside 1..24, or ``groups`` not a power of two in 1..64.
    """

    def __init__(self, dram_aw: int, *, groups: int = 8):
        if not isinstance(dram_aw, int) or not 1 <= dram_aw <= 24:
            raise ValueError(f"dram_aw must be an int in 1..24 (address bits of 64-bit "
                             f"words), not {dram_aw!r}")
        if not isinstance(groups, int) or groups not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"groups must be a power of two from 1 to 64 (lanes of the "
                             f"64-bit word with their own address register), not {groups!r}")
        self.dram_aw = dram_aw
        self.depth = 1 << dram_aw
        self.groups = groups
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
        lane = 64 // self.groups

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
        with m.If((acc_r | host_r) & ~in_range(r_addr)):
            m.d.comb += err_set.eq(1)

        # ---- the memory lanes, each behind its own input register ------------------------
        # Writes and reads both pass the register, so a read taken after a write still
        # reads the written word; a read taken in the same cycle as a write to its address
        # reads the old word (the read port is not transparent, as before the register).
        # Yosys merges identical registers; the board build marks these (``dram_lane*``)
        # with "keep" before synthesis (``LANE_KEEP_SCRIPT``) so that each lane has its own.
        words = []
        for g in range(self.groups):
            mem = Memory(shape=lane, depth=self.depth, init=[])
            m.submodules[f"mem{g}"] = mem
            wr = mem.write_port()
            rd = mem.read_port(domain="sync")
            # Reset-less: an enable register only ever holds a request of the cycle before.
            wa = Signal(aw, name=f"dram_lane{g}_waddr", reset_less=True)
            we = Signal(name=f"dram_lane{g}_wen", reset_less=True)
            wd = Signal(lane, name=f"dram_lane{g}_wdata", reset_less=True)
            ra = Signal(aw, name=f"dram_lane{g}_raddr", reset_less=True)
            re = Signal(name=f"dram_lane{g}_ren", reset_less=True)
            m.d.sync += [
                wa.eq(w_addr[:aw]), we.eq(w_fire & in_range(w_addr)),
                wd.eq(w_data[g * lane:(g + 1) * lane]),
                ra.eq(r_addr[:aw]), re.eq(acc_r | host_r),
            ]
            m.d.comb += [wr.addr.eq(wa), wr.data.eq(wd), wr.en.eq(we),
                         rd.addr.eq(ra), rd.en.eq(re)]
            words.append(rd.data)

        # The word is on the lanes' read data two cycles after its request. Requests in
        # flight for the accelerator are dropped by acc_rst.
        pend_acc = Signal(2)
        pend_host = Signal(2)
        pend_zero = Signal(2)
        m.d.sync += [pend_acc.eq(Cat(acc_r, pend_acc[0])), pend_host.eq(Cat(host_r, pend_host[0])),
                     pend_zero.eq(Cat(~in_range(r_addr), pend_zero[0]))]
        with m.If(self.acc_rst):
            m.d.sync += pend_acc.eq(0)
        word = Signal(64)
        m.d.comb += word.eq(Mux(pend_zero[1], 0, Cat(*words)))
        # A word arriving while acc_rst is high is dropped with the rest of acc_q (its
        # pointers are reset at the same clock edge), and no request is taken under reset.
        m.d.comb += [acc_q.w_data.eq(word), acc_q.w_en.eq(pend_acc[1]),
                     host_q.w_data.eq(word), host_q.w_en.eq(pend_host[1])]

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
