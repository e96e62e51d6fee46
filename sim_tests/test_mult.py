# amaranth: UnusedElaboratable=no
"""hw.mult.RegisteredMultiplier: behaviour (simulation) and the ECP5 MULT18X18D mapping."""

import numpy as np
import pytest
from amaranth import Fragment, Instance
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hw.mult import RegisteredMultiplier


def test_products_and_clock_enables():
    """p follows a two-stage model (operand registers on en, product every cycle) for
    random operands, including the extreme values, with a random enable."""
    rng = np.random.default_rng(5)
    w = 16
    dut = RegisteredMultiplier(w)
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    steps = []
    for t in range(400):
        a, b = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        en = int(rng.random() < 0.7)
        if t < 4:
            a, b = [(lo, lo), (lo, hi), (hi, hi), (hi, lo)][t]
            en = 1
        steps.append((a, b, en))
    checked = []

    async def bench(ctx):
        a_r = b_r = p_r = None
        for a, b, en in steps:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, en)
            await ctx.tick()
            if a_r is not None:                  # the operands of the previous cycle
                p_r = a_r * b_r
            if en:
                a_r, b_r = a, b
            if p_r is not None:
                assert ctx.get(dut.p) == p_r
                checked.append(p_r)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 300
    assert (lo * lo) in checked and (lo * hi) in checked


class _ECP5:
    family = "ecp5"


def _instances(frag):
    found = []

    def walk(f):
        if isinstance(f, Instance):
            found.append(f)
        for sub, _name, *_ in getattr(f, "subfragments", []):
            walk(sub)
    walk(frag)
    return found


def test_ecp5_uses_the_dsp_registers():
    """On an ECP5 platform the registers are the MULT18X18D's own: inputs A and B on CE0
    (en), the output on CE1 (constant 1), clocked by sync, signed operands; no pin is tied
    to a constant that nextpnr would count against the DSP block's four CE/CLK/RST nets
    except CE1 and RST0."""
    dut = RegisteredMultiplier(16)
    frag = Fragment.get(dut, _ECP5())
    insts = _instances(frag)
    assert [i.type for i in insts] == ["MULT18X18D"]
    inst = insts[0]
    params = inst.parameters
    assert params["REG_INPUTA_CLK"] == params["REG_INPUTB_CLK"] == "CLK0"
    assert params["REG_OUTPUT_CLK"] == "CLK0"
    assert params["REG_INPUTA_CE"] == params["REG_INPUTB_CE"] == "CE0"
    assert params["REG_OUTPUT_CE"] == "CE1"
    assert params["REG_PIPELINE_CLK"] == "NONE"
    conns = {name: value for name, (value, _kind) in inst.ports.items()}
    assert conns["CE0"] is dut.en and conns["CE1"].value == 1 and conns["RST0"].value == 0
    for pin in ("CLK1", "CLK2", "CLK3", "CE2", "CE3", "RST1", "RST2", "RST3"):
        assert pin not in conns
    assert conns["SIGNEDA"].value == 1 and conns["SIGNEDB"].value == 1
    # no fabric multiplier or registers left
    text = rtlil.convert(dut, platform=_ECP5())
    assert "$mul" not in text and "$dff" not in text


def test_wide_operands_stay_in_the_fabric_and_bad_width():
    frag = Fragment.get(RegisteredMultiplier(20), _ECP5())
    assert _instances(frag) == []
    with pytest.raises(ValueError, match="width"):
        RegisteredMultiplier(1)
