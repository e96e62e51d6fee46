"""Amaranth-simulation tests of the RLC encoder/decoder (hw/rlc.py) against the golden model.

Every word and every value is compared with ``sw_driver.golden.rlc_encode`` /
``rlc_decode`` (DESIGN.md section 3), with and without random valid/ready stalls.
"""

import random

import numpy as np
import pytest
from amaranth.back import verilog

from hw.layouts import RLC_LAST_BIT, RLC_PAIR_BITS, RLC_PAIRS_PER_WORD, RLC_RUN_BITS
from hw.rlc import RLCDecoder, RLCEncoder
from sim_tests.support.stream import get_n, put_all, run_testbenches, stream_put, assert_rejected, get_n_timed
from sw_driver import golden

STALLS = [0.0, 0.3]




# -- stimulus ---------------------------------------------------------------------------

def random_plane(rng, n, zero_fraction, data_width=16):
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    plane = []
    for _ in range(n):
        if rng.random() < zero_fraction:
            plane.append(0)
        else:
            v = 0
            while v == 0:
                v = rng.randint(lo, hi)
            plane.append(v)
    return plane


def edge_planes():
    """Hand-picked planes around the run-length limits of DESIGN.md section 3."""
    return {
        "run31": [0] * 31 + [7],
        "run32": [0] * 32 + [7],
        "run33": [0] * 33 + [7],
        "run63_64_65": [0] * 63 + [1] + [0] * 64 + [2] + [0] * 65 + [3],
        "trailing31": [5] + [0] * 31,
        "trailing32": [5] + [0] * 32,
        "trailing33": [5] + [0] * 33,
        "trailing64": [5] + [0] * 64,
        "all_zero_1": [0],
        "all_zero_100": [0] * 100,
        "no_zeros": [1, -1, 32767, -32768, 2, -2, 3],
        "leading_trailing": [0] * 5 + [9, -9] + [0] * 7,
        "single": [-3],
        "three_pairs": [1, 2, 3],
        "four_pairs": [1, 2, 3, 4],
        "extremes": [-32768, 0, 32767, 0, 0, -1],
    }


def to_values(planes):
    """Flatten planes into ``value_layout`` payloads with ``last`` on each plane's end."""
    return [{"data": int(v), "last": int(j == len(p) - 1)}
            for p in planes for j, v in enumerate(p)]


def golden_words(planes):
    return [int(w) for p in planes for w in golden.rlc_encode(np.array(p, dtype=np.int64))]


def word_capacity(word):
    """Values that all three pairs of ``word`` stand for (padding included)."""
    total = 0
    for k in range(RLC_PAIRS_PER_WORD):
        pair = (word >> (RLC_PAIR_BITS * k)) & ((1 << RLC_PAIR_BITS) - 1)
        total += (pair & ((1 << RLC_RUN_BITS) - 1)) + 1
    return total


# -- harness ----------------------------------------------------------------------------



async def expect_quiet(ctx, stream, cycles=8):
    """Nothing more may appear on ``stream`` (ready is held low by the caller)."""
    for _ in range(cycles):
        await ctx.tick()
        assert not ctx.get(stream.valid), "unexpected extra transfer on output"


def encode_hw(planes, *, stall, seed, data_width=16):
    dut = RLCEncoder(data_width)
    values = to_values(planes)
    n_words = len(golden_words(planes))
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, values, rng=random.Random(seed), stall=stall)

    async def consumer(ctx):
        got.extend(await get_n(ctx, dut.o, n_words, rng=random.Random(seed + 1), stall=stall))
        await expect_quiet(ctx, dut.o)

    run_testbenches(dut, producer, consumer, deadline_cycles=20 * len(values) + 200)
    return got


def decode_hw(counts, words, n_out, *, stall, seed, data_width=16):
    dut = RLCDecoder(data_width)
    got = []

    async def counter(ctx):
        await put_all(ctx, dut.count, counts, rng=random.Random(seed), stall=stall)

    async def feeder(ctx):
        await put_all(ctx, dut.i, words, rng=random.Random(seed + 1), stall=stall)

    async def consumer(ctx):
        out = await get_n(ctx, dut.o, n_out, rng=random.Random(seed + 2), stall=stall)
        got.extend((int(p.data), int(p.last)) for p in out)
        await expect_quiet(ctx, dut.o)
        assert not ctx.get(dut.error)
        assert not ctx.get(dut.busy)

    run_testbenches(dut, counter, feeder, consumer, deadline_cycles=20 * n_out + 200)
    return got


# -- encoder ----------------------------------------------------------------------------

@pytest.mark.parametrize("stall", STALLS)
@pytest.mark.parametrize("zero_fraction", [0.0, 0.5, 0.9, 1.0])
def test_encoder_random_planes(zero_fraction, stall):
    rng = random.Random(int(zero_fraction * 100))
    planes = [random_plane(rng, n, zero_fraction) for n in (1, 37, 150)]
    assert encode_hw(planes, stall=stall, seed=11) == golden_words(planes)


@pytest.mark.parametrize("stall", STALLS)
def test_encoder_edge_cases_back_to_back(stall):
    planes = list(edge_planes().values())
    assert encode_hw(planes, stall=stall, seed=5) == golden_words(planes)


@pytest.mark.parametrize("name", sorted(edge_planes()))
def test_encoder_edge_case_alone(name):
    planes = [edge_planes()[name]]
    assert encode_hw(planes, stall=0.3, seed=len(name)) == golden_words(planes)


def test_encoder_narrow_data_width():
    rng = random.Random(8)
    planes = [random_plane(rng, 80, 0.6, data_width=8), [-128, 0, 127]]
    assert encode_hw(planes, stall=0.3, seed=3, data_width=8) == golden_words(planes)


def test_encoder_throughput_one_value_per_cycle():
    rng = random.Random(21)
    planes = [random_plane(rng, 200, 0.5), random_plane(rng, 100, 0.0), [0] * 100]
    values = to_values(planes)
    expected = golden_words(planes)
    dut = RLCEncoder()
    result = {}

    async def producer(ctx):
        await put_all(ctx, dut.i, values)

    async def consumer(ctx):
        result["words"], result["cycles"] = await get_n_timed(ctx, dut.o, len(expected))

    run_testbenches(dut, producer, consumer, deadline_cycles=5 * len(values))
    assert [int(w) for w in result["words"]] == expected
    # One value per cycle: the last word leaves at most 2 cycles after the last value.
    assert result["cycles"] <= len(values) + 2, result["cycles"]


def test_encoder_rejects_bad_width():
    assert_rejected(RLCEncoder, 17, match="data_width")


def test_encoder_verilog():
    text = verilog.convert(RLCEncoder(16), name="rlc_encoder", emit_src=False)
    assert "module rlc_encoder" in text


# -- decoder ----------------------------------------------------------------------------

def golden_decoded(planes):
    """(data, last) pairs from ``golden.rlc_decode`` of ``golden.rlc_encode``."""
    out = []
    for p in planes:
        words = golden.rlc_encode(np.array(p, dtype=np.int64))
        values = golden.rlc_decode(words, len(p))
        assert [int(v) for v in values] == list(p)    # golden round trip, for the record
        out.extend((int(v), int(j == len(p) - 1)) for j, v in enumerate(values))
    return out


@pytest.mark.parametrize("stall", STALLS)
@pytest.mark.parametrize("zero_fraction", [0.0, 0.5, 0.9, 1.0])
def test_decoder_random_planes(zero_fraction, stall):
    rng = random.Random(100 + int(zero_fraction * 100))
    planes = [random_plane(rng, n, zero_fraction) for n in (1, 40, 150)]
    expected = golden_decoded(planes)
    got = decode_hw([len(p) for p in planes], golden_words(planes), len(expected),
                    stall=stall, seed=17)
    assert got == expected


@pytest.mark.parametrize("stall", STALLS)
def test_decoder_edge_cases_back_to_back(stall):
    planes = list(edge_planes().values())
    expected = golden_decoded(planes)
    got = decode_hw([len(p) for p in planes], golden_words(planes), len(expected),
                    stall=stall, seed=23)
    assert got == expected


def test_decoder_narrow_data_width():
    rng = random.Random(9)
    planes = [random_plane(rng, 90, 0.6, data_width=8), [-128, 0, 127]]
    expected = golden_decoded(planes)
    got = decode_hw([len(p) for p in planes], golden_words(planes), len(expected),
                    stall=0.3, seed=4, data_width=8)
    assert got == expected


def test_decoder_count_zero_is_empty_plane():
    assert len(golden.rlc_encode(np.zeros(0, dtype=np.int64))) == 0
    assert len(golden.rlc_decode(np.zeros(0, dtype=np.uint64), 0)) == 0
    planes = [[1, 0, 0, 2], [], [0] * 40, [], [3]]
    expected = golden_decoded(planes)
    got = decode_hw([len(p) for p in planes], golden_words(planes), len(expected),
                    stall=0.3, seed=31)
    assert got == expected


def test_decoder_throughput_one_value_per_cycle():
    rng = random.Random(42)
    planes = [random_plane(rng, 150, 0.0), random_plane(rng, 150, 0.5), [0] * 100]
    expected = golden_decoded(planes)
    dut = RLCDecoder()
    result = {}

    async def counter(ctx):
        await put_all(ctx, dut.count, [len(p) for p in planes])

    async def feeder(ctx):
        await put_all(ctx, dut.i, golden_words(planes))

    async def consumer(ctx):
        out, result["cycles"] = await get_n_timed(ctx, dut.o, len(expected))
        result["values"] = [(int(p.data), int(p.last)) for p in out]

    run_testbenches(dut, counter, feeder, consumer, deadline_cycles=5 * len(expected))
    assert result["values"] == expected
    # One value per cycle, plus 2 cycles of latency per plane (count, first word).
    assert result["cycles"] <= len(expected) + 2 * len(planes) + 1, result["cycles"]


async def _drain_plane(ctx, dut, rng, stall, limit=2000):
    """Receive values until one carries ``last``; returns [(data, last)]."""
    out = []
    for _ in range(limit):
        (p,) = await get_n(ctx, dut.o, 1, rng=rng, stall=stall)
        out.append((int(p.data), int(p.last)))
        if p.last:
            return out
    raise AssertionError("no value with last")


@pytest.mark.parametrize("stall", STALLS)
def test_decoder_error_last_word_too_early(stall):
    """(a) Bit 63 arrives before ``count`` values: error, no hang, next plane decodes."""
    bad = [4, 0, 0, -5, 6, 7, 8]             # 7 values, claimed to be 20
    good = [0] * 40 + [11, 12]
    bad_words = golden_words([bad])
    with pytest.raises(ValueError, match="last-word bit set"):
        golden.rlc_decode(np.array(bad_words, dtype=np.uint64), len(bad) + 13)
    emitted = sum(word_capacity(w) for w in bad_words)   # all pairs, padding included
    dut = RLCDecoder()
    rng = random.Random(3)

    async def feeder(ctx):
        await put_all(ctx, dut.i, bad_words + golden_words([good]), rng=rng, stall=stall)

    async def control(ctx):
        crng = random.Random(4)
        await stream_put(ctx, dut.count, len(bad) + 13, rng=crng, stall=stall)
        out = await _drain_plane(ctx, dut, crng, stall)
        assert [d for d, _ in out[:len(bad)]] == bad
        assert len(out) == emitted and all(d == 0 for d, _ in out[len(bad):])
        await ctx.tick()
        assert ctx.get(dut.error) and not ctx.get(dut.busy)
        for _ in range(5):                      # sticky while idle
            await ctx.tick()
            assert ctx.get(dut.error)
        await stream_put(ctx, dut.count, len(good), rng=crng, stall=stall)
        assert not ctx.get(dut.error)           # cleared by the new count
        out = await get_n(ctx, dut.o, len(good), rng=crng, stall=stall)
        assert [(int(p.data), int(p.last)) for p in out] == golden_decoded([good])
        await ctx.tick()
        assert not ctx.get(dut.error) and not ctx.get(dut.busy)

    run_testbenches(dut, feeder, control, deadline_cycles=2000)


@pytest.mark.parametrize("stall", STALLS)
def test_decoder_error_count_reached_without_last_bit(stall):
    """(b) Count reached in a word whose bit 63 is 0 (the last word's bit cleared)."""
    bad = [1, 0, 2, 0, 0, 0, 3, 4, 5, 6]
    good = [7, 0, 0, 0, 8]
    bad_words = golden_words([bad])
    bad_words[-1] &= ~(1 << RLC_LAST_BIT)
    with pytest.raises(ValueError, match="clear"):
        golden.rlc_decode(np.array(bad_words, dtype=np.uint64), len(bad))
    dut = RLCDecoder()

    async def feeder(ctx):
        await put_all(ctx, dut.i, bad_words + golden_words([good]), rng=random.Random(5),
                      stall=stall)

    async def control(ctx):
        crng = random.Random(6)
        await stream_put(ctx, dut.count, len(bad), rng=crng, stall=stall)
        out = await get_n(ctx, dut.o, len(bad), rng=crng, stall=stall)
        assert [(int(p.data), int(p.last)) for p in out] == golden_decoded([bad])
        await ctx.tick()
        assert ctx.get(dut.error) and not ctx.get(dut.busy)
        await stream_put(ctx, dut.count, len(good), rng=crng, stall=stall)
        assert not ctx.get(dut.error)
        out = await get_n(ctx, dut.o, len(good), rng=crng, stall=stall)
        assert [(int(p.data), int(p.last)) for p in out] == golden_decoded([good])
        await ctx.tick()
        assert not ctx.get(dut.error) and not ctx.get(dut.busy)

    run_testbenches(dut, feeder, control, deadline_cycles=2000)


def test_decoder_error_count_short_consumes_no_further_words():
    """(b) Count reached early inside a multi-word stream: the rest stays in ``i``."""
    bad = list(range(1, 31))                 # 10 words, none but the last with bit 63
    good = [0, 0, 9]
    bad_words = golden_words([bad])
    with pytest.raises(ValueError, match="clear"):
        golden.rlc_decode(np.array(bad_words, dtype=np.uint64), 4)
    dut = RLCDecoder()

    async def script(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.count.payload, 4)        # reached in the second word
        ctx.set(dut.count.valid, 1)
        await ctx.tick().until(dut.count.ready)
        ctx.set(dut.count.valid, 0)
        got, taken = [], 0
        for _ in range(40):
            ctx.set(dut.i.payload, bad_words[taken])
            ctx.set(dut.i.valid, 1)
            _, _, ready, ovalid, opay = await ctx.tick().sample(dut.i.ready, dut.o.valid,
                                                                dut.o.payload)
            taken += bool(ready)
            if ovalid:
                got.append((int(opay.data), int(opay.last)))
        assert got == [(1, 0), (2, 0), (3, 0), (4, 1)]
        assert taken == 2                    # words 0 and 1 (which reaches the count), no more
        assert ctx.get(dut.error) and not ctx.get(dut.busy)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 0)
        # The driver skips the rest of the bad stream; a good plane follows.
        await stream_put(ctx, dut.count, len(good))
        assert not ctx.get(dut.error)
        for w in golden_words([good]):
            await stream_put(ctx, dut.i, w)
        out = await get_n(ctx, dut.o, len(good))
        assert [(int(p.data), int(p.last)) for p in out] == golden_decoded([good])
        assert not ctx.get(dut.error)

    run_testbenches(dut, script, deadline_cycles=1000)


def test_decoder_rejects_bad_width():
    assert_rejected(RLCDecoder, 0, match="data_width")


def test_decoder_verilog():
    text = verilog.convert(RLCDecoder(16), name="rlc_decoder", emit_src=False)
    assert "module rlc_decoder" in text


# -- round trip -------------------------------------------------------------------------

def test_encoder_decoder_round_trip():
    """Hardware encoder into hardware decoder, both stalled, several planes."""
    rng = random.Random(77)
    planes = [random_plane(rng, n, z) for n, z in ((64, 0.7), (1, 0.0), (90, 0.95), (33, 1.0))]
    enc, dec = RLCEncoder(), RLCDecoder()
    from amaranth import Module
    from amaranth.lib import wiring
    m = Module()
    m.submodules.enc, m.submodules.dec = enc, dec
    wiring.connect(m, enc.o, dec.i)
    values = to_values(planes)
    got = []

    async def producer(ctx):
        await put_all(ctx, enc.i, values, rng=random.Random(1), stall=0.3)

    async def counter(ctx):
        await put_all(ctx, dec.count, [len(p) for p in planes], rng=random.Random(2), stall=0.3)

    async def consumer(ctx):
        out = await get_n(ctx, dec.o, len(values), rng=random.Random(3), stall=0.3)
        got.extend({"data": int(p.data), "last": int(p.last)} for p in out)

    run_testbenches(m, producer, counter, consumer, deadline_cycles=20 * len(values))
    assert got == values
