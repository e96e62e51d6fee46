"""cocotb testbench: the RLC encoder and decoder on Verilator against the golden model.

The top (``rlc_codec``, built by ``sim_tests/test_rlc_verilator.py``) holds an RLCEncoder
(``enc_*`` ports) and an RLCDecoder (``dec_*`` ports) side by side. Stalls on every stream
come from seeded pause patterns, as in cocotbext-axi.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from sw_driver.golden import rlc_decode, rlc_encode

SEED = int(os.environ.get("RLC_TB_SEED", "1"))


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.rng = random.Random(SEED)

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        for name in ("enc_i__valid", "enc_o__ready", "dec_i__valid", "dec_count__valid",
                     "dec_o__ready"):
            getattr(self.dut, name).value = 0
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def send(self, prefix, items, stall):
        """Drive (payload) items on stream ``prefix`` with random idle cycles."""
        valid = getattr(self.dut, f"{prefix}__valid")
        payload = getattr(self.dut, f"{prefix}__payload")
        ready = getattr(self.dut, f"{prefix}__ready")
        for item in items:
            while self.rng.random() < stall:
                valid.value = 0
                await RisingEdge(self.dut.clk)
            valid.value = 1
            payload.value = item
            while True:
                await RisingEdge(self.dut.clk)
                if ready.value:
                    break
        valid.value = 0

    async def recv(self, prefix, n, stall, signed_bits=None):
        valid = getattr(self.dut, f"{prefix}__valid")
        payload = getattr(self.dut, f"{prefix}__payload")
        ready = getattr(self.dut, f"{prefix}__ready")
        out = []
        while len(out) < n:
            ready.value = 0 if self.rng.random() < stall else 1
            await RisingEdge(self.dut.clk)
            # Values read right at the edge are the ones the registers sampled.
            if ready.value and valid.value:
                out.append(int(payload.value))
        ready.value = 0
        return out


def _planes(rng):
    planes = [np.zeros(7, dtype=np.int16), np.arange(1, 10, dtype=np.int16),
              np.array([0] * 31 + [5] + [0] * 32 + [-7] + [0] * 33, dtype=np.int16),
              np.array([-32768, 0, 32767], dtype=np.int16)]
    for density in (0.1, 0.5, 0.9):
        n = rng.randint(1, 200)
        v = np.array([rng.randint(-32768, 32767) if rng.random() < density else 0
                      for _ in range(n)], dtype=np.int16)
        planes.append(v)
    return planes


def _enc_items(plane):
    # payload layout {data: signed(16) [15:0], last: [16]}
    return [(int(v) & 0xFFFF) | ((i == len(plane) - 1) << 16) for i, v in enumerate(plane)]


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def encoder_matches_golden(dut):
    tb = TB(dut)
    await tb.reset()
    planes = _planes(tb.rng)
    expected = [int(w) for p in planes for w in rlc_encode(p)]
    items = [x for p in planes for x in _enc_items(p)]
    sender = cocotb.start_soon(tb.send("enc_i", items, stall=0.3))
    words = await tb.recv("enc_o", len(expected), stall=0.3)
    await sender
    assert words == expected


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def decoder_matches_golden(dut):
    tb = TB(dut)
    await tb.reset()
    planes = _planes(tb.rng)
    words = [int(w) for p in planes for w in rlc_encode(p)]
    counts = [len(p) for p in planes]
    cocotb.start_soon(tb.send("dec_count", counts, stall=0.3))
    cocotb.start_soon(tb.send("dec_i", words, stall=0.3))
    got = await tb.recv("dec_o", sum(counts), stall=0.3)
    values = np.array([g & 0xFFFF for g in got], dtype=np.uint16).view(np.int16)
    lasts = [g >> 16 for g in got]
    pos = 0
    for p in planes:
        expect = rlc_decode(rlc_encode(p), len(p))
        np.testing.assert_array_equal(values[pos:pos + len(p)], expect)
        np.testing.assert_array_equal(values[pos:pos + len(p)], p)
        assert lasts[pos:pos + len(p)] == [0] * (len(p) - 1) + [1]
        pos += len(p)
    assert int(dut.dec_error.value) == 0


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def decoder_flags_truncated_stream(dut):
    tb = TB(dut)
    await tb.reset()
    plane = np.arange(1, 8, dtype=np.int16)          # 7 values -> 3 words
    words = [int(w) for w in rlc_encode(plane)]
    bad = words[:1] + [words[1] | (1 << 63)]           # last-word bit too early
    cocotb.start_soon(tb.send("dec_count", [len(plane)], stall=0.0))
    cocotb.start_soon(tb.send("dec_i", bad, stall=0.0))
    for _ in range(200):
        await RisingEdge(dut.clk)
        dut.dec_o__ready.value = 1
        if int(dut.dec_error.value):
            break
    assert int(dut.dec_error.value) == 1
