"""Amaranth-simulation helpers for ``amaranth.lib.stream`` interfaces.

One place for the stream drivers every unit test uses (as in Glasgow's
``gateware/stream.py``). Stalls come from a seeded ``random.Random`` so a failure is
reproducible: ``stall`` is the probability that the driver idles for a cycle before each
transfer, on the valid side (``stream_put``) or the ready side (``stream_get``).
"""

from __future__ import annotations

import random

__all__ = ["stream_put", "stream_get", "put_all", "get_n", "get_n_timed",
           "run_testbenches", "assert_rejected"]


async def _idle(ctx, rng, stall):
    while rng is not None and stall > 0 and rng.random() < stall:
        await ctx.tick()


async def stream_put(ctx, stream, payload, *, rng=None, stall=0.0):
    """Transfer one ``payload`` into ``stream`` (we drive valid/payload, DUT drives ready)."""
    await _idle(ctx, rng, stall)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, stall=0.0):
    """Receive one payload from ``stream`` (DUT drives valid/payload, we drive ready)."""
    await _idle(ctx, rng, stall)
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_all(ctx, stream, payloads, *, rng=None, stall=0.0):
    for p in payloads:
        await stream_put(ctx, stream, p, rng=rng, stall=stall)


async def get_n(ctx, stream, n, *, rng=None, stall=0.0):
    return [await stream_get(ctx, stream, rng=rng, stall=stall) for _ in range(n)]


async def get_n_timed(ctx, stream, n):
    """Receive ``n`` payloads with ready held high; returns (payloads, cycles elapsed)."""
    ctx.set(stream.ready, 1)
    out, cycles = [], 0
    while len(out) < n:
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        cycles += 1
        if valid:
            out.append(payload)
    ctx.set(stream.ready, 0)
    return out, cycles


def assert_rejected(cls, *args, match):
    """``cls(*args)`` raises ``ValueError`` matching ``match``; the half-built Elaboratable
    is collected here so its "created but never used" warning does not leak into another
    test."""
    import gc
    import warnings

    import pytest
    from amaranth.hdl import UnusedElaboratable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            cls(*args)
        gc.collect()


def run_testbenches(dut, *testbenches, deadline_cycles=None, vcd=None, clock_period=1e-6):
    """Simulate ``dut`` with a ``sync`` clock and the given ``async def tb(ctx)`` functions.

    ``deadline_cycles`` bounds the run: a hang raises ``AssertionError`` instead of looping
    forever.
    """
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(clock_period)
    done = [False] * len(testbenches)

    def wrap(i, tb):
        async def run(ctx):
            await tb(ctx)
            done[i] = True
        return run

    for i, tb in enumerate(testbenches):
        sim.add_testbench(wrap(i, tb))

    def go():
        if deadline_cycles is None:
            sim.run()
            return
        # Advance step by step so that a hang fails the test instead of looping forever.
        from amaranth.sim.core import _seconds_to_femtos
        limit = _seconds_to_femtos(deadline_cycles * clock_period)
        while sim.advance():
            if sim._engine.now > limit:
                raise AssertionError(
                    f"simulation did not finish within {deadline_cycles} cycles "
                    f"(testbenches done: {done})")

    if vcd:
        with sim.write_vcd(vcd):
            go()
    else:
        go()
    return sim


def seeded(seed):
    """A ``random.Random`` for stall patterns."""
    return random.Random(seed)
