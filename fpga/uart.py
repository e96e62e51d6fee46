"""UART 8N1 receiver and transmitter for the board's host link (``fpga.protocol``).

One start bit (0), eight data bits least significant first, one stop bit (1); the line idles
high. ``divisor`` is the number of clock cycles per bit (``round(clk_freq_hz / baud)``); any
``divisor >= 4`` works (the receiver samples each bit in its middle, so it tolerates the
+-2 % baud mismatch that ``fpga.core.BoardCore`` allows).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "MIN_DIVISOR"]

#: Smallest supported number of clock cycles per bit.
MIN_DIVISOR = 4


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an int (clock cycles per bit), not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be >= {MIN_DIVISOR} clock cycles per bit, "
                         f"not {divisor}")
    return divisor


class UARTRx(wiring.Component):
    """UART 8N1 receiver.

    The ``rx`` pin passes through a 2-flop synchronizer. A falling edge (line seen high, then
    low) starts a character; the start bit is re-checked in its middle (a shorter glitch is
    ignored) and every following bit is sampled ``divisor`` cycles later, i.e. in its middle.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 4.

    Ports
    -----
    rx : In(1), init 1
        Serial input pin (asynchronous; idles high).
    o : Out(stream.Signature(8))
        Received bytes. A byte is offered from the middle of its stop bit until taken. If a
        following byte completes while the previous one has not been taken, the held byte is
        kept, the new byte is dropped and ``overrun`` is set.
    framing_error : Out(1)
        Sticky: a stop bit was 0. The character is dropped and the receiver waits for the line
        to return high (a break) before it looks for the next start bit.
    overrun : Out(1)
        Sticky: a byte was dropped because ``o`` was not ready (see above).
    clear : In(1)
        Clears ``framing_error`` and ``overrun``.

    Raises
    ------
    ValueError
        ``divisor < 4``.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor

        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)

        timer = Signal(range(div))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.clear):
            m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM(name="rx"):
            with m.State("WAIT_IDLE"):      # the line must be high before a start bit counts
                with m.If(rx):
                    m.next = "IDLE"
            with m.State("IDLE"):
                with m.If(~rx):
                    # Middle of the start bit: div // 2 cycles after the falling edge.
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"         # glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "WAIT_IDLE"
        return m


class UARTTx(wiring.Component):
    """UART 8N1 transmitter.

    A byte taken from ``i`` goes out as start bit, 8 data bits (LSB first) and stop bit,
    each ``divisor`` cycles long; ``tx`` is a register output. The next byte is taken in the
    last cycle of the stop bit, so back-to-back bytes leave with no idle time between them
    (one character = ``10 * divisor`` cycles).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 4.

    Ports
    -----
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1), init 1
        Serial output pin (idles high).
    busy : Out(1)
        A character is being sent.

    Raises
    ------
    ValueError
        ``divisor < 4``.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor

        timer = Signal(range(div))
        bits_left = Signal(range(10))     # bits still to send after the current one
        shreg = Signal(9)                 # data bits and stop bit still to send
        active = Signal()

        last_cycle = Signal()
        m.d.comb += [last_cycle.eq(active & (timer == 0) & (bits_left == 0)),
                     self.i.ready.eq(~active | last_cycle),
                     self.busy.eq(active)]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, Const(1, 1))),
                         timer.eq(div - 1), bits_left.eq(9), active.eq(1)]
        with m.Elif(active):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(bits_left != 0):
                m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:]), timer.eq(div - 1),
                             bits_left.eq(bits_left - 1)]
            with m.Else():
                m.d.sync += [active.eq(0), self.tx.eq(1)]
        return m
