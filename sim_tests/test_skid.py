# amaranth: UnusedElaboratable=no
"""Amaranth-simulation tests of the stream register slice (hw/skid.py)."""

from __future__ import annotations

import random

import pytest
from amaranth import unsigned

from hw.skid import SkidBuffer
from sim_tests.support.stream import get_n, get_n_timed, put_all, run_testbenches


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stall_in,stall_out", [(0.0, 0.5), (0.5, 0.0), (0.4, 0.4)])
def test_order_under_random_stalls(seed, stall_in, stall_out):
    """Every word arrives once, in order, whatever the valid and ready patterns."""
    dut = SkidBuffer(unsigned(16))
    rng = random.Random(seed)
    words = [rng.getrandbits(16) for _ in range(200)]
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, words, rng=random.Random(seed + 100), stall=stall_in)

    async def consumer(ctx):
        got.extend(await get_n(ctx, dut.o, len(words), rng=random.Random(seed + 200),
                               stall=stall_out))

    run_testbenches(dut, producer, consumer, deadline_cycles=5000)
    assert got == words


def test_full_rate_and_registered_outputs():
    """One word per cycle with both sides always ready; i.ready and o.valid are flops."""
    dut = SkidBuffer(unsigned(8))
    words = list(range(1, 65))
    result = {}

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for w in words:
            ctx.set(dut.i.payload, w)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        result["out"], result["cycles"] = await get_n_timed(ctx, dut.o, len(words))

    run_testbenches(dut, producer, consumer, deadline_cycles=500)
    assert result["out"] == words
    assert result["cycles"] == len(words) + 1        # one cycle of latency, then 1/cycle


def test_ready_does_not_depend_on_consumer():
    """With the consumer stalled, the slice takes exactly two words, then holds them."""
    dut = SkidBuffer(unsigned(8))
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        accepted = 0
        for w in range(10):
            ctx.set(dut.i.payload, w + 1)
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            accepted += ready
        seen["accepted"] = accepted
        ctx.set(dut.i.valid, 0)
        seen["out"] = await get_n(ctx, dut.o, 2)

    run_testbenches(dut, tb, deadline_cycles=100)
    assert seen["accepted"] == 2
    assert seen["out"] == [1, 2]
