"""A signed multiplier with registered operands and a registered product.

On the Lattice ECP5 the registers are those of the ``MULT18X18D`` block itself (its input
registers A and B and its output register), so no fabric flip-flop and no fabric net sits
between the operands' sources, the multiplier and the product's users. Yosys maps a ``*`` to
a ``MULT18X18D`` without registers and leaves the flip-flops around it in the fabric: on an
8 x 8 lock-step board top (``fpga`` preset, ``lockstep_rows=true``) operand register ->
multiplier -> product register was one of the longest paths after placement (24.5 ns), and
the multiplier's operand and product nets were the most congested group of the router2
heat map (about 10% of the overuse). Elsewhere (simulation, Verilog, other FPGAs) the same
registers are ordinary flip-flops, with the same behaviour.

ECP5 primitive: Lattice TN1267, "ECP5 and ECP5-5G sysDSP Usage Guide" (MULT18X18D, register
options ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_OUTPUT_CLK`` and their clock enables);
nextpnr times the block with its registers (``MULT18X18D_REGS_ALL``).
"""

from amaranth import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredMultiplier"]


def _is_ecp5(platform) -> bool:
    return platform is not None and getattr(platform, "family", None) == "ecp5"


class RegisteredMultiplier(wiring.Component):
    """``p`` = product of ``a`` and ``b``, two cycles later; the operands have a clock enable.

    Parameters
    ----------
    width : int
        Operand width in bits, signed, >= 2. Up to 18 bits the ECP5 uses one
        ``MULT18X18D`` with its registers; wider operands use fabric registers everywhere.

    Ports
    -----
    a, b : In(signed(width))
        Operands, taken into the operand registers in a cycle where ``en`` is high (held
        otherwise).
    en : In(1)
        Clock enable of the operand registers.
    p : Out(signed(2 * width))
        The product register: in every cycle it takes the product of the operand
        registers' contents (exact: ``2 * width`` bits hold any product). While the
        operands are held, so is the product.

    The product register has no clock enable of its own because nextpnr allows at most four
    distinct clock-enable nets per ECP5 DSP block (four ``MULT18X18D``): with one enable per
    multiplier (and the constant 1 of the product registers) three multipliers share a
    block; with two, only one would (and 64 of them do not fit the 85F's 39 blocks).

    The registers have no reset: their contents are not defined until written, so a user
    must track validity itself.

    Raises
    ------
    ValueError
        ``width`` below 2.
    """

    def __init__(self, width: int):
        if not isinstance(width, int) or width < 2:
            raise ValueError(f"multiplier width must be an int >= 2, not {width!r}")
        self._width = width
        super().__init__({
            "a": In(signed(width)),
            "b": In(signed(width)),
            "en": In(1),
            "p": Out(signed(2 * width)),
        })

    @property
    def width(self) -> int:
        return self._width

    def elaborate(self, platform):
        m = Module()
        w = self._width
        if not (_is_ecp5(platform) and w <= 18):
            a_r = Signal(signed(w), name="a_reg", reset_less=True)
            b_r = Signal(signed(w), name="b_reg", reset_less=True)
            p_r = Signal(signed(2 * w), name="p_reg", reset_less=True)
            with m.If(self.en):
                m.d.sync += [a_r.eq(self.a), b_r.eq(self.b)]
            m.d.sync += p_r.eq(a_r * b_r)
            m.d.comb += self.p.eq(p_r)
            return m

        a18 = Signal(signed(18), name="a18")
        b18 = Signal(signed(18), name="b18")
        p36 = Signal(36, name="p36")
        m.d.comb += [a18.eq(self.a), b18.eq(self.b),     # sign extension
                     self.p.eq(p36[:2 * w])]
        zero = Const(0, 1)
        ports = {}
        for j in range(18):
            ports[f"i_A{j}"] = a18[j]
            ports[f"i_B{j}"] = b18[j]
            ports[f"i_C{j}"] = zero
        for j in range(36):
            ports[f"o_P{j}"] = p36[j]
        regs = {}
        for reg, ce in (("INPUTA", "CE0"), ("INPUTB", "CE0"), ("OUTPUT", "CE1")):
            regs[f"p_REG_{reg}_CLK"] = "CLK0"
            regs[f"p_REG_{reg}_CE"] = ce
            regs[f"p_REG_{reg}_RST"] = "RST0"
        m.submodules.dsp = Instance(
            "MULT18X18D",
            **regs,
            p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE",
            p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED",
            p_CLK2_DIV="ENABLED", p_CLK3_DIV="ENABLED",
            p_HIGHSPEED_CLK="NONE",
            p_GSR="DISABLED",
            p_CAS_MATCH_REG="FALSE",
            p_SOURCEB_MODE="B_SHIFT",
            p_MULT_BYPASS="DISABLED",
            p_RESETMODE="SYNC",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            # CLK1-3, CE2-3 and RST1-3 stay unconnected: nextpnr counts every distinct net
            # (the constant 0 too) against the four per DSP block
            i_CLK0=ClockSignal("sync"), i_CE0=self.en, i_CE1=1, i_RST0=0,
            **ports,
        )
        return m
