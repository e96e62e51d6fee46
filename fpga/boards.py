"""Boards the accelerator can be built for (``accelgen fpga --board NAME``).

One frozen :class:`Board` per supported board: the amaranth-boards platform, the preset that
fits it, the input clock and the core clock the PLL makes from it, the UART baud rate, the
size of the block-RAM "DRAM" behind the host bridge (``dram_aw``: ``2**dram_aw`` 64-bit
words) and the extra Yosys / nextpnr options. :func:`board` looks one up by name.

The ECP5 PLL (EHXPLLL) parameters come from :func:`ecp5_pll`, a port of the divider search of
Project Trellis' ``ecppll`` (``libtrellis/tools/ecppll.cpp``, ``calc_pll_params``) including
its single-precision arithmetic, so it gives the same dividers and CLKOP phase as the tool.
The ULX3S's 25 -> 50 MHz setting was also computed with the tool itself and is recorded in
:data:`ULX3S_PLL_50MHZ`; the test suite checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpga.protocol import DEFAULT_BAUD

__all__ = ["Board", "EcpPll", "BOARDS", "board", "ecp5_pll", "ULX3S_PLL_50MHZ"]


@dataclass(frozen=True)
class EcpPll:
    """Parameters of an ECP5 ``EHXPLLL`` with CLKOP as output and feedback.

    ``f_vco = f_in / clki_div * clkfb_div * clkop_div`` and
    ``f_out = f_in / clki_div * clkfb_div`` (ECP5 sysCLOCK PLL usage guide, FPGA-TN-02200;
    the relation was established by ``ecppll``'s author against Lattice's Clarity Designer).
    """

    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    clkop_fphase: int = 0

    def output_hz(self, f_in_hz: float) -> float:
        """CLKOP frequency (Hz) for an input clock of ``f_in_hz``."""
        return f_in_hz / self.clki_div * self.clkfb_div

    def vco_hz(self, f_in_hz: float) -> float:
        """VCO frequency (Hz), 400..800 MHz for a valid setting."""
        return self.output_hz(f_in_hz) * self.clkop_div


#: 25 MHz -> 50 MHz (VCO 600 MHz), computed with the PyPI toolchain's
#: ``yowasp-ecppll -i 25 -o 50 -f pll.v`` (Project Trellis ecppll 1.4-82-g3afe7b5):
#: "Refclk divisor: 1, Feedback divisor: 2, clkout0 divisor: 12, VCO frequency: 600",
#: ``.CLKOP_CPHASE(5), .CLKOP_FPHASE(0)``.
ULX3S_PLL_50MHZ = EcpPll(clki_div=1, clkfb_div=2, clkop_div=12, clkop_cphase=5)

# ecppll's limits (MHz).
_ECP5_PLL_IN = (8.0, 400.0)
_ECP5_PLL_OUT = (10.0, 400.0)
_ECP5_PFD = (3.125, 400.0)
_ECP5_VCO = (400.0, 800.0)


def ecp5_pll(f_in_hz: float, f_out_hz: float) -> EcpPll:
    """EHXPLLL dividers for ``f_in_hz`` -> ``f_out_hz``, exactly as ``ecppll -i -o`` finds them.

    Search order, tie-break (VCO closest to 600 MHz) and the CLKOP phase (180 degrees,
    truncated as the tool does in single precision) follow ``calc_pll_params`` of
    ``ecppll.cpp``. The output may differ from the request when no divider setting reaches it
    exactly; use :meth:`EcpPll.output_hz` for the frequency actually produced.

    Raises
    ------
    ValueError
        If the input is outside 8..400 MHz or the output outside 10..400 MHz.
    """
    import numpy as np

    f32 = np.float32
    fin_mhz, fout_mhz = f_in_hz / 1e6, f_out_hz / 1e6
    if not _ECP5_PLL_IN[0] <= fin_mhz <= _ECP5_PLL_IN[1]:
        raise ValueError(f"ECP5 PLL input clock must be in the range 8..400 MHz, got {fin_mhz} MHz")
    if not _ECP5_PLL_OUT[0] <= fout_mhz <= _ECP5_PLL_OUT[1]:
        raise ValueError(
            f"ECP5 PLL output clock must be in the range 10..400 MHz, got {fout_mhz} MHz")
    inp, out = f32(fin_mhz), f32(fout_mhz)
    # All (input_div, feedback_div, output_div) in the tool's loop order, in float32.
    idiv = np.arange(1, 129, dtype=np.float32)[:, None, None]
    fdiv = np.arange(1, 81, dtype=np.float32)[None, :, None]
    odiv = np.arange(1, 129, dtype=np.float32)[None, None, :]
    fpfd = inp / idiv
    fvco = fpfd * fdiv * odiv
    fout = fvco / odiv
    ok = ((fpfd >= f32(_ECP5_PFD[0])) & (fpfd <= f32(_ECP5_PFD[1]))
          & (fvco >= f32(_ECP5_VCO[0])) & (fvco <= f32(_ECP5_VCO[1])))
    err = np.where(ok, np.abs(fout - out), np.inf)
    vco_dist = np.where(ok, np.abs(fvco - f32(600)), np.inf)
    # The tool keeps the first strictly better error, then replaces it only on equal error
    # and a VCO strictly closer to 600 MHz: the lexicographic minimum of (error, distance,
    # loop position).
    cand = np.flatnonzero((err == err.min()).ravel())
    best = cand[np.argmin(vco_dist.ravel()[cand])]  # argmin: first of equals
    i, f, o = np.unravel_index(best, err.shape)
    best_fout = float(fout[i, f, o])
    best_fvco = float(fvco[i, f, o])
    ns_phase = float(f32(1 / (best_fout * 1e6) * 0.5))
    cphase = int(ns_phase * (best_fvco * 1e6))
    return EcpPll(clki_div=int(i) + 1, clkfb_div=int(f) + 1, clkop_div=int(o) + 1,
                  clkop_cphase=cphase)


@dataclass(frozen=True)
class Board:
    """A board ``accelgen fpga`` can build for.

    Attributes
    ----------
    name : str
        Registry key (``--board``).
    platform : type
        amaranth-boards platform class (instantiated once per build).
    family : str
        ``"ecp5"`` or ``"ice40"``; selects the PLL, the tools and the report's resources.
    default_preset : str
        Configuration preset (``hw.config.PRESETS``) sized for the device.
    clk_resource : str
        Platform resource of the input clock.
    clk_in_hz : int
        Input clock frequency (Hz).
    clk_hz : int
        Target core clock (Hz): the PLL output, or the input clock when ``pll`` is False.
    baud : int
        UART baud rate of the host bridge (``fpga.protocol``).
    dram_aw : int
        Address bits of the block-RAM DRAM (``2**dram_aw`` 64-bit words); ``--dram-aw``
        overrides it.
    pll : bool
        Make the core clock with the device PLL (ECP5 EHXPLLL) instead of using the input.
    reset_button : tuple or None
        ``(resource, number)`` of a button that resets the design while held.
    max_leds : int
        LEDs to map from the core's 8 (``led`` resources 0..max_leds-1 that exist).
    synth_opts, nextpnr_opts : tuple of str
        Extra options for ``synth_<family>`` and for nextpnr.
    programmer_board : str
        ``openFPGALoader -b`` board name.
    bitstream_ext : str
        ``.bit`` (ECP5) or ``.bin`` (iCE40).
    """

    name: str
    platform: type
    family: str
    default_preset: str
    clk_resource: str
    clk_in_hz: int
    clk_hz: int
    baud: int = DEFAULT_BAUD
    dram_aw: int = 14
    pll: bool = False
    reset_button: tuple[str, int] | None = None
    max_leds: int = 8
    synth_opts: tuple[str, ...] = ()
    nextpnr_opts: tuple[str, ...] = ()
    programmer_board: str = ""
    bitstream_ext: str = ".bit"
    description: str = ""

    @property
    def ident(self) -> str:
        """The name as an identifier (design and file names): ``ulx3s-85f`` -> ``ulx3s_85f``."""
        return self.name.replace("-", "_")

    def make_platform(self):
        """A fresh platform instance (Amaranth platforms can be built only once)."""
        return self.platform()

    def pll_for(self, clk_hz: float | None = None) -> EcpPll | None:
        """PLL setting for core clock ``clk_hz`` (default :attr:`clk_hz`); None without PLL.

        Raises
        ------
        ValueError
            If the board has no PLL and ``clk_hz`` differs from the input clock, or the
            frequency is out of the PLL's range.
        """
        target = self.clk_hz if clk_hz is None else clk_hz
        if not self.pll:
            if target != self.clk_in_hz:
                raise ValueError(
                    f"board {self.name} runs the core from its {self.clk_in_hz / 1e6:g} MHz "
                    f"input clock; a {target / 1e6:g} MHz core clock is not supported")
            return None
        if self.family != "ecp5":  # pragma: no cover - no such board registered
            raise ValueError(f"no PLL support for family {self.family!r}")
        if self.clk_in_hz == 25_000_000 and target == 50_000_000:
            return ULX3S_PLL_50MHZ
        return ecp5_pll(self.clk_in_hz, target)

    def core_clock_hz(self, clk_hz: float | None = None) -> int:
        """The core clock actually produced (Hz) for a requested ``clk_hz``."""
        pll = self.pll_for(clk_hz)
        if pll is None:
            return self.clk_in_hz
        return round(pll.output_hz(self.clk_in_hz))


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return Board(
        name="ulx3s-85f", platform=ULX3S_85F_Platform, family="ecp5", default_preset="fpga",
        clk_resource="clk25", clk_in_hz=25_000_000, clk_hz=50_000_000, pll=True,
        # 4K words = 32 KiB = 16 DP16KD of the 208: with the 8 x 8 `fpga` preset (64
        # filter spads and the 64 KiB GLB: 96 DP16KD) the largest that has routed (README).
        dram_aw=12,
        # PWR button (BTN0, active low on the board; the resource inverts it).
        reset_button=("button_pwr", 0), max_leds=8,
        programmer_board="ulx3s", bitstream_ext=".bit",
        # router1 (nextpnr's default) stalled on the 8x8 board top at ~313,000 overused
        # wires after 40 minutes; router2 went to 47,500 in 5 iterations (README, FPGA).
        # The analytic "static" placer (instead of HeAP) cut the placed wirelength of the
        # 8 x 8 top by about a third, and router2 then converged (session 16).
        nextpnr_opts=("--placer", "static", "--router", "router2"),
        description="Radiona ULX3S, Lattice ECP5 LFE5U-85F (84K LUT4, 208 DP16KD, "
                    "156 MULT18X18D), 25 MHz oscillator, FT231X USB serial")


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return Board(
        name="icebreaker", platform=ICEBreakerPlatform, family="ice40", default_preset="tiny",
        clk_resource="clk12", clk_in_hz=12_000_000, clk_hz=12_000_000, pll=False,
        # 512 words = 32 Kbit = 8 of the 30 SB_RAM40_4K (or SPRAM when Yosys infers it).
        dram_aw=9,
        reset_button=("button", 0), max_leds=8,
        synth_opts=("-dsp", "-spram"),
        programmer_board="ice40_generic", bitstream_ext=".bin",
        description="1BitSquared iCEBreaker, Lattice iCE40UP5K (5280 LC, 30 SB_RAM40_4K, "
                    "4 SB_SPRAM256KA, 8 SB_MAC16), 12 MHz oscillator, FT2232H USB serial")


_FACTORIES = {"ulx3s-85f": _ulx3s_85f, "icebreaker": _icebreaker}

#: Names of the supported boards, in registry order.
BOARDS: tuple[str, ...] = tuple(_FACTORIES)


def board(name: str) -> Board:
    """The :class:`Board` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a supported board; the message lists the boards.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; choose one of {list(BOARDS)}") from None
    return factory()
