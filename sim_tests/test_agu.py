# amaranth: UnusedElaboratable=no
"""Amaranth-simulation tests of the address generator and the GLB element streams
(hw/agu.py)."""

import itertools
import random
from collections import deque

import pytest
from amaranth import Elaboratable, Module, Shape, Signal, signed
from amaranth.back import verilog
from amaranth.lib import wiring

from hw.agu import AGU, AGU_COORDS, ElementReader, ElementWriter, agu_desc, agu_steps
from hw.config import preset
from hw.glb import GlobalBuffer
from hw.layouts import AGU_LEVELS, ELEM_ADDR_BITS, TAG_BITS, agu_layout, lanes
from sim_tests.support.stream import get_n, put_all, run_testbenches, seeded, stream_get

TINY = preset("tiny")          # 8 banks x 256 words = 2048 words
STALL = 0.3


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------

def naive_steps(counts, strides, base=None, H=0, W=0, pad_check=False):
    """Straight nested-loop enumeration of a nest from counts and strides (no jumps)."""
    base = base or {}
    n = len(counts)
    out = []
    final = tuple(c - 1 for c in counts)
    for idx in itertools.product(*(range(c) for c in counts)):
        co = {c: base.get(c, 0) + sum(i * s for i, s in zip(idx, strides.get(c, [0] * n)))
              for c in AGU_COORDS}
        inb = (not pad_check) or (0 <= co["y"] < H and 0 <= co["x"] < W)
        out.append((co["addr"] % (1 << ELEM_ADDR_BITS), co["tag"] % (1 << TAG_BITS),
                    int(inb), int(idx == final)))
    return out


def random_nest(rng, *, max_steps=120, addr_limit=1 << ELEM_ADDR_BITS, pad=None,
                addr_stride=40, hw_max=6):
    """Random (counts, strides, base, H, W, pad_check) whose in-bounds addresses lie in
    ``[0, addr_limit)``; padding steps may point anywhere."""
    while True:
        n = rng.randint(1, AGU_LEVELS)
        counts = [rng.choice([1, 1, 2, 2, 3, 4, 5, 7]) for _ in range(n)]
        total = 1
        for c in counts:
            total *= c
        if 2 <= total <= max_steps:
            break
    strides = {"addr": [rng.randint(-addr_stride, addr_stride) for _ in range(n)],
               "tag": [rng.randint(-3, 3) for _ in range(n)],
               "y": [rng.randint(-2, 2) for _ in range(n)],
               "x": [rng.randint(-2, 2) for _ in range(n)]}
    pad_check = rng.random() < 0.5 if pad is None else pad

    def span(c):
        lo = sum(min(0, (k - 1) * s) for k, s in zip(counts, strides[c]))
        hi = sum(max(0, (k - 1) * s) for k, s in zip(counts, strides[c]))
        return lo, hi

    lo, hi = span("addr")
    base_addr = rng.randint(-lo, max(-lo, addr_limit - 1 - hi))
    lo, hi = span("tag")
    base_tag = rng.randint(-lo, max(-lo, (1 << TAG_BITS) - 1 - hi))
    base = {"addr": base_addr, "tag": base_tag,
            "y": rng.randint(-3, 3), "x": rng.randint(-3, 3)}
    H, W = rng.randint(0, hw_max), rng.randint(0, hw_max)
    return counts, strides, base, H, W, pad_check


def make_desc(nest):
    counts, strides, base, H, W, pad_check = nest
    return agu_desc(counts, strides, base=base, H=H, W=W, pad_check=pad_check)


def to_signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class GlbModel:
    """Word-level model of the GLB contents with element access."""

    def __init__(self, words, elem_bits):
        self.words = list(words)
        self.eb = elem_bits
        self.nl = lanes(elem_bits)

    def write(self, addr, value):
        w, lane = divmod(addr, self.nl)
        sh = lane * self.eb
        m = ((1 << self.eb) - 1) << sh
        self.words[w] = (self.words[w] & ~m) | (((value & ((1 << self.eb) - 1)) << sh))

    def read(self, addr):
        w, lane = divmod(addr, self.nl)
        return to_signed(self.words[w] >> (lane * self.eb), self.eb)


def step_tuple(p):
    return (p.addr, p.tag, p.inb, p.last)


# ---------------------------------------------------------------------------------------
# Reference model and descriptor helper
# ---------------------------------------------------------------------------------------

def test_agu_steps_matches_naive_enumeration():
    rng = random.Random(1)
    padded = 0
    for _ in range(400):
        nest = random_nest(rng, max_steps=300)
        ref = agu_steps(make_desc(nest))
        assert ref == naive_steps(*nest), nest
        padded += sum(1 for s in ref if not s[2])
    assert padded > 0


def test_agu_steps_negative_addresses_wrap_under_padding():
    # y = -1 row of a padded 4x4 image at address 0: padding steps have negative addresses.
    counts, strides = [3, 3], {"addr": [4, 1], "y": [1, 0], "x": [0, 1]}
    base = {"addr": -5 % (1 << ELEM_ADDR_BITS), "y": -1, "x": -1}
    with pytest.raises(ValueError, match="base_addr"):
        agu_desc(counts, strides, base={"addr": -5, "y": -1, "x": -1}, H=4, W=4)
    d = agu_desc(counts, strides, base=base, H=4, W=4, pad_check=True)
    assert d == agu_desc(counts, strides, base={"addr": -5, "y": -1, "x": -1}, H=4, W=4,
                         pad_check=True)
    steps = agu_steps(d)
    assert [s[2] for s in steps] == [0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert [s[0] for s in steps if s[2]] == [0, 1, 4, 5]
    assert steps == naive_steps(counts, strides, base, 4, 4, True)


def test_agu_desc_jumps_and_padding_levels():
    d = agu_desc([2, 3, 4], {"addr": [100, 10, 1]}, base={"addr": 7})
    assert d["count"] == [1, 1, 1, 2, 3, 4]
    assert d["jump_addr"] == [0, 0, 0, 100 - 2 * 10 - 3 * 1, 10 - 3 * 1, 1]
    assert d["jump_tag"] == [0] * AGU_LEVELS
    assert d["base_addr"] == 7 and d["pad_check"] == 0
    agu_layout().const(d)                      # packs
    assert agu_steps(agu_desc([0, 3], {"addr": [1, 1]})) == []
    assert agu_steps(agu_desc([1])) == [(0, 0, 1, 1)]


@pytest.mark.parametrize("kwargs, field", [
    (dict(counts=[1 << 16]), r"count\[0\]"),
    (dict(counts=[2, -1]), r"count\[1\]"),
    (dict(counts=[1] * (AGU_LEVELS + 1)), "count"),
    (dict(counts=[]), "count"),
    (dict(counts=[2, 2], strides={"z": [1, 1]}), "unknown coordinate"),
    (dict(counts=[2, 2], strides={"addr": [1]}), "stride addr"),
    (dict(counts=[2, 2], strides={"y": [1 << 15, 0]}), r"jump_y\[4\]"),
    (dict(counts=[2, 3], strides={"x": [0, 20000]}), r"jump_x\[4\]"),
    (dict(counts=[2, 2], strides={"tag": [1 << 10, 0]}), r"jump_tag\[4\]"),
    (dict(counts=[2, 2], strides={"addr": [1 << 22, 0]}, pad_check=True),
     r"jump_addr\[4\]"),
    (dict(counts=[2, 2], strides={"addr": [-1, 0]}), "coordinate addr"),
    (dict(counts=[3], strides={"tag": [600]}), "coordinate tag"),
    (dict(counts=[3], strides={"y": [20000]}), "coordinate y"),
    (dict(counts=[2], base={"x": 1 << 15}), "base_x"),
    (dict(counts=[2], base={"tag": 1 << 10}), "base_tag"),
    (dict(counts=[2], H=1 << 16), "H"),
])
def test_agu_desc_errors(kwargs, field):
    kwargs = dict(kwargs)
    counts = kwargs.pop("counts")
    strides = kwargs.pop("strides", None)
    with pytest.raises(ValueError, match=field):
        agu_desc(counts, strides, **kwargs)


# ---------------------------------------------------------------------------------------
# AGU hardware
# ---------------------------------------------------------------------------------------

async def run_walk(ctx, agu, desc, *, rng=None, stall=0.0):
    """Start ``agu`` on ``desc`` (must be idle) and collect its steps until ``last``."""
    assert not ctx.get(agu.busy)
    ctx.set(agu.desc, desc)
    ctx.set(agu.start, 1)
    await ctx.tick()
    ctx.set(agu.start, 0)
    expected = agu_steps(desc)
    if not expected:
        for _ in range(4):
            assert not ctx.get(agu.busy) and not ctx.get(agu.o.valid)
            await ctx.tick()
        return []
    got = []
    while True:
        assert ctx.get(agu.busy)
        got.append(step_tuple(await stream_get(ctx, agu.o, rng=rng, stall=stall)))
        if got[-1][3] or len(got) > len(expected):
            break
    assert not ctx.get(agu.busy) and not ctx.get(agu.o.valid)
    return got


def test_agu_random_descriptors_back_to_back():
    rng = random.Random(7)
    nests = [random_nest(rng) for _ in range(30)]
    descs = [make_desc(n) for n in nests]
    descs.insert(1, agu_desc([3, 300], {"addr": [1000, -3], "tag": [1, 0]},
                             base={"addr": 900}))                   # long innermost count
    descs.insert(3, agu_desc([3, 0, 2], {"addr": [1, 1, 1]}))       # empty nest
    descs.insert(7, agu_desc([1]))                                   # single step
    descs.append(agu_desc([0]))
    stall_rng = seeded(11)
    results = []
    dut = AGU()

    async def tb(ctx):
        for i, d in enumerate(descs):
            results.append(await run_walk(ctx, dut, d, rng=stall_rng,
                                          stall=STALL if i % 3 else 0.0))
        # A start while busy is ignored: the second descriptor never runs.
        ctx.set(dut.desc, descs[0])
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.desc, descs[1])
        await ctx.tick()
        ctx.set(dut.start, 0)
        results.append([step_tuple(p) for p in await get_n(ctx, dut.o, len(agu_steps(descs[0])))])
        for _ in range(3):
            await ctx.tick()
            assert not ctx.get(dut.busy) and not ctx.get(dut.o.valid)

    run_testbenches(dut, tb, deadline_cycles=20000)
    for d, got in zip(descs + [descs[0]], results):
        assert got == agu_steps(d)
    assert sum(len(r) for r in results) > 300


def test_agu_without_pad_check_ignores_padding_fields():
    """``AGU(pad_check=False)`` walks addr and tag like the full AGU and marks every step
    in bounds, whatever the descriptor's y/x/H/W/pad_check fields say."""
    rng = random.Random(23)
    nests = [random_nest(rng) for _ in range(12)]
    descs = [make_desc(n) for n in nests]
    assert any(d["pad_check"] for d in descs)           # some would pad in the full AGU
    padded_steps = sum(not s[2] for d in descs for s in agu_steps(d))
    assert padded_steps > 0
    results = []
    dut = AGU(pad_check=False)
    assert not dut.pad_check and AGU().pad_check

    async def tb(ctx):
        for d in descs:
            results.append(await run_walk(ctx, dut, d, rng=seeded(5), stall=STALL))

    run_testbenches(dut, tb, deadline_cycles=20000)
    for d, got in zip(descs, results):
        want = [(a, t, 1, last) for a, t, _, last in agu_steps(d)]
        assert got == want


def test_agu_registered_output_and_throughput():
    """One step per cycle with ``o.ready`` held high; o.valid ignores o.ready."""
    d = agu_desc([4, 5, 6], {"addr": [100, 10, 1], "y": [1, 0, 0], "x": [0, 0, 1]},
                 base={"addr": 1000, "y": -1, "x": -2}, H=3, W=3, pad_check=True)
    n = len(agu_steps(d))
    dut = AGU()
    timing = {}

    async def tb(ctx):
        ctx.set(dut.desc, d)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        # o.ready low: the first step appears and holds.
        for _ in range(4):
            await ctx.tick()
        assert ctx.get(dut.o.valid)
        first = step_tuple(ctx.get(dut.o.payload))
        ctx.set(dut.o.ready, 1)
        got, cycles = [], 0
        while not got or not got[-1][3]:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles += 1
            if valid:
                got.append(step_tuple(payload))
        timing["cycles"] = cycles
        assert got[0] == first
        assert got == agu_steps(d)
        # Restart, unstalled from the start.
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles, count = 0, 0
        while True:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles += 1
            count += valid
            if valid and payload.last:
                break
        timing["restart"] = cycles
        assert count == n

    run_testbenches(dut, tb, deadline_cycles=5000)
    assert timing["cycles"] == n
    assert timing["restart"] <= n + 2


# ---------------------------------------------------------------------------------------
# ElementReader / ElementWriter against an emulated GLB (random stalls everywhere)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("elem_bits, shape", [(16, signed(16)), (32, signed(24)),
                                              (64, signed(40))])
def test_reader_emulated_glb_stalls(elem_bits, shape):
    rng = random.Random(elem_bits)
    nl = lanes(elem_bits)
    words = [rng.getrandbits(64) for _ in range(64)]
    model = GlbModel(words, elem_bits)
    steps = []
    for _ in range(300):
        steps.append({"addr": rng.randrange(64 * nl), "tag": rng.randrange(1 << TAG_BITS),
                      "inb": int(rng.random() < 0.75), "last": int(rng.random() < 0.1)})
    width = Shape.cast(shape).width
    expected = [(to_signed(model.read(s["addr"]), width) if s["inb"] else 0, s["tag"], s["last"])
                for s in steps]
    expected_reads = [s["addr"] // nl for s in steps if s["inb"]]
    dut = ElementReader(elem_bits, shape, 6)
    done = [False]
    reads = []
    got = []
    g_rng = seeded(5)

    async def source(ctx):
        await put_all(ctx, dut.i, steps, rng=seeded(3), stall=STALL)

    async def sink(ctx):
        for p in await get_n(ctx, dut.o, len(steps), rng=seeded(4), stall=STALL):
            got.append((p.data, p.tag, p.last))
        for _ in range(5):
            await ctx.tick()
            assert not ctx.get(dut.o.valid) and not ctx.get(dut.busy)
        done[0] = True

    async def glb(ctx):
        queue = deque()
        while not done[0]:
            req_ready = g_rng.random() > STALL
            resp_valid = bool(queue) and g_rng.random() > STALL
            ctx.set(dut.glb.req.ready, req_ready)
            ctx.set(dut.glb.resp.valid, resp_valid)
            ctx.set(dut.glb.resp.payload, words[queue[0]] if resp_valid else 0)
            _, _, rq_v, rq_p, rs_r = await ctx.tick().sample(
                dut.glb.req.valid, dut.glb.req.payload, dut.glb.resp.ready)
            if resp_valid and rs_r:
                queue.popleft()
            if rq_v and req_ready:
                queue.append(rq_p)
                reads.append(rq_p)
        assert not queue

    run_testbenches(dut, source, sink, glb, deadline_cycles=5000)
    assert got == expected
    assert reads == expected_reads


@pytest.mark.parametrize("elem_bits, shape", [(16, signed(8)), (32, signed(32)),
                                              (64, signed(40))])
def test_writer_payload_and_stalls(elem_bits, shape):
    rng = random.Random(100 + elem_bits)
    nl = lanes(elem_bits)
    gpe = elem_bits // 16
    width = Shape.cast(shape).width
    n = 120
    steps = [{"addr": rng.randrange(1 << 12), "tag": rng.randrange(1 << TAG_BITS),
              "inb": int(rng.random() < 0.8), "last": int(i == n - 1)} for i in range(n)]
    values = [rng.randrange(-(1 << (width - 1)), 1 << (width - 1)) for _ in range(n)]
    expected = []
    for s, v in zip(steps, values):
        if s["inb"]:
            lane = s["addr"] % nl
            expected.append({"addr": (s["addr"] // nl) % (1 << 9),
                             "data": (v % (1 << elem_bits)) << (lane * elem_bits),
                             "mask": ((1 << gpe) - 1) << (lane * gpe)})
    dut = ElementWriter(elem_bits, shape, 9)
    got = []
    pulses = []

    async def steps_tb(ctx):
        await put_all(ctx, dut.addr_i, steps, rng=seeded(1), stall=STALL)

    async def data_tb(ctx):
        await put_all(ctx, dut.data_i, values, rng=seeded(2), stall=STALL)

    async def sink(ctx):
        s_rng = seeded(3)
        while len(got) < len(expected) or not pulses:
            ready = s_rng.random() > STALL
            ctx.set(dut.glb.ready, ready)
            _, _, valid, payload, lw = await ctx.tick().sample(
                dut.glb.valid, dut.glb.payload, dut.last_written)
            if lw:
                pulses.append(len(got) + (1 if valid and ready else 0))
            if valid and ready:
                got.append({"addr": payload.addr, "data": payload.data, "mask": payload.mask})
        ctx.set(dut.glb.ready, 1)
        for _ in range(5):
            await ctx.tick()
            assert not ctx.get(dut.glb.valid) and not ctx.get(dut.last_written)

    run_testbenches(dut, steps_tb, data_tb, sink, deadline_cycles=5000)
    assert got == expected
    assert pulses == [len(expected)]          # one pulse, after every write


# ---------------------------------------------------------------------------------------
# Writer and reader around a real GlobalBuffer
# ---------------------------------------------------------------------------------------

class GlbTop(Elaboratable):
    """AGU -> ElementWriter -> GLB write port; AGU -> ElementReader <- GLB read port."""

    def __init__(self, elem_bits, wshape, rshape, init=None):
        self.glb = GlobalBuffer(TINY, read_ports=1, write_ports=1, init=init)
        aw = self.glb.addr_width
        self.agu_w, self.agu_r = AGU(), AGU()
        self.wr = ElementWriter(elem_bits, wshape, aw)
        self.rd = ElementReader(elem_bits, rshape, aw)
        self.req_count = Signal(32)
        self.wr_count = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.glb, m.submodules.wr, m.submodules.rd = self.glb, self.wr, self.rd
        m.submodules.agu_w, m.submodules.agu_r = self.agu_w, self.agu_r
        wiring.connect(m, self.agu_w.o, self.wr.addr_i)
        wiring.connect(m, self.wr.glb, self.glb.wr[0])
        wiring.connect(m, self.agu_r.o, self.rd.i)
        wiring.connect(m, self.rd.glb, self.glb.rd[0])
        req, wr = self.glb.rd[0].req, self.glb.wr[0]
        with m.If(req.valid & req.ready):
            m.d.sync += self.req_count.eq(self.req_count + 1)
        with m.If(wr.valid & wr.ready):
            m.d.sync += self.wr_count.eq(self.wr_count + 1)
        return m


async def start(ctx, agu, desc):
    ctx.set(agu.desc, desc)
    ctx.set(agu.start, 1)
    await ctx.tick()
    ctx.set(agu.start, 0)


@pytest.mark.parametrize("elem_bits, wshape, rshape", [
    (16, signed(16), signed(16)),
    (16, signed(8), signed(24)),      # writer sign-extends 8 -> 16, reader 16 -> 24
    (32, signed(32), signed(32)),
    (32, signed(24), signed(20)),     # reader truncates 32 -> 20
])
def test_write_then_read_through_glb(elem_bits, wshape, rshape):
    rng = random.Random(elem_bits * 1000 + Shape.cast(wshape).width)
    nl = lanes(elem_bits)
    init = [rng.getrandbits(64) for _ in range(TINY.glb_words)]
    model = GlbModel(init, elem_bits)
    n_elems = TINY.glb_words * nl
    ww, rw = Shape.cast(wshape).width, Shape.cast(rshape).width

    def pick(**kw):
        """A random nest with at least 20 in-bounds steps and, when padded, some padding."""
        while True:
            nest = random_nest(rng, max_steps=150, addr_limit=n_elems, addr_stride=300,
                               hw_max=8, **kw)
            inb = [s[2] for s in agu_steps(make_desc(nest))]
            if sum(inb) >= 20 and (not nest[5] or not all(inb)):
                return nest

    wnest = pick()
    wdesc = make_desc(wnest)
    wsteps = agu_steps(wdesc)
    values = [rng.randrange(-(1 << (ww - 1)), 1 << (ww - 1)) for _ in wsteps]
    # Read back what was written (with padding if the write had none), then a random
    # padded nest.
    counts, strides, base, H, W, wpad = wnest
    for _ in range(1000):
        back = agu_desc(counts, strides, base=base, H=H, W=W, pad_check=True)
        inb = [s[2] for s in agu_steps(back)]
        if any(inb) and not all(inb):
            break
        H, W = rng.randint(1, 8), rng.randint(1, 8)
    rdescs = [back, make_desc(pick(pad=True))]
    for s, v in zip(wsteps, values):
        if s[2]:
            model.write(s[0], v)
    rsteps = [agu_steps(d) for d in rdescs]
    expected = [[(to_signed(model.read(a), rw) if inb else 0, tag, last)
                 for a, tag, inb, last in steps] for steps in rsteps]
    n_reads = [sum(s[2] for s in steps) for steps in rsteps]
    n_pads = [len(steps) - r for steps, r in zip(rsteps, n_reads)]
    assert sum(n_pads) > 0 and min(n_reads) > 0
    dut = GlbTop(elem_bits, wshape, rshape, init=init)
    results = []

    async def tb(ctx):
        await start(ctx, dut.agu_w, wdesc)
        await put_all(ctx, dut.wr.data_i, values, rng=seeded(1), stall=STALL)
        while not ctx.get(dut.wr.last_written):
            await ctx.tick()
        await ctx.tick()
        assert ctx.get(dut.wr_count) == sum(s[2] for s in wsteps)
        for d, steps, nr in zip(rdescs, rsteps, n_reads):
            before = ctx.get(dut.req_count)
            await start(ctx, dut.agu_r, d)
            got = await get_n(ctx, dut.rd.o, len(steps), rng=seeded(2), stall=STALL)
            results.append([(p.data, p.tag, p.last) for p in got])
            for _ in range(3):
                await ctx.tick()
            assert not ctx.get(dut.rd.busy) and not ctx.get(dut.agu_r.busy)
            assert ctx.get(dut.req_count) - before == nr      # padding reads nothing
        assert not ctx.get(dut.glb.error)

    run_testbenches(dut, tb, deadline_cycles=20000)
    assert results == expected


def test_reader_writer_throughput_through_glb():
    """Unstalled: the reader delivers one element per cycle, the writer writes one per
    cycle (``n`` elements in ``n`` + a small constant cycles from ``start``)."""
    rng = random.Random(9)
    init = [rng.getrandbits(64) for _ in range(TINY.glb_words)]
    model = GlbModel(init, 16)
    # 8 rows x 30 columns with a one-element border of padding, 16-bit elements.
    rdesc = agu_desc([10, 32], {"addr": [30, 1], "y": [1, 0], "x": [0, 1]},
                     base={"addr": 100 - 31, "y": -1, "x": -1}, H=8, W=30, pad_check=True)
    rsteps = agu_steps(rdesc)
    wdesc = agu_desc([7, 40], {"addr": [41, 1]}, base={"addr": 4000})
    wsteps = agu_steps(wdesc)
    values = [rng.randrange(-32768, 32768) for _ in wsteps]
    expected = [(to_signed(model.read(a), 16) if inb else 0) for a, _, inb, _ in rsteps]
    dut = GlbTop(16, signed(16), signed(16), init=init)
    timing = {}

    async def tb(ctx):
        await start(ctx, dut.agu_r, rdesc)
        ctx.set(dut.rd.o.ready, 1)
        got, cycles = [], 0
        while len(got) < len(rsteps):
            _, _, valid, payload = await ctx.tick().sample(dut.rd.o.valid, dut.rd.o.payload)
            cycles += 1
            if valid:
                got.append(payload.data)
        timing["read"] = cycles
        assert got == expected
        await start(ctx, dut.agu_w, wdesc)
        ctx.set(dut.wr.data_i.valid, 1)
        cycles, i = 0, 0
        while True:
            ctx.set(dut.wr.data_i.payload, values[min(i, len(values) - 1)])
            _, _, ready, lw = await ctx.tick().sample(dut.wr.data_i.ready, dut.wr.last_written)
            cycles += 1
            i += ready
            if lw:
                break
        ctx.set(dut.wr.data_i.valid, 0)
        timing["write"] = cycles
        assert i == len(wsteps)

    run_testbenches(dut, tb, deadline_cycles=5000)
    n, nw = len(rsteps), len(wsteps)
    print(f"reader: {n} elements in {timing['read']} cycles after start; "
          f"writer: {nw} writes in {timing['write']} cycles after start")
    assert timing["read"] <= n + 4
    assert timing["write"] <= nw + 4


# ---------------------------------------------------------------------------------------
# Verilog
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, make", [
    ("agu", lambda: AGU()),
    ("element_reader", lambda: ElementReader(16, signed(16), 11)),
    ("element_reader64", lambda: ElementReader(64, signed(40), 11)),
    ("element_writer", lambda: ElementWriter(32, signed(24), 11)),
])
def test_verilog_conversion(name, make):
    text = verilog.convert(make(), name=name, emit_src=False)
    assert f"module {name}" in text


def test_element_parameter_errors():
    with pytest.raises(ValueError, match="elem_bits"):
        ElementReader(8, signed(8), 11)
    with pytest.raises(ValueError, match="signed"):
        ElementWriter(16, 16, 11)
    with pytest.raises(ValueError, match="addr_width"):
        ElementReader(16, signed(16), 0)
