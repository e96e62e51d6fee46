"""Amaranth-simulation tests of Requantize and ReLU (hw/postproc.py).

The expected values come straight from the numerics contract of DESIGN.md section 2,
written out in plain Python integers below (``sw_driver.golden.conv2d`` computes the same
formula internally but exposes no per-value helper).
"""

import random

import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring

from hw.postproc import ReLU, Requantize
from sim_tests.support.stream import get_n, put_all, run_testbenches, assert_rejected

STALLS = [0.0, 0.3]




# -- contract (DESIGN.md section 2) ---------------------------------------------------------

def requantize_ref(acc, shift, data_width):
    """``saturate(round_half_up(acc >> shift))`` to signed ``data_width`` bits."""
    y = acc if shift == 0 else (acc + (1 << (shift - 1))) >> shift   # Python >> is floor
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    return max(lo, min(hi, y))


def relu_ref(y, enable):
    return max(y, 0) if enable else y


def psum_samples(rng, psum_width, shift, n_random=12):
    """Extremes, rounding ties and their neighbours, saturation edges, random values."""
    lo, hi = -(1 << (psum_width - 1)), (1 << (psum_width - 1)) - 1
    vals = {lo, lo + 1, hi, hi - 1, 0, 1, -1}
    if shift > 0:
        half = 1 << (shift - 1)
        for k in (-3, -1, 0, 1, 2):
            for d in (-1, 0, 1):
                vals.add(k * (1 << shift) + half + d)
                vals.add(k * (1 << shift) - half + d)
    for _ in range(n_random):
        vals.add(rng.randint(lo, hi))
        vals.add(rng.randint(-(1 << min(psum_width - 1, shift + 17)),
                             (1 << min(psum_width - 1, shift + 17)) - 1))
    vals = sorted(v for v in vals if lo <= v <= hi)
    rng.shuffle(vals)
    return vals


# -- harness ------------------------------------------------------------------------------

def run_batches(top, ends, batches, set_control, *, stall, seed):
    """Stream each ``(key, payloads)`` batch from ``ends.i`` to ``ends.o`` of ``top`` (a
    component, or a module around a chain); ``set_control(ctx, key)`` sets the static control
    inputs for a batch while the pipeline is empty. Returns [(data, last)] per batch."""
    got = [[] for _ in batches]
    received = [0]

    async def producer(ctx):
        rng = random.Random(seed)
        for b, (key, payloads) in enumerate(batches):
            while received[0] < b:                 # previous batch fully drained
                await ctx.tick()
            set_control(ctx, key)
            await put_all(ctx, ends.i, payloads, rng=rng, stall=stall)

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for b, (_, payloads) in enumerate(batches):
            out = await get_n(ctx, ends.o, len(payloads), rng=rng, stall=stall)
            got[b] = [(int(p.data), int(p.last)) for p in out]
            received[0] = b + 1
        for _ in range(5):
            await ctx.tick()
            assert not ctx.get(ends.o.valid), "extra output"

    total = sum(len(p) for _, p in batches)
    run_testbenches(top, producer, consumer, deadline_cycles=20 * total + 100)
    return got


def with_last(values, rng):
    return [{"data": v, "last": int(rng.random() < 0.2)} for v in values]


# -- Requantize ---------------------------------------------------------------------------

@pytest.mark.parametrize("stall", STALLS)
@pytest.mark.parametrize("psum_width,data_width",
                         [(32, 16), (16, 16), (24, 8), (8, 16), (64, 32)])
def test_requantize_all_shifts(psum_width, data_width, stall):
    rng = random.Random(psum_width * 100 + data_width)
    dut = Requantize(psum_width, data_width)
    batches = [(s, with_last(psum_samples(rng, psum_width, s), rng))
               for s in range(psum_width)]

    def set_shift(ctx, s):
        ctx.set(dut.output_shift, s)

    got = run_batches(dut, dut, batches, set_shift, stall=stall, seed=7)
    for (s, payloads), out in zip(batches, got):
        expected = [(requantize_ref(p["data"], s, data_width), p["last"]) for p in payloads]
        assert out == expected, f"output_shift={s}"


def test_requantize_throughput_one_value_per_cycle():
    dut = Requantize(32, 16)
    rng = random.Random(1)
    payloads = with_last([rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(200)], rng)
    result = {}

    async def producer(ctx):
        ctx.set(dut.output_shift, 9)
        await put_all(ctx, dut.i, payloads)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        out, cycles = [], 0
        while len(out) < len(payloads):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles += 1
            if valid:
                out.append((int(payload.data), int(payload.last)))
        result["out"], result["cycles"] = out, cycles

    run_testbenches(dut, producer, consumer, deadline_cycles=1000)
    assert result["out"] == [(requantize_ref(p["data"], 9, 16), p["last"]) for p in payloads]
    assert result["cycles"] <= len(payloads) + 1, result["cycles"]


def test_requantize_rejects_bad_width():
    assert_rejected(Requantize, 1, 16, match="psum_width")
    assert_rejected(ReLU, 1, match="data_width")


def test_requantize_verilog():
    text = verilog.convert(Requantize(32, 16), name="requantize", emit_src=False)
    assert "module requantize" in text


# -- ReLU ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stall", STALLS)
@pytest.mark.parametrize("data_width", [16, 8])
def test_relu(data_width, stall):
    rng = random.Random(data_width)
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    values = [lo, lo + 1, -1, 0, 1, hi - 1, hi] + [rng.randint(lo, hi) for _ in range(60)]
    dut = ReLU(data_width)
    batches = [(en, with_last(values, rng)) for en in (1, 0, 1)]

    def set_enable(ctx, en):
        ctx.set(dut.enable, en)

    got = run_batches(dut, dut, batches, set_enable, stall=stall, seed=3)
    for (en, payloads), out in zip(batches, got):
        assert out == [(relu_ref(p["data"], en), p["last"]) for p in payloads], f"enable={en}"


def test_relu_verilog():
    text = verilog.convert(ReLU(16), name="relu", emit_src=False)
    assert "module relu" in text


# -- chained, as on the ofmap path ----------------------------------------------------------

@pytest.mark.parametrize("stall", STALLS)
def test_requantize_then_relu(stall):
    """Requantize -> ReLU connected with ``wiring.connect``: y = max(saturate(...), 0)."""
    pw, dw = 32, 16
    rq, relu = Requantize(pw, dw), ReLU(dw)
    m = Module()
    m.submodules.rq, m.submodules.relu = rq, relu
    wiring.connect(m, rq.o, relu.i)
    rng = random.Random(5)
    batches = [((s, en), with_last(psum_samples(rng, pw, s, n_random=6), rng))
               for s, en in ((0, 1), (8, 1), (8, 0), (16, 1), (31, 1), (31, 0))]

    class Chain:                                    # the stream ends seen by run_batches
        i, o = rq.i, relu.o

    def set_control(ctx, key):
        s, en = key
        ctx.set(rq.output_shift, s)
        ctx.set(relu.enable, en)

    got = run_batches(m, Chain, batches, set_control, stall=stall, seed=11)
    for ((s, en), payloads), out in zip(batches, got):
        expected = [(relu_ref(requantize_ref(p["data"], s, dw), en), p["last"])
                    for p in payloads]
        assert out == expected, f"output_shift={s} relu={en}"

