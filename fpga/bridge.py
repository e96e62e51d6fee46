"""UART host bridge: executes the byte protocol of ``fpga.protocol`` on the board.

Bytes come from ``fpga.uart.UARTRx`` and go to ``fpga.uart.UARTTx``; the bridge is the master
of the accelerator's CSR port (``hw.controller.CsrSignature``) and of the host ports of the
block-RAM DRAM (``fpga.bram_dram.BramDram``). One command is executed at a time, exactly as
the host sends them (no pipelining).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.controller import CsrSignature
from hw.layouts import DRAM_ADDR_BITS, dram_read_signature, dram_write_layout

from .protocol import (PING_MAGIC, PROTOCOL_VERSION, RESET_PULSE_CYCLES, STATUS_BAD_OPCODE,
                       STATUS_OK, STATUS_RANGE, Op)

__all__ = ["UARTBridge", "ping_info"]


def ping_info(dram_aw: int, clk_freq_hz) -> bytes:
    """The 8 info bytes of the ``PING`` reply: ``b"ACG"``, ``PROTOCOL_VERSION``, ``dram_aw``,
    the clock in kHz (rounded) as 3 little-endian bytes."""
    khz = round(clk_freq_hz / 1000)
    return PING_MAGIC + bytes([PROTOCOL_VERSION, dram_aw]) + khz.to_bytes(3, "little")


class UARTBridge(wiring.Component):
    """Byte-protocol engine of the host link (``fpga.protocol``).

    Commands (opcode byte, then little-endian fields; every reply ends with a status byte):
    ``PING`` (8 info bytes, :func:`ping_info`), ``CSR_WRITE`` addr(1) data(8), ``CSR_READ``
    addr(1) -> data(8), ``MEM_WRITE`` addr(4) count-1(2) data(8 x count), ``MEM_READ``
    addr(4) count-1(2) -> data(8 x count), ``RESET`` (``core_rst`` pulse of
    ``RESET_PULSE_CYCLES`` cycles; the status byte follows the pulse). An unknown opcode is
    answered with ``STATUS_BAD_OPCODE`` alone.

    ``MEM_*`` words at word addresses ``>= 2**dram_aw`` (computed without wrap-around, so
    ``addr + i`` past 2**32 is out of range too) are not sent to the memory: such a write is
    dropped, such a read returns 0, and the status is ``STATUS_RANGE``; every byte of the
    frame is still transferred. ``MEM_WRITE`` data are double-buffered (one word assembling
    while the previous one waits for the memory), and the status byte is sent once the last
    write has been taken. ``MEM_READ`` streams: one word is read, sent, then the next one.

    Inter-byte timeout: while a frame is incomplete, a cycle in which no byte is offered on
    ``rx`` counts; after ``rx_timeout`` such consecutive cycles the partial frame is dropped
    (no reply) and the bridge waits for a new opcode.

    Parameters
    ----------
    dram_aw : int
        Address bits of the board DRAM (64-bit words), 1..32; reported by ``PING``.
    clk_freq_hz : int or float
        Core clock (Hz), reported by ``PING`` in kHz (must be below 2**24 kHz).
    rx_timeout : int
        Inter-byte timeout (clock cycles, >= 1).

    Ports
    -----
    rx : In(stream.Signature(8))
        Received bytes (from ``UARTRx.o``).
    tx : Out(stream.Signature(8))
        Bytes to send (to ``UARTTx.i``).
    csr : Out(CsrSignature)
        CSR master: 8-bit register address, 64-bit data; ``rdata`` is taken the cycle after
        ``re``.
    mem_rd : Out(dram_read_signature())
        Memory read master (32-bit word addresses, 64-bit words in order).
    mem_wr : Out(stream.Signature(dram_write_layout()))
        Memory write master.
    core_rst : Out(1)
        Accelerator reset, high for ``RESET_PULSE_CYCLES`` cycles per ``RESET``.

    Raises
    ------
    ValueError
        ``dram_aw`` outside 1..32, a clock that does not fit the 3 kHz bytes, or
        ``rx_timeout < 1``.
    """

    def __init__(self, dram_aw: int, clk_freq_hz, rx_timeout: int):
        if not isinstance(dram_aw, int) or not 1 <= dram_aw <= DRAM_ADDR_BITS:
            raise ValueError(f"dram_aw must be an int in 1..{DRAM_ADDR_BITS}, not {dram_aw!r}")
        khz = round(clk_freq_hz / 1000)
        if not 0 < khz < 1 << 24:
            raise ValueError(f"clk_freq_hz must be in 500 Hz .. 16.7 GHz (PING reports it in "
                             f"kHz in 3 bytes), not {clk_freq_hz!r}")
        if not isinstance(rx_timeout, int) or rx_timeout < 1:
            raise ValueError(f"rx_timeout must be an int >= 1 (clock cycles), "
                             f"not {rx_timeout!r}")
        self.dram_aw = dram_aw
        self.clk_freq_hz = clk_freq_hz
        self.rx_timeout = rx_timeout
        self.info = ping_info(dram_aw, clk_freq_hz)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "csr": Out(CsrSignature),
            "mem_rd": Out(dram_read_signature()),
            "mem_wr": Out(stream.Signature(dram_write_layout())),
            "core_rst": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self.dram_aw

        opcode = Signal(8)
        ibuf = Signal(72)                      # received bytes shift in at the top
        need = Signal(range(10))               # header bytes still to receive
        obuf = Signal(64)                      # word being sent, LSB byte first
        idx = Signal(range(8))                 # byte index within info / word
        status = Signal(8)
        cur_addr = Signal(DRAM_ADDR_BITS + 1)  # word address of the current MEM_* word
        words_left = Signal(16)                # words after the current one
        range_bad = Signal()
        rst_cnt = Signal(range(RESET_PULSE_CYCLES))
        tmo = Signal(range(self.rx_timeout + 1))

        rx, tx = self.rx, self.tx
        rx_fire = Signal()
        m.d.comb += rx_fire.eq(rx.valid & rx.ready)
        shifted = Signal(72)
        m.d.comb += shifted.eq(Cat(ibuf[8:], rx.payload))
        with m.If(rx_fire):
            m.d.sync += ibuf.eq(shifted)

        cur_in_range = Signal()
        m.d.comb += cur_in_range.eq(cur_addr[aw:] == 0)

        # MEM_WRITE: one word may wait for the memory while the next one assembles.
        wr_valid = Signal()
        wr_addr = Signal(DRAM_ADDR_BITS)
        wr_data = Signal(64)
        m.d.comb += [self.mem_wr.valid.eq(wr_valid), self.mem_wr.payload.addr.eq(wr_addr),
                     self.mem_wr.payload.data.eq(wr_data)]
        with m.If(self.mem_wr.ready):
            m.d.sync += wr_valid.eq(0)

        # CSR port: CSR_WRITE has addr at ibuf[0:8] (9 bytes), CSR_READ at ibuf[64:72].
        m.d.comb += [self.csr.addr.eq(Mux(opcode == Op.CSR_READ, ibuf[64:72], ibuf[0:8])),
                     self.csr.wdata.eq(ibuf[8:72])]
        m.d.comb += self.mem_rd.req.payload.eq(cur_addr[:DRAM_ADDR_BITS])

        def frame_timeout():
            # Counted in states that wait for more bytes of a frame.
            with m.If(rx.valid):
                m.d.sync += tmo.eq(0)
            with m.Elif(tmo == self.rx_timeout - 1):
                m.d.sync += tmo.eq(0)
                m.next = "IDLE"
            with m.Else():
                m.d.sync += tmo.eq(tmo + 1)

        with m.FSM(name="bridge"):
            with m.State("IDLE"):
                # A MEM_WRITE word left by a timed-out frame is written before anything else.
                m.d.comb += rx.ready.eq(~wr_valid)
                m.d.sync += [tmo.eq(0), idx.eq(0), range_bad.eq(0)]
                with m.If(rx_fire):
                    m.d.sync += opcode.eq(rx.payload)
                    with m.Switch(rx.payload):
                        with m.Case(Op.PING):
                            m.next = "PING"
                        with m.Case(Op.CSR_WRITE):
                            m.d.sync += need.eq(9)
                            m.next = "RECV"
                        with m.Case(Op.CSR_READ):
                            m.d.sync += need.eq(1)
                            m.next = "RECV"
                        with m.Case(Op.MEM_WRITE, Op.MEM_READ):
                            m.d.sync += need.eq(6)
                            m.next = "RECV"
                        with m.Case(Op.RESET):
                            m.d.sync += rst_cnt.eq(RESET_PULSE_CYCLES - 1)
                            m.next = "RESET"
                        with m.Default():
                            m.d.sync += status.eq(STATUS_BAD_OPCODE)
                            m.next = "STATUS"

            with m.State("RECV"):
                m.d.comb += rx.ready.eq(1)
                frame_timeout()
                with m.If(rx.valid):
                    m.d.sync += need.eq(need - 1)
                    with m.If(need == 1):
                        # Header complete: fields are in the top bytes of `shifted`.
                        m.d.sync += [cur_addr.eq(shifted[24:56]), words_left.eq(shifted[56:72])]
                        with m.Switch(opcode):
                            with m.Case(Op.CSR_WRITE):
                                m.next = "CSR_WRITE"
                            with m.Case(Op.CSR_READ):
                                m.next = "CSR_READ"
                            with m.Case(Op.MEM_WRITE):
                                m.next = "MW_DATA"
                            with m.Default():
                                m.next = "MR_REQ"

            with m.State("CSR_WRITE"):
                m.d.comb += self.csr.we.eq(1)
                m.d.sync += status.eq(STATUS_OK)
                m.next = "STATUS"

            with m.State("CSR_READ"):
                m.d.comb += self.csr.re.eq(1)
                m.next = "CSR_RDATA"

            with m.State("CSR_RDATA"):
                m.d.sync += [obuf.eq(self.csr.rdata), idx.eq(0)]
                m.next = "SEND"

            with m.State("PING"):
                info = self.info
                m.d.comb += tx.valid.eq(1)
                with m.Switch(idx):
                    for i, b in enumerate(info):
                        with m.Case(i):
                            m.d.comb += tx.payload.eq(b)
                with m.If(tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == len(info) - 1):
                        m.d.sync += status.eq(STATUS_OK)
                        m.next = "STATUS"

            with m.State("MW_DATA"):
                # The 8th byte of a word is taken only when the write buffer is free.
                m.d.comb += rx.ready.eq((idx != 7) | ~wr_valid)
                frame_timeout()
                with m.If(rx_fire):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 7):
                        with m.If(cur_in_range):
                            m.d.sync += [wr_valid.eq(1), wr_addr.eq(cur_addr),
                                         wr_data.eq(shifted[8:72])]
                        with m.Else():
                            m.d.sync += range_bad.eq(1)
                        m.d.sync += [cur_addr.eq(cur_addr + 1), words_left.eq(words_left - 1)]
                        with m.If(words_left == 0):
                            m.next = "MW_DRAIN"

            with m.State("MW_DRAIN"):
                with m.If(~wr_valid):
                    m.d.sync += status.eq(Mux(range_bad, STATUS_RANGE, STATUS_OK))
                    m.next = "STATUS"

            with m.State("MR_REQ"):
                m.d.sync += idx.eq(0)
                with m.If(cur_in_range):
                    m.d.comb += self.mem_rd.req.valid.eq(1)
                    with m.If(self.mem_rd.req.ready):
                        m.next = "MR_RESP"
                with m.Else():
                    m.d.sync += [obuf.eq(0), range_bad.eq(1)]
                    m.next = "SEND"

            with m.State("MR_RESP"):
                m.d.comb += self.mem_rd.resp.ready.eq(1)
                with m.If(self.mem_rd.resp.valid):
                    m.d.sync += obuf.eq(self.mem_rd.resp.payload)
                    m.next = "SEND"

            with m.State("SEND"):
                # 8 bytes of obuf; then the next MEM_READ word, or the status byte.
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(obuf[:8])]
                with m.If(tx.ready):
                    m.d.sync += [obuf.eq(obuf[8:]), idx.eq(idx + 1)]
                    with m.If(idx == 7):
                        with m.If(opcode == Op.MEM_READ):
                            with m.If(words_left == 0):
                                m.d.sync += status.eq(Mux(range_bad, STATUS_RANGE, STATUS_OK))
                                m.next = "STATUS"
                            with m.Else():
                                m.d.sync += [cur_addr.eq(cur_addr + 1),
                                             words_left.eq(words_left - 1)]
                                m.next = "MR_REQ"
                        with m.Else():
                            m.d.sync += status.eq(STATUS_OK)
                            m.next = "STATUS"

            with m.State("RESET"):
                m.d.comb += self.core_rst.eq(1)
                m.d.sync += rst_cnt.eq(rst_cnt - 1)
                with m.If(rst_cnt == 0):
                    m.d.sync += status.eq(STATUS_OK)
                    m.next = "STATUS"

            with m.State("STATUS"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(status)]
                with m.If(tx.ready):
                    m.next = "IDLE"
        return m
