"""Amaranth-simulation tests of the row-stationary PE (``hw/pe.py``).

The reference is the 1-D row convolution of the numerics contract (DESIGN.md section 2),
written out here with Python ints:

    psum_out[f][pi] = (psum_in[f][pi] if psum_in_en else 0)
                      + sum_{qi, s} ((w[pi][qi][s] * x[qi][f*U + s]) >> product_shift)
                      (mod 2**psum_width, signed)
"""

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.back import verilog
from amaranth.lib import wiring

from hw.config import preset
from hw.pe import ProcessingElement
from sim_tests.support.filters import filter_transfers
from sim_tests.support.stream import get_n, put_all, run_testbenches, seeded


def _wrap(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def ref_row(w, xrow, pin, *, p, q, S, U, F, shift, psum_width, psum_in_en):
    """Reference 1-D convolution of one row; returns ``F*p`` psums in ``f*p + pi`` order.

    ``w[pi][qi][s]``, ``xrow[qi][col]``, ``pin[f][pi]`` are Python ints.
    """
    out = []
    for f in range(F):
        for pi in range(p):
            acc = pin[f][pi] if psum_in_en else 0
            for qi in range(q):
                for s in range(S):
                    acc += (w[pi][qi][s] * xrow[qi][f * U + s]) >> shift   # floor shift
            out.append(_wrap(acc, psum_width))
    return out


class Run:
    """One PE run: its configuration, its input streams and the expected output stream."""

    def __init__(self, rng, config, *, p, q, S, U, F, n_rows, shift, load_filter, psum_in_en,
                 w=None, zero_frac=0.3, extremes=False, dense=False):
        dw, pw = config.data_width, config.psum_width
        self.p, self.q, self.S, self.U, self.F, self.n_rows = p, q, S, U, F, n_rows
        self.shift, self.load_filter, self.psum_in_en = shift, load_filter, psum_in_en
        self.filter_lanes = config.filter_lanes
        dlo, dhi = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
        plo, phi = -(1 << (pw - 1)), (1 << (pw - 1)) - 1
        if w is None:
            w = rng.integers(dlo, dhi + 1, size=(p, q, S))
            if extremes:
                w.flat[rng.integers(0, w.size, size=max(1, w.size // 3))] = \
                    rng.choice([dlo, dhi], size=max(1, w.size // 3))
        self.w = [[[int(w[pi][qi][s]) for s in range(S)] for qi in range(q)] for pi in range(p)]
        W = (F - 1) * U + S
        self.W = W
        self.filter_words = [self.w[pi][qi][s]
                             for s in range(S) for qi in range(q) for pi in range(p)]
        self.ifmap_words, self.psum_words, self.expected = [], [], []
        for _ in range(n_rows):
            x = rng.integers(dlo, dhi + 1, size=(q, W))
            if dense:
                x[x == 0] = 1
            else:
                x[rng.random(size=(q, W)) < zero_frac] = 0
            if extremes:
                sel = rng.random(size=(q, W)) < 0.3
                x[sel] = rng.choice([dlo, dhi], size=int(sel.sum()))
            pin = rng.integers(plo, phi + 1, size=(F, p))
            if extremes:
                sel = rng.random(size=(F, p)) < 0.3
                pin[sel] = rng.choice([plo, phi], size=int(sel.sum()))
            xrow = [[int(v) for v in x[qi]] for qi in range(q)]
            prow = [[int(v) for v in pin[f]] for f in range(F)]
            self.ifmap_words += [xrow[qi][col] for col in range(W) for qi in range(q)]
            if psum_in_en:
                self.psum_words += [prow[f][pi] for f in range(F) for pi in range(p)]
            self.expected += ref_row(self.w, xrow, prow, p=p, q=q, S=S, U=U, F=F, shift=shift,
                                     psum_width=pw, psum_in_en=psum_in_en)

    @property
    def macs(self):
        return self.p * self.q * self.S * self.F * self.n_rows

    def cfg(self):
        return {"p": self.p, "q": self.q, "S": self.S, "U": self.U, "F": self.F,
                "n_rows": self.n_rows, "product_shift": self.shift,
                "load_filter": self.load_filter, "psum_in_en": self.psum_in_en}


def simulate(config, runs, *, seed=0, stall=0.0, out_stall=None):
    """Run ``runs`` back to back on one PE; returns per-run (outputs, busy cycles,
    sum of mac_fire, sum of mac_gated)."""
    dut = ProcessingElement(config)
    out_stall = stall if out_stall is None else out_stall
    filt = [v for r in runs if r.load_filter for v in filter_transfers(config, r.filter_words)]
    ifm = [v for r in runs for v in r.ifmap_words]
    pin = [v for r in runs for v in r.psum_words]
    n_out = sum(len(r.expected) for r in runs)
    stats, got = [], []

    async def control(ctx):
        for r in runs:
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.cfg, r.cfg())
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = fire = gated = 0
            while ctx.get(dut.busy):
                cycles += 1
                fire += ctx.get(dut.mac_fire)
                gated += ctx.get(dut.mac_gated)
                await ctx.tick()
            stats.append((cycles, fire, gated))

    async def feed_filter(ctx):
        await put_all(ctx, dut.filter_in, filt, rng=seeded(seed + 1), stall=stall)

    async def feed_ifmap(ctx):
        await put_all(ctx, dut.ifmap_in, ifm, rng=seeded(seed + 2), stall=stall)

    async def feed_psum(ctx):
        await put_all(ctx, dut.psum_in, pin, rng=seeded(seed + 3), stall=stall)

    async def collect(ctx):
        got.extend(await get_n(ctx, dut.psum_out, n_out, rng=seeded(seed + 4), stall=out_stall))

    slow = 1.0 / (1.0 - max(stall, out_stall))
    budget = sum(r.macs + len(r.filter_words) + len(r.ifmap_words) + 20 * r.n_rows + 50
                 for r in runs)
    run_testbenches(dut, control, feed_filter, feed_ifmap, feed_psum, collect,
                    deadline_cycles=int(3 * slow * budget) + 1000)
    results, pos = [], 0
    for r, st in zip(runs, stats):
        results.append((got[pos:pos + len(r.expected)],) + st)
        pos += len(r.expected)
    assert len(stats) == len(runs)
    return results


def make_runs(config, rng, p, q, S, U, *, F_max=15, extremes=False, zero_frac=0.3):
    """Three runs: load filters (psum_in on, shift 0), reuse them (psum_in off, shift > 0),
    load new filters (psum_in on, shift > 0)."""
    dw = config.data_width
    runs = []
    w = None
    for i, (load, en, shift) in enumerate([(1, 1, 0), (0, 0, dw - 3), (1, 1, 2 * dw - 1)]):
        F = int(rng.integers(1, F_max + 1))
        n_rows = int(rng.integers(1, 4))
        r = Run(rng, config, p=p, q=q, S=S, U=U, F=F, n_rows=n_rows, shift=shift,
                load_filter=load, psum_in_en=en, extremes=extremes, zero_frac=zero_frac,
                w=None if load else w)
        w = np.array(r.w)
        runs.append(r)
    return runs


def check(runs, results):
    for i, (r, (out, cycles, fire, gated)) in enumerate(zip(runs, results)):
        assert out == r.expected, f"run {i}: psum_out mismatch"
        assert fire + gated == r.macs, f"run {i}: mac_fire + mac_gated != p*q*S*F*n_rows"


TINY = preset("tiny")           # 32-bit psums, spads 64 / 12 / 16, 4 filter lanes
EYERISS = preset("eyeriss")     # 16-bit psums, spads 224 / 12 / 24, 4 filter lanes
TINY1 = TINY.replace(filter_lanes=1)        # one filter value per transfer (fpga preset)
EYERISS1 = EYERISS.replace(filter_lanes=1)

CASES = [
    # (config, p, q, S, U)
    (TINY, 1, 1, 1, 1),
    (TINY, 1, 1, 3, 1),
    (TINY, 4, 3, 3, 1),
    (EYERISS, 16, 1, 11, 4),     # CONV1-like
    (TINY, 2, 2, 5, 2),
    (TINY, 3, 4, 3, 1),
    (TINY, 1, 12, 1, 1),         # q*S = ifmap_spad_depth
    (EYERISS, 24, 1, 1, 1),      # p = psum_spad_depth
    (EYERISS, 2, 4, 3, 1),       # q*S = ifmap_spad_depth, 16-bit psums
    (TINY, 2, 1, 1, 3),          # U > S: columns never read still pass through the window
    (TINY, 1, 2, 2, 3),
    (TINY.replace(zero_gating=False), 3, 2, 3, 1),   # no gating: every MAC fires
    (TINY.replace(zero_gating=False), 1, 1, 2, 1),
    (TINY1, 1, 1, 1, 1),
    (TINY1, 4, 3, 3, 1),
    (TINY1, 2, 2, 5, 2),
    (EYERISS1, 16, 1, 11, 4),
]


@pytest.mark.parametrize("config,p,q,S,U", CASES,
                         ids=[f"p{c[1]}q{c[2]}S{c[3]}U{c[4]}" + ("" if c[0].zero_gating else "-nozg")
                              + f"-fl{c[0].filter_lanes}" for c in CASES])
def test_pe_random_stalls(config, p, q, S, U):
    seed = 1000 * p + 100 * q + 10 * S + U
    rng = np.random.default_rng(seed)
    runs = make_runs(config, rng, p, q, S, U, F_max=15)
    check(runs, simulate(config, runs, seed=seed, stall=0.3))


def test_pe_psum16_wrap_extremes():
    """16-bit psums with -32768/32767 inputs: every sum wraps; products shifted and not."""
    rng = np.random.default_rng(7)
    runs = make_runs(EYERISS, rng, 3, 2, 3, 1, F_max=8, extremes=True)
    check(runs, simulate(EYERISS, runs, seed=7, stall=0.3))


def test_pe_heavy_backpressure():
    """psum_out mostly stalled while the inputs flow: the output FIFO fills, nothing lost."""
    rng = np.random.default_rng(11)
    runs = make_runs(TINY, rng, 1, 2, 2, 1, F_max=15)
    check(runs, simulate(TINY, runs, seed=11, stall=0.1, out_stall=0.8))
    rng = np.random.default_rng(12)
    runs = make_runs(TINY, rng, 2, 1, 3, 1, F_max=15)
    check(runs, simulate(TINY, runs, seed=12, stall=0.6, out_stall=0.0))


def overhead_bound(r):
    """Allowed busy cycles beyond the ``p*q*S*F*n_rows`` MAC cycles of a dense, unstalled run.

    * ``ceil(p*q*S / filter_lanes)`` filter-load cycles when ``load_filter`` (1 transfer per
      cycle; ifmap loading overlaps);
    * 8 cycles of fill and drain: start -> first ifmap write -> read -> first MAC (3), last MAC
      -> execute -> output FIFO (2 cycles latency) -> join register -> transfer -> busy low (5);
    * 2 cycles per row: the next row's ifmap loading waits until the current row has been read
      (visible only when ``p`` is small);
    * when ``U > S`` the ``U*q`` new values per window (1/cycle) exceed the ``p*q*S`` compute
      cycles if ``U*q > p*q*S``: ``(U*q - p*q*S)`` per window.
    """
    pqs = r.p * r.q * r.S
    window_io = max(0, r.U * r.q - pqs) * r.F * r.n_rows
    return r.load_filter * -(-pqs // r.filter_lanes) + 8 + 2 * r.n_rows + window_io


CYCLE_CASES = [
    (TINY, 1, 1, 1, 1), (TINY, 1, 1, 3, 1), (TINY, 4, 3, 3, 1), (EYERISS, 16, 1, 11, 4),
    (TINY, 2, 2, 5, 2), (TINY, 1, 12, 1, 1), (EYERISS, 24, 1, 1, 1), (TINY, 2, 1, 1, 3),
    (TINY1, 4, 3, 3, 1), (EYERISS1, 16, 1, 11, 4)]


@pytest.mark.parametrize("config,p,q,S,U", CYCLE_CASES,
                         ids=[f"p{c[1]}q{c[2]}S{c[3]}U{c[4]}-fl{c[0].filter_lanes}"
                              for c in CYCLE_CASES])
def test_pe_cycles_dense_no_stall(config, p, q, S, U):
    """One MAC per cycle: busy cycles <= p*q*S*F*n_rows + overhead_bound (dense, no stalls)."""
    rng = np.random.default_rng(5)
    F = 4 if p * q * S > 100 else 12
    runs = [Run(rng, config, p=p, q=q, S=S, U=U, F=F, n_rows=3, shift=1, load_filter=1,
                psum_in_en=1, dense=True)]
    runs.append(Run(rng, config, p=p, q=q, S=S, U=U, F=F, n_rows=2, shift=0, load_filter=0,
                    psum_in_en=0, dense=True, w=np.array(runs[0].w)))
    results = simulate(config, runs, seed=5, stall=0.0)
    check(runs, results)
    for r, (_, cycles, fire, gated) in zip(runs, results):
        assert gated == 0 and fire == r.macs
        assert r.macs <= cycles <= r.macs + overhead_bound(r), \
            f"{cycles} cycles for {r.macs} MACs (overhead bound {overhead_bound(r)})"


def test_pe_zero_skipping_saves_cycles():
    """75% zero ifmaps: zero_gating=True gives the same psums in fewer cycles, and the
    mac_fire/mac_gated counts add up to p*q*S*F*n_rows."""
    base = preset("default")
    p, q, S, U = 4, 3, 3, 1
    outs = {}
    for zg in (True, False):
        config = base.replace(zero_gating=zg)
        rng = np.random.default_rng(21)   # same data for both PEs
        runs = [Run(rng, config, p=p, q=q, S=S, U=U, F=10, n_rows=2, shift=3, load_filter=1,
                    psum_in_en=1, zero_frac=0.75)]
        results = simulate(config, runs, seed=21, stall=0.0)
        check(runs, results)
        outs[zg] = results[0]
    out_on, cyc_on, fire_on, gated_on = outs[True]
    out_off, cyc_off, fire_off, gated_off = outs[False]
    macs = p * q * S * 10 * 2
    assert out_on == out_off
    assert gated_off == 0 and fire_off == macs
    assert fire_on + gated_on == macs and gated_on > macs // 2
    # Each skipped (s, qi) iteration saves p - 1 cycles; ~75% of the 7 of 9 inner iterations.
    assert cyc_on < 0.6 * cyc_off, (cyc_on, cyc_off)
    print(f"zero skipping: {cyc_on} vs {cyc_off} cycles, {gated_on}/{macs} MACs gated")


def test_pe_minimal_spads_and_single_output():
    """All spads one word deep (p = q = S = 1), F = 1 and n_rows = 1 runs, stalls."""
    config = TINY1.replace(filter_spad_depth=1, ifmap_spad_depth=1, psum_spad_depth=1)
    rng = np.random.default_rng(41)
    runs = []
    for (U, F, n, sh, ld, en) in [(1, 1, 1, 0, 1, 1), (2, 1, 2, 5, 0, 0),
                                  (3, 7, 1, 31, 1, 1), (1, 9, 3, 1, 0, 1)]:
        runs.append(Run(rng, config, p=1, q=1, S=1, U=U, F=F, n_rows=n, shift=sh, load_filter=ld,
                        psum_in_en=en, w=None if ld else np.array(runs[-1].w)))
    check(runs, simulate(config, runs, seed=41, stall=0.3))


def test_pe_verilog_eyeriss():
    pe = ProcessingElement(preset("eyeriss"))
    text = verilog.convert(pe, name="pe", emit_src=False)
    assert "module pe" in text


class _Column(Elaboratable):
    """``n`` PEs chained vertically: psum_out of PE i feeds psum_in of PE i + 1 (JSSC Fig. 6)."""

    def __init__(self, config, n):
        self.pes = [ProcessingElement(config) for _ in range(n)]

    def elaborate(self, platform):
        m = Module()
        for i, pe in enumerate(self.pes):
            m.submodules[f"pe{i}"] = pe
        for lo, hi in zip(self.pes, self.pes[1:]):
            wiring.connect(m, lo.psum_out, hi.psum_in)
        return m


def test_pe_column_chain_runs_concurrently():
    """R = 3 PEs in a column compute one output row of a 2-D convolution (psums flow up);
    they run concurrently: the column takes only a few cycles more than one PE alone."""
    config = TINY
    p, q, S, U, F, n_rows, R = 4, 2, 3, 1, 10, 2, 3
    rng = np.random.default_rng(31)
    rows = [Run(rng, config, p=p, q=q, S=S, U=U, F=F, n_rows=n_rows, shift=2, load_filter=1,
                psum_in_en=0, dense=True) for i in range(R)]
    # Expected: sum of the R 1-D convolutions (bottom PE starts from 0), wrapped.
    expected = [_wrap(sum(r.expected[j] for r in rows), config.psum_width)
                for j in range(len(rows[0].expected))]
    col = _Column(config, R)
    got, cycles = [], []

    async def control(ctx):
        for i, (pe, r) in enumerate(zip(col.pes, rows)):
            ctx.set(pe.cfg, dict(r.cfg(), psum_in_en=int(i > 0)))
            ctx.set(pe.start, 1)
        await ctx.tick()
        for pe in col.pes:
            ctx.set(pe.start, 0)
        n = 0
        while any(ctx.get(pe.busy) for pe in col.pes):
            n += 1
            await ctx.tick()
        cycles.append(n)

    def feeder(stream, words):
        async def tb(ctx):
            await put_all(ctx, stream, words)
        return tb

    async def collect(ctx):
        got.extend(await get_n(ctx, col.pes[-1].psum_out, len(expected)))

    tbs = [control, collect]
    for pe, r in zip(col.pes, rows):
        tbs += [feeder(pe.filter_in, filter_transfers(pe.config, r.filter_words)),
                feeder(pe.ifmap_in, r.ifmap_words)]
    run_testbenches(col, *tbs, deadline_cycles=20 * rows[0].macs)
    assert got == expected
    single = rows[0].macs + overhead_bound(rows[0])
    assert cycles[0] <= single + 4 * R, (cycles[0], single)
