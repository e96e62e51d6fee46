"""Board-independent FPGA core: the accelerator, its block-RAM DRAM and the UART host bridge.

::

    uart_rx -> UARTRx -> UARTBridge -> UARTTx -> uart_tx
                           |  csr          |  host_rd / host_wr
                           v               v
                        Accelerator <-> BramDram (acc_rd / acc_wr; host first)

A board top (``amaranth-boards`` platform) only adds the clock, the UART pins and the LEDs.
The host side of the link is ``sw_driver`` over the protocol of ``fpga.protocol``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.layouts import DRAM_ADDR_BITS, dram_write_layout
from hw.skid import SkidBuffer
from hw.top import Accelerator

from .bram_dram import BramDram
from .bridge import UARTBridge
from .protocol import DEFAULT_BAUD
from .uart import MIN_DIVISOR, UARTRx, UARTTx

__all__ = ["BoardCore", "uart_divisor", "MAX_BAUD_ERROR"]

#: Largest accepted relative error between the requested and the generated baud rate.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_freq_hz, baud) -> int:
    """Clock cycles per UART bit, ``round(clk_freq_hz / baud)``.

    Raises
    ------
    ValueError
        The divisor is below 4, or the generated rate ``clk_freq_hz / divisor`` is off
        ``baud`` by more than 2 %.
    """
    if clk_freq_hz <= 0 or baud <= 0:
        raise ValueError(f"clk_freq_hz and baud must be positive, not {clk_freq_hz!r}, "
                         f"{baud!r}")
    divisor = round(clk_freq_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"a {clk_freq_hz / 1e6:g} MHz clock is too slow for {baud} baud: "
                         f"the UART needs at least {MIN_DIVISOR} clock cycles per bit "
                         f"(clk_freq_hz >= {MIN_DIVISOR} * baud), got {clk_freq_hz / baud:.3g}")
    actual = clk_freq_hz / divisor
    error = abs(actual - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud cannot be generated from a {clk_freq_hz / 1e6:g} MHz "
                         f"clock: divisor {divisor} gives {actual:.0f} baud "
                         f"({error:.1%} off, more than {MAX_BAUD_ERROR:.0%})")
    return divisor


class BoardCore(wiring.Component):
    """Accelerator, ``2**dram_aw``-word block-RAM DRAM and UART host bridge for an FPGA board.

    Parameters
    ----------
    config : AcceleratorConfig
        Accelerator configuration (e.g. ``hw.config.preset("fpga")``).
    clk_freq_hz : int or float, keyword-only
        Frequency of the ``sync`` clock (Hz).
    baud : int, keyword-only
        UART rate (bits per second), default ``fpga.protocol.DEFAULT_BAUD`` (1 Mbaud).
    dram_aw : int, keyword-only
        Board DRAM size: ``2**dram_aw`` 64-bit words (default 14: 128 KiB, 64 DP16KD blocks).
    rx_timeout : int or None, keyword-only
        Inter-byte timeout of the bridge (clock cycles); default about 20 ms.
    reset_buffer : callable or None, keyword-only
        ``reset_buffer(m, rst) -> Value``: puts the accelerator's registered reset (one
        bit, fan-out about 21,000 flip-flops at 8 x 8) on a dedicated low-skew net and
        returns that net, e.g. an ECP5 ``DCCA`` onto a primary clock network, which also
        reaches the slices' LSR inputs (Lattice TN1263, ECP5 sysCLOCK). nextpnr promotes
        only clocks by itself, so without it the reset is routed through the general
        fabric to every slice. ``None`` (simulation, iCE40): the register drives it directly.

    Ports
    -----
    rst : In(1)
        Synchronous reset of the whole core, in addition to the ``sync`` domain's own (a
        board top with a reset-less ``sync`` domain drives it; 0 in simulation). The
        accelerator's reset is a single flip-flop, ``rst`` or the bridge's ``RESET``
        registered, so that its fan-out (about 23,000 flip-flops at 8 x 8) starts at a
        flop: with the domain reset ORed in by a LUT, that net was a 20.5 ns path of
        the first 8 x 8 board top that routed.
    uart_rx : In(1), init 1
        UART input pin (8N1, asynchronous, idles high).
    uart_tx : Out(1), init 1
        UART output pin (idles high).
    leds : Out(8)
        Status LEDs (active high):

        ===  ==========================================================================
        bit  meaning
        ===  ==========================================================================
        0    accelerator busy (``CSR.STATUS`` bit 0: running a command list)
        1    accelerator done (``CSR.STATUS`` bit 1: the last command list ended)
        2    accelerator error (``CSR.STATUS`` bit 2; the code is in ``CSR.ERROR``)
        3    heartbeat: toggles about 3 times a second (1.5 Hz blink) while clocked
        4    UART rx activity: a byte was received in the last ~20 ms
        5    UART tx activity: a byte was sent in the last ~20 ms
        6    DRAM range error (sticky): the accelerator addressed a word at or above
             ``2**dram_aw``; cleared by the protocol's ``RESET``
        7    reserved, 0
        ===  ==========================================================================

    Attributes
    ----------
    accelerator, dram, bridge, uart_rx_core, uart_tx_core
        The submodules (for tests).
    divisor : int
        Clock cycles per UART bit.

    ``RESET`` (``fpga.protocol``) pulses the reset of the accelerator (a ``ResetInserter``
    on its ``sync`` domain) and of the accelerator side of the DRAM's read-response path, so
    responses in flight are dropped; DRAM contents, the bridge and the UART are kept.

    Raises
    ------
    ValueError
        The baud rate cannot be generated within 2 % with at least 4 cycles per bit
        (:func:`uart_divisor`), ``dram_aw`` outside 1..24, or ``rx_timeout`` below two
        UART characters (``20 * divisor`` cycles).
    """

    def __init__(self, config: AcceleratorConfig, *, clk_freq_hz, baud=DEFAULT_BAUD,
                 dram_aw: int = 14, rx_timeout: int | None = None, reset_buffer=None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.divisor = uart_divisor(clk_freq_hz, baud)
        if rx_timeout is None:
            rx_timeout = round(0.020 * clk_freq_hz)
        if not isinstance(rx_timeout, int) or rx_timeout < 20 * self.divisor:
            raise ValueError(f"rx_timeout must be an int of at least two UART characters "
                             f"({20 * self.divisor} cycles), not {rx_timeout!r}")
        if not isinstance(dram_aw, int) or not 1 <= dram_aw <= 24:
            raise ValueError(f"dram_aw must be an int in 1..24 (address bits of 64-bit "
                             f"words), not {dram_aw!r}")
        self.config = config
        self.clk_freq_hz = clk_freq_hz
        self.baud = baud
        self.dram_aw = dram_aw
        self.rx_timeout = rx_timeout
        if reset_buffer is not None and not callable(reset_buffer):
            raise TypeError(f"reset_buffer must be a callable (m, rst) -> Value or None, "
                            f"not {reset_buffer!r}")
        self.reset_buffer = reset_buffer
        self.bridge = UARTBridge(dram_aw, clk_freq_hz, rx_timeout)   # checks the clock
        self.dram = BramDram(dram_aw)
        self.accelerator = Accelerator(config)
        self.uart_rx_core = UARTRx(self.divisor)
        self.uart_tx_core = UARTTx(self.divisor)
        super().__init__({
            "rst": In(1),
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "leds": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        acc, dram, bridge = self.accelerator, self.dram, self.bridge
        urx, utx = self.uart_rx_core, self.uart_tx_core
        # The bridge's RESET pulse (or the core's reset) is registered before it fans out to
        # the whole accelerator (its decode was the start of the longest reset paths of an
        # 8 x 8 top).
        core_rst_q = Signal(name="core_rst")
        m.d.sync += core_rst_q.eq(bridge.core_rst | self.rst)
        core_rst = (core_rst_q if self.reset_buffer is None
                    else self.reset_buffer(m, core_rst_q))

        def reset(sub, rst):
            return ResetInserter({"sync": rst})(sub)

        m.submodules.accelerator = reset(acc, core_rst)
        m.submodules.dram = reset(dram, self.rst)
        m.submodules.bridge = reset(bridge, self.rst)
        m.submodules.uart_rx = reset(urx, self.rst)
        m.submodules.uart_tx = reset(utx, self.rst)

        m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
        wiring.connect(m, urx.o, bridge.rx)
        # A skid buffer between the bridge and the transmitter: the bridge is placed next to
        # the accelerator, the UART next to its pin, and without it the transmitter's ready ->
        # bridge -> valid -> transmitter loop crossed that distance twice.
        tx_skid = SkidBuffer(8)
        m.submodules.tx_skid = reset(tx_skid, self.rst)
        wiring.connect(m, bridge.tx, tx_skid.i)
        wiring.connect(m, tx_skid.o, utx.i)
        wiring.connect(m, bridge.csr, acc.csr)
        wiring.connect(m, bridge.mem_rd, dram.host_rd)
        wiring.connect(m, bridge.mem_wr, dram.host_wr)
        # The accelerator's DRAM requests reach 64 block RAMs spread over the die: both go
        # through a register slice (reset with the accelerator). A read waits while a write
        # sits in its slice, so a read issued after a write was accepted still sees it.
        rd_slice = SkidBuffer(DRAM_ADDR_BITS)
        wr_slice = SkidBuffer(dram_write_layout())
        m.submodules.dram_rd_slice = ResetInserter({"sync": core_rst})(rd_slice)
        m.submodules.dram_wr_slice = ResetInserter({"sync": core_rst})(wr_slice)
        wiring.connect(m, acc.dram_rd.req, rd_slice.i)
        wiring.connect(m, acc.dram_wr, wr_slice.i)
        wiring.connect(m, wr_slice.o, dram.acc_wr)
        m.d.comb += [
            dram.acc_rd.req.payload.eq(rd_slice.o.payload),
            dram.acc_rd.req.valid.eq(rd_slice.o.valid & ~wr_slice.o.valid),
            rd_slice.o.ready.eq(dram.acc_rd.req.ready & ~wr_slice.o.valid),
        ]
        wiring.connect(m, dram.acc_rd.resp, acc.dram_rd.resp)
        m.d.comb += [dram.acc_rst.eq(core_rst_q), dram.range_err_clear.eq(core_rst_q)]

        # LEDs.
        def stretched(event, cycles, name):
            cnt = Signal(range(cycles + 1), name=f"{name}_cnt")
            with m.If(event):
                m.d.sync += cnt.eq(cycles)
            with m.Elif(cnt != 0):
                m.d.sync += cnt.eq(cnt - 1)
            return cnt != 0

        stretch = max(1, round(0.020 * self.clk_freq_hz))
        half = max(1, round(self.clk_freq_hz / 3))     # 1.5 Hz blink
        beat_cnt = Signal(range(half))
        beat = Signal()
        with m.If(beat_cnt == half - 1):
            m.d.sync += [beat_cnt.eq(0), beat.eq(~beat)]
        with m.Else():
            m.d.sync += beat_cnt.eq(beat_cnt + 1)

        rx_led = stretched(urx.o.valid & urx.o.ready, stretch, "rx_led")
        tx_led = stretched(utx.i.valid & utx.i.ready, stretch, "tx_led")
        m.d.comb += self.leds.eq(Cat(acc.busy, acc.done, acc.error, beat, rx_led, tx_led,
                                     dram.range_err, Const(0, 1)))
        return m
