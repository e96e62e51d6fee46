# amaranth: UnusedElaboratable=no
"""Amaranth-simulation tests of the DMA engines (hw/dma.py): LoadEngine and StoreEngine
wired to a real GlobalBuffer, against a Python DRAM model with random latency and stalls.

References: ``sw_driver.golden.rlc_encode`` (DESIGN.md section 3) for RLC words, and the
DESIGN.md section 2 formula, written out here with Python integers, for the ofmap values.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.back import verilog

from hw.config import preset
from hw.dma import LoadEngine, StoreEngine
from hw.glb import GlobalBuffer, glb_addr_width
from hw.layouts import LoadMode, act_bits, lanes, psum_bits
from sw_driver import golden
from sim_tests.support.stream import run_testbenches

TINY = preset("tiny")          # 8 banks x 256 words = 2048 GLB words
TINY1 = TINY.replace(psum_lanes=1)     # contiguous GLB psum planes (no psum lanes)
MASK64 = (1 << 64) - 1


# -- bench -------------------------------------------------------------------------------

class Bench(Elaboratable):
    """An engine wired to a one-read-port, one-write-port GlobalBuffer. The GLB is
    elaborated up front so testbenches can read its bank memories. The GLB streams pass
    through gates (``gate_*`` high: the transfer is held off), so a testbench can add
    GLB-side back-pressure and response stalls (:meth:`staller`)."""

    def __init__(self, engine, config, init):
        self.engine = engine
        self.config = config
        self.glb = GlobalBuffer(config, read_ports=1, write_ports=1, init=init)
        self.glb_module = self.glb.elaborate(None)
        self.banks = [self.glb_module.submodules[f"bank{b}"] for b in range(config.glb_banks)]
        self.gate_wr = Signal()
        self.gate_req = Signal()
        self.gate_resp = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.glb = self.glb_module
        m.submodules.engine = self.engine

        def gated(src, dst, gate):
            m.d.comb += [dst.payload.eq(src.payload), dst.valid.eq(src.valid & ~gate),
                         src.ready.eq(dst.ready & ~gate)]

        if isinstance(self.engine, LoadEngine):
            gated(self.engine.glb_wr, self.glb.wr[0], self.gate_wr)
        else:
            gated(self.engine.glb_rd.req, self.glb.rd[0].req, self.gate_req)
            gated(self.glb.rd[0].resp, self.engine.glb_rd.resp, self.gate_resp)
        return m

    def staller(self, stop, p, seed):
        """Testbench: each GLB gate closed with probability ``p`` per cycle."""
        async def tb(ctx):
            rng = random.Random(seed)
            while not stop[0]:
                for g in (self.gate_wr, self.gate_req, self.gate_resp):
                    ctx.set(g, rng.random() < p)
                await ctx.tick()
        return tb

    def read_glb(self, ctx):
        bw = self.config.glb_bank_words
        return [ctx.get(self.banks[a // bw].data[a % bw]) for a in range(self.config.glb_words)]


class Dram:
    """DRAM model. Reads: requests accepted with probability ``1 - req_stall`` per cycle,
    answered in order after ``latency`` (an int or a (lo, hi) range, drawn per request)
    extra cycles, each response withheld with probability ``resp_stall`` per cycle.
    Unmapped addresses return ``fill`` (None: random garbage). Writes: ready with
    probability ``1 - wr_stall`` per cycle."""

    def __init__(self, mem=None, *, seed=0, latency=(0, 10), req_stall=0.2, resp_stall=0.2,
                 wr_stall=0.2, fill=None):
        self.mem = dict(mem or {})
        self.rng = random.Random(seed)
        self.latency = latency
        self.req_stall, self.resp_stall, self.wr_stall = req_stall, resp_stall, wr_stall
        self.fill = fill
        self.reads = []          # addresses requested
        self.responses = 0       # responses taken by the engine
        self.writes = []         # (addr, data) in acceptance order
        self.pending = deque()

    def _lat(self):
        if isinstance(self.latency, int):
            return self.latency
        return self.rng.randint(*self.latency)

    def _word(self, addr):
        if addr in self.mem:
            return self.mem[addr]
        return self.rng.getrandbits(64) if self.fill is None else self.fill

    def reader(self, port, stop):
        async def tb(ctx):
            cycle, last_due = 0, 0
            req, resp = port.req, port.resp
            while not stop[0]:
                ctx.set(req.ready, self.rng.random() >= self.req_stall)
                show = bool(self.pending) and self.pending[0][0] <= cycle \
                    and self.rng.random() >= self.resp_stall
                ctx.set(resp.valid, show)
                if show:
                    ctx.set(resp.payload, self.pending[0][1])
                _, _, rv, rr, ra, sv, sr = await ctx.tick().sample(
                    req.valid, req.ready, req.payload, resp.valid, resp.ready)
                if sv and sr:
                    self.pending.popleft()
                    self.responses += 1
                if rv and rr:
                    last_due = max(last_due, cycle + 1 + self._lat())
                    self.pending.append((last_due, self._word(ra)))
                    self.reads.append(ra)
                cycle += 1
        return tb

    def writer(self, port, stop):
        async def tb(ctx):
            while not stop[0]:
                ctx.set(port.ready, self.rng.random() >= self.wr_stall)
                _, _, v, r, p = await ctx.tick().sample(port.valid, port.ready, port.payload)
                if v and r:
                    self.writes.append((p.addr, p.data))
        return tb


def controller(eng, descs, results, stop, *, between=None):
    """Run ``descs`` one after the other; ``results`` gets (cycles, error) per command,
    cycles counted from the start pulse to busy low. ``between(ctx, i)`` runs after
    command ``i``."""
    async def tb(ctx):
        for i, desc in enumerate(descs):
            ctx.set(eng.desc, desc)
            ctx.set(eng.start, 1)
            await ctx.tick()
            ctx.set(eng.start, 0)
            cycles = 1
            while ctx.get(eng.busy):
                await ctx.tick()
                cycles += 1
            results.append((cycles, ctx.get(eng.error)))
            if between is not None:
                await between(ctx, i)
        await ctx.tick()
        stop[0] = True
    return tb


def random_init(config, seed):
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(config.glb_words)]


def put_elem(words, e, bits, value):
    """Store ``value`` (any int, its low ``bits`` bits) at element ``e`` of a word list."""
    n = lanes(bits)
    w, lane = divmod(e, n)
    sh, mask = lane * bits, (1 << bits) - 1
    words[w] = (words[w] & ~(mask << sh)) | ((value & mask) << sh)


def get_elem(words, e, bits):
    n = lanes(bits)
    w, lane = divmod(e, n)
    v = (words[w] >> (lane * bits)) & ((1 << bits) - 1)
    return v - (1 << bits) if v >> (bits - 1) else v


# -- LoadEngine: RAW -------------------------------------------------------------------------

def load_desc(**kw):
    d = dict(mode=LoadMode.RAW, dram_addr=0, dram_pitch=0, n_words=0, glb_word=0, glb_elem=0,
             glb_pitch=0, n_planes=0, plane_count=0)
    d.update(kw)
    return d


@pytest.mark.parametrize("seed", [1, 2])
def test_load_raw(seed):
    """Random words copied DRAM -> GLB under DRAM latency/stalls and GLB contention-free
    writes; several commands back to back, the rest of the GLB untouched."""
    rng = random.Random(seed)
    init = random_init(TINY, seed)
    eng = LoadEngine(TINY, glb_addr_width(TINY))
    bench = Bench(eng, TINY, init)
    cmds = [(0x1000_0000 + 17 * seed, 5, 300),          # (dram_addr, glb_word, n_words)
            (0xFFFF_FFF0, 700, 37),                      # DRAM addresses wrap at 2**32
            (0x40, 1500, 1),
            (0x80, 2040, 8),                             # up to the last GLB word
            (0x100, 10, 0)]                              # nothing
    mem, expect = {}, list(init)
    for da, gw, n in cmds:
        for j in range(n):
            w = rng.getrandbits(64)
            mem[(da + j) % (1 << 32)] = w
            expect[gw + j] = w
    dram = Dram(mem, seed=seed + 10)
    stop, results, out = [False], [], {}

    async def snapshot(ctx, i):
        if i == len(cmds) - 1:
            out["glb"] = bench.read_glb(ctx)

    descs = [load_desc(dram_addr=da, glb_word=gw, n_words=n) for da, gw, n in cmds]
    run_testbenches(bench, controller(eng, descs, results, stop, between=snapshot),
                    dram.reader(eng.dram, stop), bench.staller(stop, 0.2, seed),
                    deadline_cycles=6000)
    assert [e for _, e in results] == [0] * len(cmds)
    assert out["glb"] == expect
    assert dram.reads == [(da + j) % (1 << 32) for da, _, n in cmds for j in range(n)]
    assert dram.responses == len(dram.reads) and not dram.pending


# -- LoadEngine: RLC -------------------------------------------------------------------------

def special_plane(kind, count, rng):
    """Planes that exercise the run-length corner cases (DESIGN.md section 3)."""
    v = np.zeros(count, dtype=np.int64)
    if kind == "zeros":
        return v
    if kind == "dense":
        return np.array([rng.choice([-1, 1]) * rng.randrange(1, 1 << 15) for _ in range(count)])
    if kind == "runs":
        # non-zeros separated by runs of 31, 32, 33, 63, 64, 65, 0 zeros; trailing 32 zeros
        i = 0
        for run in [31, 32, 33, 63, 64, 65, 0, 1, 30]:
            i += run
            if i >= count - 32:
                break
            v[i] = rng.randrange(-32768, 32768) or 1
            i += 1
        return v
    if kind.startswith("tail"):            # one non-zero then exactly N trailing zeros
        n = int(kind[4:])
        v[count - n - 1] = -32768
        return v
    p = float(kind)                        # random sparse, density p
    for i in range(count):
        if rng.random() < p:
            v[i] = rng.randrange(-32768, 32768)
    return v


# (plane_count, [kinds of the planes]) for the commands of one run
RLC_CMDS = [
    (97, ["0.3", "runs", "zeros", "tail31", "tail32", "tail33"]),
    (200, ["runs", "0.05", "dense"]),
    (1, ["0.5", "zeros", "dense"]),
    (64, ["tail0", "zeros", "0.9", "tail63", "tail62"]),
    (33, ["zeros"]),
    (0, ["zeros", "zeros"]),              # plane_count 0: nothing read, nothing written
]


def build_rlc_cmds(cmds, rng, *, glb_elems, dram_base=0x2000):
    """DRAM image, descriptors, expected element writes and stream lengths (words per
    plane) for RLC load commands."""
    mem, descs, elems, lens = {}, [], [], []  # elems: [(element address, value)] per command
    dram = dram_base
    for count, kinds in cmds:
        planes = [special_plane(k, count, rng) for k in kinds]
        streams = [golden.rlc_encode(p) for p in planes]
        lens.append([len(st) for st in streams])
        pitch = max(1, max(len(s) for s in streams)) + rng.randrange(0, 4)
        glb_pitch = count + rng.randrange(0, 9)
        glb_elem = rng.randrange(0, glb_elems - glb_pitch * len(planes) - 1)
        for k, s in enumerate(streams):
            for j, w in enumerate(s):
                mem[dram + k * pitch + j] = int(w)
        descs.append(load_desc(mode=LoadMode.RLC, dram_addr=dram, dram_pitch=pitch,
                               glb_elem=glb_elem, glb_pitch=glb_pitch, n_planes=len(planes),
                               plane_count=count))
        elems.append([(glb_elem + k * glb_pitch + i, int(p[i]))
                      for k, p in enumerate(planes) for i in range(count)])
        dram += pitch * len(planes) + rng.randrange(0, 5)
    return mem, descs, elems, lens


@pytest.mark.parametrize("seed,stalls", [(1, 0.2), (2, 0.5), (3, 0.0)])
def test_load_rlc(seed, stalls):
    """RLC planes from golden.rlc_encode (runs of 31/32/33 zeros, all-zero, dense, a
    single value) decoded into unaligned GLB element ranges; every other element of the
    GLB is untouched; words past each plane's last word are discarded."""
    rng = random.Random(seed)
    eb = act_bits(TINY.data_width)
    init = random_init(TINY, seed + 20)
    eng = LoadEngine(TINY, glb_addr_width(TINY))
    bench = Bench(eng, TINY, init)
    mem, descs, elems, lens = build_rlc_cmds(RLC_CMDS, rng,
                                             glb_elems=TINY.glb_words * lanes(eb))
    dram = Dram(mem, seed=seed + 30, req_stall=stalls, resp_stall=stalls)
    stop, results, snaps = [False], [], []

    counts = []

    async def snapshot(ctx, i):
        snaps.append(bench.read_glb(ctx))
        counts.append(len(dram.reads))

    run_testbenches(bench, controller(eng, descs, results, stop, between=snapshot),
                    dram.reader(eng.dram, stop), bench.staller(stop, stalls, seed),
                    deadline_cycles=40000)
    assert [e for _, e in results] == [0] * len(descs)
    expect = list(init)
    for i, cmd_elems in enumerate(elems):
        for e, v in cmd_elems:
            put_elem(expect, e, eb, v)
        assert snaps[i] == expect, f"GLB after command {i}"
    assert dram.responses == len(dram.reads) and not dram.pending
    # Per plane: the stream's words in order, then at most rlc_outstanding words more,
    # never more than plane_count in all.
    ends = [0] + counts
    for i, d in enumerate(descs):
        check_rlc_reads(dram.reads[ends[i]:ends[i + 1]], d, lens[i], eng.rlc_outstanding)


def check_rlc_reads(reads, d, lens, max_extra):
    """``reads`` is plane 0's reads, then plane 1's, ...: plane k reads
    ``base_k, base_k + 1, ...`` (n_k words, lens[k] <= n_k <= min(plane_count,
    lens[k] + max_extra))."""
    from functools import lru_cache
    if d["plane_count"] == 0:
        assert reads == []
        return

    @lru_cache(maxsize=None)
    def parse(k, pos):
        if k == d["n_planes"]:
            return pos == len(reads)
        base = (d["dram_addr"] + k * d["dram_pitch"]) % (1 << 32)
        hi = min(d["plane_count"], lens[k] + max_extra)
        for n in range(lens[k], hi + 1):
            if pos + n > len(reads) or reads[pos + n - 1] != base + n - 1:
                break
            if n >= lens[k] and parse(k + 1, pos + n):
                return True
        return False

    assert reads[:lens[0]] == list(range(d["dram_addr"], d["dram_addr"] + lens[0]))
    assert parse(0, 0), (reads, lens)


def test_load_rlc_data_width_8():
    """data_width 8: levels truncated to 8 bits and sign-extended into 16-bit elements."""
    config = TINY.replace(data_width=8)
    rng = random.Random(9)
    init = random_init(config, 9)
    eng = LoadEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, init)
    planes = [np.array([rng.randrange(-128, 128) if rng.random() < 0.4 else 0
                        for _ in range(70)]) for _ in range(3)]
    mem = {}
    for k, p in enumerate(planes):
        for j, w in enumerate(golden.rlc_encode(p)):
            mem[0x500 + 40 * k + j] = int(w)
    desc = load_desc(mode=LoadMode.RLC, dram_addr=0x500, dram_pitch=40, glb_elem=3,
                     glb_pitch=75, n_planes=3, plane_count=70)
    dram = Dram(mem, seed=19)
    stop, results, out = [False], [], {}

    async def snapshot(ctx, i):
        out["glb"] = bench.read_glb(ctx)

    run_testbenches(bench, controller(eng, [desc], results, stop, between=snapshot),
                    dram.reader(eng.dram, stop), deadline_cycles=5000)
    assert results[0][1] == 0
    expect = list(init)
    for k, p in enumerate(planes):
        for i, v in enumerate(p):
            put_elem(expect, 3 + 75 * k + i, 16, int(v))
    assert out["glb"] == expect


def malformed_cases(rng):
    """(name, plane words, plane_count) of broken streams."""
    plane = special_plane("0.3", 60, rng)
    good = [int(w) for w in golden.rlc_encode(plane)]
    assert len(good) >= 4
    last = 1 << 63
    return [
        # last-word bit on an early word: the stream ends before plane_count values
        ("early-last", good[:2] + [good[2] | last], 60),
        # last-word bit missing: count reached inside a word without bit 63
        ("no-last", good[:-1] + [good[-1] & ~last], 60),
        # truncated without a last word: the zero words after it fill the count
        ("truncated", good[:2], 60),
    ]


@pytest.mark.parametrize("case", [0, 1, 2], ids=["early-last", "no-last", "truncated"])
def test_load_rlc_malformed(case):
    """A malformed plane (the second of three) sets error and stops the command: no hang,
    outstanding DRAM responses drained; a good command afterwards is executed correctly."""
    rng = random.Random(40 + case)
    name, words, count = malformed_cases(rng)[case]
    init = random_init(TINY, 41)
    eng = LoadEngine(TINY, glb_addr_width(TINY))
    bench = Bench(eng, TINY, init)
    good_plane = special_plane("0.3", count, rng)
    good_words = [int(w) for w in golden.rlc_encode(good_plane)]
    pitch = 30
    mem = {}
    for k, ws in enumerate([good_words, words, good_words]):
        for j, w in enumerate(ws):
            mem[0x100 + k * pitch + j] = w
    # Beyond the streams DRAM reads as zero words (pairs (0, 0), no last bit).
    bad = load_desc(mode=LoadMode.RLC, dram_addr=0x100, dram_pitch=pitch, glb_elem=1,
                    glb_pitch=61, n_planes=3, plane_count=count)
    # The good command: two correct planes, elsewhere in the GLB.
    good = load_desc(mode=LoadMode.RLC, dram_addr=0x100, dram_pitch=2 * pitch,
                     glb_elem=4001, glb_pitch=70, n_planes=2, plane_count=count)
    raw = load_desc(mode=LoadMode.RAW, dram_addr=0x100, glb_word=1900, n_words=5)
    dram = Dram(mem, seed=42, fill=0)
    stop, results, out = [False], [], {}

    async def snapshot(ctx, i):
        if i == 0:
            assert ctx.get(eng.rlc_error) == 1
        if i == 1:
            assert ctx.get(eng.error) == 0          # cleared by the next start
        out[i] = bench.read_glb(ctx)

    run_testbenches(bench, controller(eng, [bad, good, raw, bad], results, stop,
                                      between=snapshot),
                    dram.reader(eng.dram, stop), bench.staller(stop, 0.3, case),
                    deadline_cycles=8000)
    assert [e for _, e in results] == [1, 0, 0, 1], name
    # The first plane of the bad command was decoded; nothing beyond the bad plane.
    expect = list(init)
    for i, v in enumerate(good_plane):
        put_elem(expect, 1 + i, 16, int(v))
    after_bad = out[0]
    for e in range(1 + 2 * 61, TINY.glb_words * 4):
        assert get_elem(after_bad, e, 16) == get_elem(expect, e, 16), e
    assert [get_elem(after_bad, 1 + i, 16) for i in range(count)] == list(good_plane)
    # The good command after the error.
    for i, v in enumerate(good_plane):
        put_elem(expect, 4001 + i, 16, int(v))
        put_elem(expect, 4071 + i, 16, int(v))
    for e in list(range(4001, 4001 + count)) + list(range(4071, 4071 + count)):
        assert get_elem(out[1], e, 16) == get_elem(expect, e, 16), e
    assert out[2][1900:1905] == [mem.get(0x100 + j, 0) for j in range(5)]
    assert dram.responses == len(dram.reads) and not dram.pending


def test_load_rlc_without_decoder_is_rejected():
    config = TINY.replace(rlc=False)
    eng = LoadEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, None)
    dram = Dram({}, seed=1)
    stop, results = [False], []
    desc = load_desc(mode=LoadMode.RLC, dram_addr=0, dram_pitch=4, n_planes=1, plane_count=5)
    run_testbenches(bench, controller(eng, [desc], results, stop),
                    dram.reader(eng.dram, stop), deadline_cycles=100)
    assert results == [(1, 1)]
    assert dram.reads == []


# -- StoreEngine -----------------------------------------------------------------------------

def store_desc(**kw):
    """A STORE descriptor. ``cols``, ``fold_rows`` and ``fold_pitch`` default to 0, so a
    descriptor with ``plane_count > 0`` must give its plane geometry (else it is rejected)."""
    d = dict(glb_elem=0, glb_pitch=0, n_planes=0, plane_count=0, dram_addr=0, dram_pitch=0,
             bias_word=0, bias_en=0, output_shift=0, relu=0, rlc=0, cols=0, fold_rows=0,
             fold_pitch=0)
    d.update(kw)
    return d


def psum_offset(i, cols, fold_rows, fold_pitch, L):
    """Element offset of value ``i`` of a plane in the GLB psum layout
    ``[fold][j // L][f][j % L]`` (``hw.layouts.store_desc_layout``), from (y, x)."""
    y, x = divmod(i, cols)
    fold, j = divmod(y, fold_rows)
    return fold * fold_pitch + (j // L) * (L * cols) + x * L + j % L


def contiguous_geometry(count):
    """(cols, fold_rows, fold_pitch) describing a contiguous plane of ``count`` elements
    with L = 1: rows of about sqrt(count) elements (the last row may be partial), folds of
    3 rows (the last fold may be partial), so the row and fold counters are exercised.
    ``count == 0``: all zero (allowed: nothing is read)."""
    if count == 0:
        return 0, 0, 0
    cols = max(1, round(count ** 0.5))
    return cols, 3, 3 * cols


def ofmap(psums, bias, shift, relu, pw, dw):
    """DESIGN.md section 2, in Python integers: wrap, round half up, saturate, ReLU."""
    out = []
    for p in psums:
        acc = (p + bias) % (1 << pw)
        if acc >> (pw - 1):
            acc -= 1 << pw
        y = (acc + (1 << (shift - 1))) >> shift if shift else acc
        y = max(-(1 << (dw - 1)), min((1 << (dw - 1)) - 1, y))
        out.append(max(y, 0) if relu else y)
    return out


def pack_raw(values, bits):
    n = lanes(bits)
    words = []
    for j in range(0, len(values), n):
        w = 0
        for lane, v in enumerate(values[j:j + n]):
            w |= (v & ((1 << bits) - 1)) << (lane * bits)
        words.append(w)
    return words


def make_store(config, rng, init, *, glb_elem, bias_word, n_planes, count, bias_en, shift,
               relu, rlc, dram_addr, sparse=0.0, geometry=None):
    """Fill ``init`` (GLB words) with psums from element ``glb_elem`` on and bias words from
    ``bias_word`` on; return (desc, expected DRAM writes as {addr: word}, number of words,
    first element after the psums). ``geometry`` = (cols, fold_rows, fold_pitch): value
    ``i`` of plane ``k`` is stored at ``glb_elem + k * glb_pitch + psum_offset(i, ...)``
    with ``L = config.psum_lanes`` (default: :func:`contiguous_geometry`, L must be 1)."""
    pw, dw = config.psum_width, config.data_width
    pb, ab = psum_bits(pw), act_bits(dw)
    L = config.psum_lanes
    if geometry is None:
        assert L == 1
        geometry = contiguous_geometry(count)
    cols, fold_rows, fold_pitch = geometry
    offsets = [psum_offset(i, cols, fold_rows, fold_pitch, L) for i in range(count)]
    if L == 1 and fold_pitch == fold_rows * cols:
        assert offsets == list(range(count))
    span = max(offsets) + 1 if offsets else 0
    glb_pitch = span + rng.randrange(0, 7)
    expect, n_words, pitch_words = {}, 0, []
    planes = []
    for k in range(n_planes):
        # psums of psum_width bits, sign-extended to the element; near the rounding and
        # saturation edges as well as random
        ps = []
        for i in range(count):
            r = rng.random()
            if r < sparse:
                ps.append(0)
            elif r < sparse + 0.2:
                ps.append(rng.choice([-1, 1]) * (rng.randrange(0, 4) << max(0, shift - 1))
                          + rng.randrange(-2, 3))
            else:
                ps.append(rng.randrange(-(1 << (pw - 1)), 1 << (pw - 1)))
        ps = [max(-(1 << (pw - 1)), min((1 << (pw - 1)) - 1, p)) for p in ps]
        for i, p in enumerate(ps):
            put_elem(init, glb_elem + k * glb_pitch + offsets[i], pb, p)
        b = rng.randrange(-(1 << (pw - 1)), 1 << (pw - 1))
        if bias_en:
            init[bias_word + k] = b & MASK64                # sign-extended 64-bit word
        planes.append(ofmap(ps, b if bias_en else 0, shift, relu, pw, dw))
    words_per_plane = [(len(golden.rlc_encode(np.array(y))) if rlc else
                        len(pack_raw(y, ab))) for y in planes]
    pitch = max(words_per_plane) + rng.randrange(0, 3)
    for k, y in enumerate(planes):
        ws = [int(w) for w in golden.rlc_encode(np.array(y))] if rlc else pack_raw(y, ab)
        for j, w in enumerate(ws):
            expect[(dram_addr + k * pitch + j) % (1 << 32)] = w
        n_words += len(ws)
    desc = store_desc(glb_elem=glb_elem, glb_pitch=glb_pitch, n_planes=n_planes,
                      plane_count=count, dram_addr=dram_addr, dram_pitch=pitch,
                      bias_word=bias_word, bias_en=bias_en, output_shift=shift, relu=relu,
                      rlc=rlc, cols=cols, fold_rows=fold_rows, fold_pitch=fold_pitch)
    return desc, expect, n_words, glb_elem + glb_pitch * n_planes


STORE_CONFIGS = {
    "psum32": TINY1,
    "psum16": TINY1.replace(psum_width=16),
    "psum24": TINY1.replace(psum_width=24),            # 32-bit elements, wrap at 24 bits
    "data8": TINY1.replace(data_width=8, psum_width=20),
}


@pytest.mark.parametrize("name", list(STORE_CONFIGS))
def test_store(name):
    """Random psums (+ random bias), output_shift, relu on/off, rlc on/off: DRAM words
    equal golden.rlc_encode / raw packing of the DESIGN.md section 2 ofmap values."""
    config = STORE_CONFIGS[name]
    rng = random.Random(sum(map(ord, name)))        # stable across processes
    init = random_init(config, 50)
    pw = config.psum_width
    cmds = []
    addr = 0x3000
    elem = rng.randrange(0, 8)                 # psums from here on, unaligned, disjoint
    bias_word = config.glb_words - 64          # bias words at the top of the GLB
    for bias_en, shift, relu, rlc, count, n_planes, sparse in [
            (1, pw // 2, 1, 1, 45, 3, 0.5),
            (0, 0, 0, 1, 70, 2, 0.8),
            (1, 3, 0, 0, 13, 3, 0.0),
            (1, pw - 1, 1, 0, 9, 2, 0.3),
            (0, 1, 1, 1, 1, 2, 0.5),
            (1, 5, 0, 1, 100, 1, 0.95),
            (1, 2, 0, 0, 0, 3, 0.0)]:                 # plane_count 0: nothing written
        desc, expect, n_words, elem = make_store(
            config, rng, init, glb_elem=elem, bias_word=bias_word, n_planes=n_planes,
            count=count, bias_en=bias_en, shift=shift, relu=relu, rlc=rlc, dram_addr=addr,
            sparse=sparse)
        cmds.append((desc, expect, n_words))
        elem += rng.randrange(0, 5)
        bias_word += n_planes
        addr += 400
    assert elem < (config.glb_words - 64) * lanes(psum_bits(pw))
    eng = StoreEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, init)
    dram = Dram({}, seed=51, wr_stall=0.3)
    stop, results = [False], []
    run_testbenches(bench, controller(eng, [c[0] for c in cmds], results, stop),
                    dram.writer(eng.dram_wr, stop), bench.staller(stop, 0.25, 52),
                    deadline_cycles=20000)
    assert [e for _, e in results] == [0] * len(cmds)
    expected = [(a, w) for _, exp, _ in cmds for a, w in exp.items()]
    assert dram.writes == expected


def test_store_unsupported_units_rejected():
    """rlc=1 without an encoder, relu=1 without a ReLU unit: error, nothing written."""
    config = TINY1.replace(rlc=False, relu=False)
    eng = StoreEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, None)
    dram = Dram({}, seed=1, wr_stall=0.0)
    stop, results = [False], []
    geo = dict(cols=4, fold_rows=1, fold_pitch=4)
    descs = [store_desc(n_planes=1, plane_count=4, rlc=1, **geo),
             store_desc(n_planes=1, plane_count=4, relu=1, **geo),
             store_desc(n_planes=1, plane_count=4, dram_addr=7, **geo)]
    run_testbenches(bench, controller(eng, descs, results, stop),
                    dram.writer(eng.dram_wr, stop), deadline_cycles=200)
    assert [e for _, e in results] == [1, 1, 0]
    assert dram.writes == [(7, 0)]          # GLB is all zero: one packed word of zeros


# -- StoreEngine: psum lanes (GLB layout [fold][j // L][f][j % L]) ---------------------------

LANE_CONFIGS = {
    "psum16-L4": TINY1.replace(psum_width=16, psum_lanes=4),
    "psum32-L2": TINY1.replace(psum_lanes=2),
}


def lane_geometry(F, e, L, slack):
    """(cols, fold_rows, fold_pitch) of ofmap rows of F values in folds of e rows: a fold
    holds ceil(e / L) lane groups of L * F elements, plus ``slack`` elements."""
    return F, e, -(-e // L) * L * F + slack


def glb_reads(port, stop, out):
    """Testbench: counts the GLB read requests accepted on ``port`` into ``out[0]``."""
    async def tb(ctx):
        while not stop[0]:
            _, _, v, r = await ctx.tick().sample(port.valid, port.ready)
            out[0] += bool(v and r)
    return tb


@pytest.mark.parametrize("name", list(LANE_CONFIGS))
def test_store_lanes(name):
    """psum_lanes > 1: psums stored in the [fold][j // L][f][j % L] layout (e not a multiple
    of L, a partial last fold, a partial last lane group, fold slack, every padding lane
    random garbage), several planes, bias, raw and RLC, ReLU, GLB and DRAM stalls: the DRAM
    words equal golden.rlc_encode / raw packing of the ofmap of the logical (y, x) values."""
    config = LANE_CONFIGS[name]
    L = config.psum_lanes
    rng = random.Random(sum(map(ord, name)))
    init = random_init(config, 60)
    pw = config.psum_width
    cmds, checked = [], set()
    addr = 0x5000
    elem = rng.randrange(0, 8)
    bias_word = config.glb_words - 64
    # (E, F, e, fold slack, bias_en, shift, relu, rlc, n_planes, sparse, count - E * F)
    for E, F, e, slack, bias_en, shift, relu, rlc, n_planes, sparse, short in [
            (13, 7, 5, 0, 1, pw // 2, 1, 1, 3, 0.5, 0),    # folds 5, 5, 3 rows
            (11, 9, 3, 2, 1, 3, 0, 0, 2, 0.0, 0),          # folds 3, 3, 3, 2 rows
            (7, 5, 6, 1, 0, 0, 0, 1, 2, 0.7, 0),           # folds 6, 1 rows
            (5, 12, 1, 3, 1, pw - 1, 1, 0, 2, 0.3, 0),     # one row per fold, lane 0 only
            (6, 1, 6, 0, 1, 2, 0, 0, 3, 0.0, 0),           # one column
            (9, 4, L, 0, 1, 4, 1, 1, 1, 0.4, 0),           # full lane groups, one fold
            (10, 6, 7, 0, 1, 5, 0, 0, 2, 0.0, 3),          # plane ends mid-row
            (4, 3, 3, 0, 1, 2, 0, 0, 2, 0.0, 12)]:         # plane_count 0: nothing
        count = E * F - short
        geo = lane_geometry(F, e, L, slack)
        desc, expect, n_words, end = make_store(
            config, rng, init, glb_elem=elem, bias_word=bias_word, n_planes=n_planes,
            count=count, bias_en=bias_en, shift=shift, relu=relu, rlc=rlc, dram_addr=addr,
            sparse=sparse, geometry=geo)
        # the layout really interleaves rows: value (y, x) at the documented element
        for i in range(count):
            y, x = divmod(i, F)
            fold, j = divmod(y, e)
            off = fold * geo[2] + (j // L) * L * F + x * L + j % L
            assert off == psum_offset(i, *geo, L)
            assert off not in checked
            checked.add(off)
        checked.clear()
        cmds.append((desc, expect, n_words))
        elem = end + rng.randrange(0, 5)
        bias_word += n_planes
        addr += 400
    assert elem < (config.glb_words - 64) * lanes(psum_bits(pw))
    n_values = sum(c[0]["n_planes"] * c[0]["plane_count"] for c in cmds)
    n_bias = sum(c[0]["n_planes"] * c[0]["bias_en"] for c in cmds if c[0]["plane_count"])
    eng = StoreEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, init)
    dram = Dram({}, seed=61, wr_stall=0.3)
    stop, results, reads = [False], [], [0]
    run_testbenches(bench, controller(eng, [c[0] for c in cmds], results, stop),
                    dram.writer(eng.dram_wr, stop), bench.staller(stop, 0.25, 62),
                    glb_reads(eng.glb_rd.req, stop, reads), deadline_cycles=20000)
    assert [e for _, e in results] == [0] * len(cmds)
    expected = [(a, w) for _, exp, _ in cmds for a, w in exp.items()]
    assert dram.writes == expected
    assert reads[0] == n_values + n_bias             # one read per value and per bias word


@pytest.mark.parametrize("name", ["psum32-L1", "psum16-L4"])
def test_store_bad_geometry_rejected(name):
    """plane_count > 0 with cols == 0 or fold_rows == 0: error at once, busy never rises,
    no GLB read, nothing written; plane_count == 0 with cols == 0 is a no-op; a good
    command afterwards runs normally (error cleared)."""
    config = TINY1 if name == "psum32-L1" else LANE_CONFIGS[name]
    L = config.psum_lanes
    rng = random.Random(70)
    init = random_init(config, 70)
    good, expect, _, _ = make_store(config, rng, init, glb_elem=3, bias_word=1900,
                                    n_planes=2, count=20, bias_en=1, shift=3, relu=0,
                                    rlc=0, dram_addr=0x90, geometry=lane_geometry(5, 3, L, 0))
    base = dict(good)
    descs = [dict(base, cols=0),
             dict(base, fold_rows=0),
             dict(base, cols=0, fold_rows=0, fold_pitch=0),
             dict(base, plane_count=1, cols=0),
             dict(base, plane_count=0, cols=0, fold_rows=0),
             good]
    eng = StoreEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, init)
    dram = Dram({}, seed=71, wr_stall=0.0)
    stop, results, reads, log = [False], [], [0], []

    async def between(ctx, i):
        log.append((reads[0], len(dram.writes)))

    run_testbenches(bench, controller(eng, descs, results, stop, between=between),
                    dram.writer(eng.dram_wr, stop),
                    glb_reads(eng.glb_rd.req, stop, reads), deadline_cycles=500)
    assert results[:5] == [(1, 1), (1, 1), (1, 1), (1, 1), (1, 0)]
    assert log[:5] == [(0, 0)] * 5
    assert results[5][1] == 0
    assert dram.writes == list(expect.items())
    assert reads[0] == 2 * 20 + 2


# -- throughput ------------------------------------------------------------------------------

@pytest.mark.parametrize("latency", [0, 8, 14])
def test_load_raw_throughput(latency):
    """No stalls, fixed DRAM latency: n words in n + latency + a few cycles."""
    n = 256
    eng = LoadEngine(TINY1, glb_addr_width(TINY1))
    bench = Bench(eng, TINY1, None)
    rng = random.Random(latency)
    mem = {0x10 + j: rng.getrandbits(64) for j in range(n)}
    dram = Dram(mem, seed=2, latency=latency, req_stall=0, resp_stall=0)
    stop, results, out = [False], [], {}

    async def snapshot(ctx, i):
        out["glb"] = bench.read_glb(ctx)

    run_testbenches(bench, controller(eng, [load_desc(dram_addr=0x10, glb_word=100, n_words=n)],
                                      results, stop, between=snapshot),
                    dram.reader(eng.dram, stop), deadline_cycles=2000)
    cycles, err = results[0]
    assert err == 0
    assert out["glb"][100:100 + n] == [mem[0x10 + j] for j in range(n)]
    # start -> first request 1 cycle, DRAM latency + 1, write stage 1, busy falls 1.
    assert cycles <= n + latency + 4, cycles


def _store_no_stalls(config, init, desc):
    """One STORE command on a stall-free GLB and DRAM: ``(cycles, error, DRAM writes)``."""
    eng = StoreEngine(config, glb_addr_width(config))
    bench = Bench(eng, config, init)
    dram = Dram({}, seed=4, wr_stall=0.0)
    stop, results = [False], []
    run_testbenches(bench, controller(eng, [desc], results, stop),
                    dram.writer(eng.dram_wr, stop), deadline_cycles=2000)
    cycles, err = results[0]
    return cycles, err, dram.writes


@pytest.mark.parametrize("rlc,bias_en,psum", [(0, 0, 32), (0, 1, 32), (1, 1, 32),
                                              (0, 1, 16)])
def test_store_throughput(rlc, bias_en, psum):
    """No stalls: n values of one plane in n + a few cycles (raw or RLC, bias or not)."""
    config = TINY1.replace(psum_width=psum)
    n = 240
    rng = random.Random(3)
    init = random_init(config, 3)
    desc, expect, n_words, _ = make_store(config, rng, init, glb_elem=5, bias_word=1800,
                                          n_planes=1, count=n, bias_en=bias_en, shift=4,
                                          relu=0, rlc=rlc, dram_addr=0x77, sparse=0.0)
    cycles, err, writes = _store_no_stalls(config, init, desc)
    assert err == 0
    assert writes == list(expect.items())
    # start 1, bias read 1, GLB read 1, requantize 1, relu 1, encoder/packer 1, DRAM stage 1
    assert cycles <= n + bias_en + 7, cycles


@pytest.mark.parametrize("rlc,bias_en,psum,L", [(0, 0, 16, 4), (1, 1, 16, 4), (0, 1, 32, 2),
                                                (1, 0, 32, 2)])
def test_store_lanes_throughput(rlc, bias_en, psum, L):
    """No stalls: the lane walk ([fold][j // L][f][j % L], e = 5 rows per fold, not a
    multiple of L, partial last fold) takes exactly the cycles of the contiguous walk of
    the same values with L = 1: n_planes * (n + bias_en) + 7 (measured; E = 16, F = 15)."""
    E, F, e, n_planes = 16, 15, 5, 2
    n = E * F
    cycles, writes = {}, {}
    for lanes_ in (1, L):
        config = TINY1.replace(psum_width=psum, psum_lanes=lanes_)
        rng = random.Random(8)
        init = random_init(config, 8)
        geo = lane_geometry(F, e, lanes_, 0)
        desc, expect, _, _ = make_store(config, rng, init, glb_elem=5, bias_word=1800,
                                        n_planes=n_planes, count=n, bias_en=bias_en, shift=4,
                                        relu=0, rlc=rlc, dram_addr=0x77, sparse=0.0,
                                        geometry=geo)
        cycles[lanes_], err, writes[lanes_] = _store_no_stalls(config, init, desc)
        assert err == 0
        assert writes[lanes_] == list(expect.items())
    assert writes[L] == writes[1]                  # same values, same ofmap
    assert cycles[L] == cycles[1] == n_planes * (n + bias_en) + 7, cycles


def test_load_rlc_throughput():
    """No stalls, latency 4: an RLC plane of dense values decodes at one value per
    cycle; a plane change costs a few cycles only (the next plane's reads are issued when
    the previous plane's last word arrives)."""
    count, n_planes = 150, 4
    rng = random.Random(5)
    planes = [special_plane("dense", count, rng) for _ in range(n_planes)]
    mem, pitch = {}, 60
    for k, p in enumerate(planes):
        for j, w in enumerate(golden.rlc_encode(p)):
            mem[k * pitch + j] = int(w)
    eng = LoadEngine(TINY1, glb_addr_width(TINY1))
    bench = Bench(eng, TINY1, None)
    dram = Dram(mem, seed=6, latency=4, req_stall=0, resp_stall=0)
    stop, results, out = [False], [], {}

    async def snapshot(ctx, i):
        out["glb"] = bench.read_glb(ctx)

    desc = load_desc(mode=LoadMode.RLC, dram_addr=0, dram_pitch=pitch, glb_elem=2,
                     glb_pitch=count, n_planes=n_planes, plane_count=count)
    run_testbenches(bench, controller(eng, [desc], results, stop, between=snapshot),
                    dram.reader(eng.dram, stop), deadline_cycles=3000)
    cycles, err = results[0]
    assert err == 0
    got = [get_elem(out["glb"], 2 + i, 16) for i in range(count * n_planes)]
    assert got == [int(v) for p in planes for v in p]
    # measured: 617 cycles for 4 planes of 150 values (2 bubbles per plane change)
    assert cycles <= n_planes * (count + 2) + 10, cycles


# -- Verilog -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "eyeriss"])
def test_verilog_conversion(name):
    config = preset(name)
    aw = glb_addr_width(config)
    text = verilog.convert(LoadEngine(config, aw), name="load_engine", emit_src=False)
    assert "module load_engine" in text
    for port in ("dram__req__valid", "dram__resp__payload", "glb_wr__payload", "busy",
                 "rlc_error", "desc"):
        assert port in text
    text = verilog.convert(StoreEngine(config.replace(psum_lanes=1), aw),
                           name="store_engine", emit_src=False)
    assert "module store_engine" in text
    for port in ("glb_rd__req__payload", "glb_rd__resp__valid", "dram_wr__payload",
                 "busy", "error"):
        assert port in text
    assert "rq_lane" not in text and "rq_row" not in text      # L = 1: no lane walk logic
    config = config.replace(psum_lanes=64 // psum_bits(config.psum_width))
    text = verilog.convert(StoreEngine(config, aw), name="store_engine", emit_src=False)
    assert "module store_engine" in text and "rq_lane" in text and "rq_row" in text
