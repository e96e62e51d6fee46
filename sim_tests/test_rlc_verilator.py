"""Runs the cocotb RLC testbench on Verilator (one cached build for all its tests)."""

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from gen.toolchain import cached_build, run_cocotb
from gen.verilog import convert
from hw.rlc import RLCDecoder, RLCEncoder

pytestmark = pytest.mark.verilator


class RLCCodec(wiring.Component):
    """Encoder and decoder side by side, for one Verilator build."""

    def __init__(self, data_width=16):
        self._enc = RLCEncoder(data_width)
        self._dec = RLCDecoder(data_width)
        ports = {}
        for prefix, comp in (("enc", self._enc), ("dec", self._dec)):
            for name, member in comp.signature.members.items():
                ports[f"{prefix}_{name}"] = member
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.enc = self._enc
        m.submodules.dec = self._dec
        for prefix, comp in (("enc", self._enc), ("dec", self._dec)):
            for name, member in comp.signature.members.items():
                outer, inner = getattr(self, f"{prefix}_{name}"), getattr(comp, name)
                if member.is_port:
                    if member.flow == In:
                        m.d.comb += inner.eq(outer)
                    else:
                        m.d.comb += outer.eq(inner)
                else:
                    wiring.connect(m, wiring.flipped(outer), inner) if member.flow == In \
                        else wiring.connect(m, inner, wiring.flipped(outer))
        return m


def test_rlc_codec_on_verilator():
    runner, bdir = cached_build(convert(RLCCodec(), "rlc_codec"), "rlc_codec", tag="rlc")
    run_cocotb(runner, bdir, "rlc_codec", "sim_tests.cocotb.rlc_tb")
