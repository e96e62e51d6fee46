"""Board top: clock, reset, UART pins and LEDs around :class:`fpga.core.BoardCore`.

``BoardTop`` is what ``platform.build()`` elaborates (``accelgen fpga``). It owns the
``sync`` domain:

- clock: the board oscillator, through the ECP5 ``EHXPLLL`` when the board has a PLL
  (parameters from :mod:`fpga.boards`), else used directly;
- reset: the ``sync`` domain itself is reset-less (flip-flops start at their init values
  at configuration); the core's ``rst`` input is held while the PLL is unlocked, during a
  power-on delay of ``POR_US`` microseconds (iCE40 block RAMs read as zero for ~3 us after
  configuration; same margin as Amaranth's own iCE40 reset) and while the board's reset
  button is held, through a two-flop synchronizer (init 1: asserted from configuration).
  So every accelerator flip-flop's reset is one flop's output (``BoardCore`` registers
  ``rst`` with the bridge's ``RESET``), not a LUT combining two resets.

The core clock gets a clock constraint (``platform.add_clock_constraint``), so nextpnr
checks Fmax against the target, and ``BoardCore`` gets the frequency the PLL actually
makes (for the UART divisor).
"""

from __future__ import annotations

from amaranth import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.build import ResourceError
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from fpga.boards import Board, EcpPll
from hw.config import AcceleratorConfig

__all__ = ["BoardTop", "POR_US"]

#: Power-on reset hold after PLL lock (microseconds).
POR_US = 15


def _ecp5_global(m: Module, sig) -> Signal:
    """``sig`` through an ECP5 ``DCCA`` (primary clock network buffer); returns its output.

    For :class:`fpga.core.BoardCore`'s accelerator reset: the primary clock network reaches
    every slice's LSR input (Lattice TN1263, ECP5 and ECP5-5G sysCLOCK PLL/DLL Design and
    Usage Guide), so the 8 x 8 top's ~21,000-flip-flop reset no longer takes general
    routing to every slice. nextpnr routes a ``DCCA``'s output on a global by itself.
    """
    out = Signal(name="core_rst_glb")
    m.submodules.core_rst_dcca = Instance("DCCA", i_CLKI=sig, i_CE=Const(1), o_CLKO=out)
    return out


def _ehxplll(pll: EcpPll, clk_in_hz: float, clk_in, clk_out, locked) -> Instance:
    """An ECP5 EHXPLLL wired as ``ecppll`` writes it (CLKOP is output and feedback)."""
    f_in = clk_in_hz / 1e6
    f_out = pll.output_hz(clk_in_hz) / 1e6
    return Instance(
        "EHXPLLL",
        # Attributes as ecppll emits them (Diamond reads them; nextpnr ignores the filter
        # settings and derives the CLKOP constraint from the dividers).
        a_FREQUENCY_PIN_CLKI=f"{f_in:g}",
        a_FREQUENCY_PIN_CLKOP=f"{f_out:g}",
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=pll.clki_div,
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=pll.clkop_div,
        p_CLKOP_CPHASE=pll.clkop_cphase,
        p_CLKOP_FPHASE=pll.clkop_fphase,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=pll.clkfb_div,
        i_RST=Const(0),
        i_STDBY=Const(0),
        i_CLKI=clk_in,
        o_CLKOP=clk_out,
        i_CLKFB=clk_out,
        i_PHASESEL0=Const(0),
        i_PHASESEL1=Const(0),
        i_PHASEDIR=Const(1),
        i_PHASESTEP=Const(1),
        i_PHASELOADREG=Const(1),
        i_PLLWAKESYNC=Const(0),
        i_ENCLKOP=Const(0),
        o_LOCK=locked,
    )


class BoardTop(Elaboratable):
    """Top level for ``board``: PLL, reset, UART 0, LEDs and a :class:`BoardCore`.

    Parameters
    ----------
    board : fpga.boards.Board
        Target board.
    config : AcceleratorConfig
        Accelerator configuration.
    dram_aw : int, optional
        Block-RAM DRAM address bits (``2**dram_aw`` 64-bit words); default ``board.dram_aw``.
    clk_freq_hz : float, optional
        Requested core clock (Hz); default ``board.clk_hz``. With a PLL the nearest
        frequency the dividers reach is used (:attr:`clk_freq_hz` holds it).

    Attributes
    ----------
    clk_freq_hz : int
        Core clock actually produced (Hz); also the clock constraint.
    pll : fpga.boards.EcpPll or None
        PLL setting, None when the input clock is used directly.

    Raises
    ------
    ValueError
        If the clock cannot be made on this board (:meth:`Board.pll_for`).
    """

    def __init__(self, board: Board, config: AcceleratorConfig, *, dram_aw: int | None = None,
                 clk_freq_hz: float | None = None):
        self.board = board
        self.config = config
        self.dram_aw = board.dram_aw if dram_aw is None else dram_aw
        try:
            self.pll = board.pll_for(clk_freq_hz)
        except ValueError:
            self._MustUse__silence = True   # not an unused design: a rejected one
            raise
        self.clk_freq_hz = board.core_clock_hz(clk_freq_hz)
        self.baud = board.baud
        self.leds_mapped = 0   # set by elaborate(): LEDs the board has (<= 8)

    def elaborate(self, platform):
        from fpga.core import BoardCore

        board = self.board
        m = Module()

        # Clock.
        clk_io = platform.request(board.clk_resource, 0, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        # The core clock net gets a name of its own in this module, kept through synthesis
        # (Yosys otherwise keeps an arbitrary one of the net's many flattened names), so the
        # constraint below finds it.
        clk = Signal(name="core_clk", attrs={"keep": 1})
        m.domains.sync = cd_sync = ClockDomain("sync", reset_less=True)
        m.d.comb += cd_sync.clk.eq(clk)
        locked = Signal()
        if self.pll is not None:
            m.submodules.pll = _ehxplll(self.pll, board.clk_in_hz, clk_buf.i, clk, locked)
            # nextpnr checks Fmax of the core clock against this ("FREQUENCY NET" in the
            # LPF). Without a PLL the core runs on the input clock, whose resource already
            # carries the constraint (nextpnr propagates it through the global buffer).
            platform.add_clock_constraint(clk, self.clk_freq_hz)
        else:
            m.d.comb += [clk.eq(clk_buf.i), locked.eq(1)]

        # Power-on delay: a reset-less counter in the core clock (FFs start at their init).
        m.domains.por = cd_por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += cd_por.clk.eq(clk)
        por_cycles = max(1, round(POR_US * 1e-6 * self.clk_freq_hz))
        por_timer = Signal(range(por_cycles + 1))
        por_done = Signal()
        with m.If(~locked):
            m.d.por += [por_timer.eq(0), por_done.eq(0)]
        with m.Elif(por_timer == por_cycles):
            m.d.por += por_done.eq(1)
        with m.Else():
            m.d.por += por_timer.eq(por_timer + 1)

        button = Const(0)
        if board.reset_button is not None:
            btn_io = platform.request(*board.reset_button, dir="-")
            m.submodules.rst_btn = btn_buf = io.Buffer("i", btn_io)
            button = btn_buf.i
        core_rst = Signal(name="core_rst_sync", init=1)
        m.submodules.reset_sync = FFSynchronizer(~locked | ~por_done | button, core_rst,
                                                 o_domain="sync", init=1)

        # The core.
        m.submodules.core = core = BoardCore(
            self.config, clk_freq_hz=self.clk_freq_hz, baud=self.baud, dram_aw=self.dram_aw,
            reset_buffer=_ecp5_global if board.family == "ecp5" else None)
        m.d.comb += core.rst.eq(core_rst)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx_buf.i), tx_buf.o.eq(core.uart_tx)]

        self.leds_mapped = 0
        for i in range(min(board.max_leds, len(core.leds))):
            try:
                led_io = platform.request("led", i, dir="-")
            except ResourceError:
                break
            led_buf = io.Buffer("o", led_io)
            m.submodules[f"led_{i}"] = led_buf
            m.d.comb += led_buf.o.eq(core.leds[i])
            self.leds_mapped += 1
        return m
