"""The analytical performance model (``sw_driver.perfmodel``) against its invariants and
against real RTL runs.

Fast tests check what must hold by construction (exact MAC and word counts, the ideal and
DRAM-bandwidth bounds, monotonicity). The Verilator tests run layers on the ``tiny`` and
``small`` presets (cached builds) and require the model's cycle count within 5% of the
RTL's ``cycles`` counter and the access counters equal (``dram_reads`` within a stated
tolerance where the hardware's count depends on timing: RLC over-reads).
"""

import math

import numpy as np
import pytest

from hw.config import preset
from hw.layouts import act_bits, lanes
from sw_driver.accelerator import ConvLayer
from sw_driver.golden import conv2d
from sw_driver.mapper import LayerShape
from sw_driver.perfmodel import predict_layer, predict_network
from sw_driver.targets import DramModel

TINY = preset("tiny")
SMALL = preset("small")

#: Relative cycle error allowed per layer (BENCHMARKS.md: "within 5% per layer").
CYCLE_TOL = 0.05
#: Counters the model must match exactly.
EXACT = ("macs", "macs_gated", "glb_reads", "glb_writes", "dram_writes")


def _pe_work(mp):
    """MACs issued + gated by the PEs: every active PE does p*q*S*F MACs per ifmap row."""
    L = mp.layer
    work = 0
    for nbk in range(mp.n_nblocks):
        nbn = min(mp.nb, L.N - nbk * mp.nb)
        work += (mp.active_pes * mp.p * mp.q * L.S * L.F * nbn * mp.n_fold
                 * L.groups * mp.n_mblocks * mp.n_cblocks * mp.n_rchunks)
    return work


# ---------------------------------------------------------------------------------------
# Fast invariants (no simulator)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, L", [
    (TINY, LayerShape(1, 3, 8, 8, 8, 3, 3, 1, 1)),
    (TINY, LayerShape(2, 4, 9, 9, 6, 3, 3, 2, 1)),
    (SMALL, LayerShape(1, 8, 12, 12, 16, 5, 5, 1, 2)),
    (SMALL, LayerShape(1, 16, 6, 6, 32, 1, 1)),
])
def test_exact_counts(cfg, L):
    pred = predict_layer(cfg, L)
    mp = pred.mappings[0]
    c = pred.counts
    la = lanes(act_bits(cfg.data_width))
    # every MAC slot the PEs issue is either fired or gated
    assert c["macs"] + c["macs_gated"] == _pe_work(mp) >= L.macs
    # dense data: only the zero padding is gated
    if L.padding == 0 and mp.E_alloc == L.E and L.Cg % mp.CB == 0:
        assert c["macs_gated"] == 0
    # raw ofmap: one word per `la` values of each plane
    assert c["dram_writes"] == L.N * L.M * math.ceil(L.E * L.F / la)
    # raw ifmap planes and pre-arranged filter blocks (each tag's p*q*S values padded to
    # whole filter-GIN transfers): the data reads are exact. The ifmap is read once per
    # filter block, or once when it stays in the GLB (always so with one channel block).
    assert mp.ifmap_resident or mp.n_cblocks > 1
    loads = 1 if mp.ifmap_resident else mp.n_mblocks
    ifmap_words = L.N * L.groups * loads * L.Cg * math.ceil(L.H * L.W / la)
    tag_values = -(-mp.p * mp.q * L.S // cfg.filter_lanes) * cfg.filter_lanes
    assert mp.filter_tag_values == tag_values
    filter_words = mp.n_passes * math.ceil(mp.r_sets * mp.t_sets * mp.Rc * tag_values / la)
    assert c["dram_reads_data"] == ifmap_words + filter_words
    # command words: the whole list plus at most the 16 words prefetched past END
    assert c["dram_reads"] == c["dram_reads_data"] + c["dram_reads_commands"]
    # the GON writes every psum once per pass, one transfer per group of psum_lanes chains
    # (the chains of a set padded to e_pad); the psum GIN reads back all but the first
    # channel block's (whose passes start from zero)
    assert mp.e_pad % cfg.psum_lanes == 0 and mp.e <= mp.e_pad < mp.e + cfg.psum_lanes
    assert c["noc_gon"] == (L.groups * mp.n_mblocks * mp.n_cblocks * mp.n_rchunks * L.N
                            * mp.n_fold * L.F * mp.t_sets * mp.e_pad // cfg.psum_lanes
                            * mp.p)
    assert c["noc_psum_gin"] == c["noc_gon"] * (mp.n_cblocks * mp.n_rchunks - 1) // (
        mp.n_cblocks * mp.n_rchunks)
    assert c["glb_writes"] == c["noc_gon"] + ifmap_words + filter_words
    assert c["spad_filter_reads"] == c["macs"]
    assert 0 < pred.utilization <= 1


def test_ideal_and_dram_bounds():
    L = LayerShape(1, 8, 12, 12, 16, 3, 3, 1, 1)
    fast = predict_layer(SMALL, L)
    slow = predict_layer(SMALL, L, dram=DramModel.eyeriss())
    for p in (fast, slow):
        assert p.cycles >= p.ideal_cycles
        assert p.counts["pass_cycles"] >= p.counts["macs"] / SMALL.num_pes
    # a 0.3 words/cycle link moves at most 0.3 words per cycle (plus the 4-word burst)
    words = slow.counts["dram_reads"] + slow.counts["dram_writes"]
    assert slow.cycles >= (words - 4) / 0.3
    assert slow.cycles > fast.cycles


@pytest.mark.parametrize("field, values", [("M", (2, 4, 8, 16)), ("C", (1, 2, 4, 8)),
                                           ("H", (6, 8, 12, 16)), ("N", (1, 2, 3))])
def test_monotonic_in_layer_size(field, values):
    base = dict(N=1, C=4, H=8, W=8, M=8, R=3, S=3, U=1, padding=1)
    cycles, macs = [], []
    for v in values:
        kw = dict(base, **{field: v})
        if field == "H":
            kw["W"] = v
        p = predict_layer(TINY, LayerShape(**kw))
        cycles.append(p.cycles)
        macs.append(p.counts["macs"] + p.counts["macs_gated"])
    assert cycles == sorted(cycles) and len(set(cycles)) == len(cycles)
    assert macs == sorted(macs)


def test_zero_skipping_and_rlc():
    L = LayerShape(1, 8, 10, 10, 16, 3, 3, 1, 1)
    dense = predict_layer(SMALL, L, relu=True)
    sparse = predict_layer(SMALL, L, ifmap_zero_fraction=0.6, relu=True, ifmap_rlc=True)
    assert sparse.counts["macs_gated"] > 0.5 * (sparse.counts["macs"]
                                                + sparse.counts["macs_gated"]) * 0.9
    assert sparse.counts["pass_cycles"] < dense.counts["pass_cycles"]
    off = predict_layer(SMALL.replace(zero_gating=False), L, ifmap_zero_fraction=0.6)
    assert off.counts["macs_gated"] == 0
    assert off.counts["pass_cycles"] > sparse.counts["pass_cycles"]
    # RLC: fewer ifmap words than raw when sparse
    raw = predict_layer(SMALL, L, ifmap_zero_fraction=0.6)
    assert sparse.counts["dram_reads_data"] < raw.counts["dram_reads_data"]


def test_network_and_explain():
    layers = [ConvLayer(np.zeros((8, 3, 3, 3)), None, 1, 1, relu=True),
              ConvLayer(np.zeros((8, 8, 3, 3)), None, 2, 1, relu=True)]
    net = predict_network(TINY, (1, 3, 8, 8), layers)
    one = predict_layer(TINY, LayerShape(1, 3, 8, 8, 8, 3, 3, 1, 1), relu=True)
    assert net.cycles > one.cycles
    assert net.useful_macs == sum(m.layer.macs for m in net.mappings)
    text = net.explain()
    assert "cycles" in text and "GON" in text
    assert sum(net.phases.values()) == net.cycles


# ---------------------------------------------------------------------------------------
# Model against the RTL (Verilator)
# ---------------------------------------------------------------------------------------

def _data(rng, shape, lo=-300, hi=300, zeros=0.0):
    x = rng.integers(lo, hi + 1, size=shape)
    if zeros:
        x[rng.random(shape) < zeros] = 0
    return x.astype(np.int16)


_ACCS = {}


def _acc(cfg, dram):
    from sw_driver.accelerator import Accelerator
    key = (cfg, dram)
    if key not in _ACCS:
        _ACCS[key] = Accelerator(cfg, dram=dram)
    return _ACCS[key]


def _run_and_predict(cfg, N, C, H, M, R, U=1, P=0, G=1, *, zeros=0.0, relu=False,
                     bias=False, dram=DramModel(), ifmap_rlc=False, seed=0):
    rng = np.random.default_rng(seed)
    x = _data(rng, (N, C, H, H), zeros=zeros)
    w = _data(rng, (M, C // G, R, R), -60, 60)
    b = rng.integers(-2000, 2000, size=M) if bias else None
    acc = _acc(cfg, dram)
    y, stats = acc.conv2d(x, w, b, stride=U, padding=P, groups=G, output_shift=6, relu=relu,
                          ifmap_rlc=ifmap_rlc)
    np.testing.assert_array_equal(y, conv2d(x, w, b, stride=U, padding=P, groups=G,
                                            output_shift=6, relu=relu,
                                            psum_width=cfg.psum_width,
                                            data_width=cfg.data_width))
    L = LayerShape(N, C, H, H, M, R, R, U, P, G)
    pred = predict_layer(cfg, L, dram=dram, ifmap=x, ofmap=y, relu=relu, bias=bias,
                         ifmap_rlc=ifmap_rlc)
    return stats, pred


def _check(stats, pred, *, cycle_tol=CYCLE_TOL, dram_read_tol=0.0):
    c = stats.counters
    err = (pred.cycles - c["cycles"]) / c["cycles"]
    assert abs(err) <= cycle_tol, (
        f"cycles: model {pred.cycles} vs RTL {c['cycles']} ({err:+.1%})\n"
        f"pass {pred.counts['pass_cycles']} vs {c['pass_cycles']}, busy "
        f"{pred.counts['busy_cycles']} vs {c['busy_cycles']}")
    for k in EXACT:
        assert pred.counts[k] == c[k], f"{k}: model {pred.counts[k]} vs RTL {c[k]}"
    dr = pred.counts["dram_reads"]
    assert abs(dr - c["dram_reads"]) <= dram_read_tol * c["dram_reads"] + 0, (
        f"dram_reads: model {dr} vs RTL {c['dram_reads']}")
    return err


#: (preset, layer args, options): stride 1/2, R=S 1/3/5, several passes, folding, groups,
#: N=2, ReLU + RLC ofmaps, sparse ifmaps (zero gating), RLC ifmaps, Eyeriss's DRAM link.
TINY_CASES = [
    ("s1_r3_pad", (1, 3, 8, 8, 3, 1, 1), {}),
    ("s2_r3_fold", (1, 2, 9, 4, 3, 2, 1), {"bias": True}),
    ("r1_passes", (1, 8, 6, 6, 1), {}),
    ("r5_fold_passes", (1, 4, 10, 4, 5, 1, 2), {"relu": True}),
    ("n2_sparse_relu_rlc", (2, 3, 8, 8, 3, 1, 1), {"zeros": 0.6, "relu": True,
                                                    "bias": True}),
    ("groups", (1, 4, 7, 4, 3, 1, 1, 2), {}),
    ("eyeriss_dram", (1, 4, 8, 8, 3, 1, 1), {"dram": DramModel.eyeriss(), "relu": True}),
    ("eyeriss_dram_rlc_in", (1, 4, 8, 6, 3, 1, 1), {"dram": DramModel.eyeriss(),
                                                     "zeros": 0.5, "ifmap_rlc": True,
                                                     "relu": True}),
    # Row strips (the plane does not fit the GLB whole): host-padded, and stride 2 / R=5.
    ("strips_pad_relu", (1, 2, 60, 4, 3, 1, 1), {"relu": True, "bias": True}),
    ("strips_s2_r5", (1, 3, 80, 3, 5, 2, 0), {"dram": DramModel.eyeriss()}),
    # R = 5 with 2 rows of padding: PEs on padding rows skip zeros, run ahead of their
    # chains and take the next row's first columns early (+8.2% before the model saw that).
    ("r5_pad2_row_changes", (2, 3, 12, 4, 5, 2, 2), {}),
]


@pytest.mark.verilator
@pytest.mark.parametrize("name, args, opts", TINY_CASES, ids=[c[0] for c in TINY_CASES])
def test_model_matches_rtl_tiny(name, args, opts):
    stats, pred = _run_and_predict(TINY, *args, **opts)
    tol = 0.02 if opts.get("ifmap_rlc") else 0.0
    _check(stats, pred, dram_read_tol=tol)


SMALL_CASES = [
    ("s1_r3_relu_rlc", (1, 8, 12, 16, 3, 1, 1), {"relu": True, "bias": True}),
    ("s2_r5_eyeriss_dram", (1, 4, 15, 8, 5, 2, 2), {"dram": DramModel.eyeriss()}),
    ("sparse_n2_passes", (2, 16, 8, 24, 3, 1, 1), {"zeros": 0.5, "relu": True}),
]


@pytest.mark.verilator
@pytest.mark.parametrize("name, args, opts", SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_model_matches_rtl_small(name, args, opts):
    stats, pred = _run_and_predict(SMALL, *args, **opts)
    _check(stats, pred)


@pytest.mark.verilator
@pytest.mark.parametrize("N, rlc", [(1, False), (2, True)])
def test_stacked_filter_groups_match_rtl(N, rlc):
    """Two filter groups stacked in each column, each a chain through two channel sets
    (``Mapping.t_rows = 2``, ``r_sets = 2``): bit-exact against the golden model
    (``_run_and_predict``), and the model's exact counts and cycles hold with two chains
    per column."""
    stats, pred = _run_and_predict(SMALL, N, 8, 9, 24, 2, zeros=0.5, relu=True, bias=True,
                                   dram=DramModel.eyeriss(), ifmap_rlc=rlc, seed=7)
    mp = stats.layers[0].mapping
    assert (mp.t_rows, mp.r_sets, mp.t_sets) == (2, 2, 2), mp.explain()
    _check(stats, pred, dram_read_tol=0.02 if rlc else 0.0)


@pytest.mark.verilator
@pytest.mark.parametrize("buffers", [2, 1])
def test_resident_ifmap_is_read_from_dram_once(monkeypatch, buffers):
    """A resident ifmap (``Mapping.ifmap_resident``: all channel blocks of an image block in
    the GLB) is loaded by the first filter block only, channel block by channel block into
    planes of its own, and read again by the later filter blocks. The same layer with the
    ifmap loaded per filter block gives the same ofmap (both bit-exact against the golden
    model) and reads ``(n_mblocks - 1)`` ifmaps fewer from DRAM; the model's counts, DRAM
    reads included, are exact and its cycles within 5%."""
    import sw_driver.mapper as mapper_mod

    runs = {}
    for resident in (False, True):
        # (buffers, resident) candidates; the mapper would pick between them by cost
        monkeypatch.setattr(mapper_mod, "_buffer_options",
                            lambda b, n_cb, r=resident: [(buffers, r, False)])
        stats, pred = _run_and_predict(TINY, 2, 8, 8, 24, 3, P=1, bias=True, seed=5,
                                       dram=DramModel.eyeriss())
        mp = stats.layers[0].mapping
        assert mp.ifmap_resident == resident and mp.buffers == buffers, mp.explain()
        assert mp.n_cblocks > 1 and mp.n_mblocks > 1, mp.explain()
        _check(stats, pred)
        runs[resident] = (stats.counters, pred.counts, mp)
    la = lanes(act_bits(TINY.data_width))
    (c0, p0, mp0), (c1, p1, mp1) = runs[False], runs[True]
    assert (mp0.p, mp0.q, mp0.t_sets, mp0.nb) == (mp1.p, mp1.q, mp1.t_sets, mp1.nb)
    assert mp1.if_copies == 1 and "ifmap.1" not in mp1.glb     # one copy, self-buffering
    ifmap_words = 2 * 8 * math.ceil(8 * 8 / la)       # N * C planes, raw
    assert p0["dram_reads_data"] - p1["dram_reads_data"] == (mp1.n_mblocks - 1) * ifmap_words
    assert c1["dram_reads"] < c0["dram_reads"]


@pytest.mark.verilator
def test_single_psum_region_reads_filters_once_per_larger_image_block(monkeypatch):
    """One psum region (``Mapping.single_psum``) with double-buffered filter and ifmap
    regions: the GLB then holds the psums of 4 images instead of 2, so every filter block's
    filters are read from DRAM once instead of twice. Each filter block's first pass waits
    for the STOREs of the block before (the same psum region): were that wait missing, the
    pass would overwrite psums not yet stored and the ofmap would not be bit-exact. Both
    mappings are bit-exact against the golden model, the model's counts are exact and its
    cycles within 5%, and the model's DRAM data reads drop by exactly one set of filters
    (and biases)."""
    import dataclasses

    import sw_driver.mapper as mapper_mod
    import sw_driver.strips as strips_mod

    L = LayerShape(4, 8, 6, 6, 24, 3, 3, 1, 1)
    monkeypatch.setattr(mapper_mod, "_buffer_options", lambda b, n_cb: [(2, n_cb == 1, True)])
    mp1 = mapper_mod.map_layer(L, TINY, dram_rate=0.3)
    assert mp1.single_psum and mp1.buffers == 2 and mp1.nb == 4, mp1.explain()

    # The same geometry with two psum regions: they hold 2 images, not 4.
    def plan(nb):
        return mapper_mod._glb_plan(
            L, TINY, e=mp1.e, n_fold=mp1.n_fold, Rc=mp1.Rc, r_sets=mp1.r_sets,
            t_sets=mp1.t_sets, p=mp1.p, q=mp1.q, nb=nb, buffers=2,
            if_channels=mp1.if_channels if mp1.ifmap_resident else None,
            if_buffers=mp1.if_copies)
    assert plan(4) is None and plan(2) is not None
    mp0 = dataclasses.replace(mp1, nb=2, single_psum=False, glb=plan(2))

    runs = {}
    for mp in (mp0, mp1):
        # both the driver and the model take this mapping (strips do not map)
        def fixed(shape, config, mp=mp, **kw):
            if shape != L:
                raise ValueError("only the whole layer")
            return mp
        monkeypatch.setattr(strips_mod, "map_layer", fixed)
        stats, pred = _run_and_predict(TINY, 4, 8, 6, 24, 3, P=1, relu=True, bias=True,
                                       zeros=0.4, seed=9, dram=DramModel.eyeriss())
        assert stats.layers[0].mapping is mp
        _check(stats, pred)
        runs[mp.single_psum] = (stats.counters, pred.counts)
    (c0, p0), (c1, p1) = runs[False], runs[True]
    assert "psum.1" not in mp1.glb and "bias.1" not in mp1.glb and "filter.1" in mp1.glb
    assert mp1.n_mblocks > 1            # several filter blocks share the one psum region
    la = lanes(act_bits(TINY.data_width))
    per_pass = math.ceil(mp1.r_sets * mp1.t_sets * mp1.Rc * mp1.filter_tag_values / la)
    assert mp0.n_passes == 2 * mp1.n_passes
    # and one bias word per filter for every filter block of an image block
    bias_words = (mp0.n_nblocks - mp1.n_nblocks) * mp1.n_mblocks * mp1.PT
    assert p0["dram_reads_data"] - p1["dram_reads_data"] == mp1.n_passes * per_pass + bias_words
    assert c1["dram_reads"] < c0["dram_reads"]


@pytest.mark.verilator
def test_single_psum_region_waits_for_the_stores_before(monkeypatch):
    """With one image per block, a filter block's first pass writes the very psum plane
    that the STORE of the block before is still reading (at Eyeriss's 0.3 words/cycle):
    only the pass's wait for STORE keeps the ofmap bit-exact. The model's counts stay exact
    and its cycles within 5%."""
    import sw_driver.mapper as mapper_mod

    monkeypatch.setattr(mapper_mod, "_buffer_options",
                        lambda b, n_cb: [(2, n_cb == 1, True)])
    stats, pred = _run_and_predict(TINY, 1, 8, 6, 24, 3, P=1, relu=True, bias=True,
                                   zeros=0.4, seed=10, dram=DramModel.eyeriss())
    mp = stats.layers[0].mapping
    assert mp.single_psum and mp.nb == 1 and mp.n_mblocks > 1, mp.explain()
    _check(stats, pred)


@pytest.mark.verilator
def test_ci_utilization_regression_small():
    """CI regression check (performance issue): a CONV3-like layer with C and M reduced
    runs on ``small``; the RTL's utilization must match the model's within 5%, so a
    hardware or compiler change that costs cycles shows up as a model/RTL mismatch."""
    stats, pred = _run_and_predict(SMALL, 1, 16, 13, 24, 3, 1, 1, relu=True, bias=True,
                                   zeros=0.3, seed=3)
    util_rtl = stats.utilization
    assert abs(pred.utilization - util_rtl) <= 0.05 * util_rtl, (
        f"utilization: model {pred.utilization:.3f} vs RTL {util_rtl:.3f}")
    _check(stats, pred)


def test_schedule_comes_from_wait_masks():
    """The model follows each command's wait mask: relaxing the masks (as a compiler that
    double-buffers would) lets LOAD run under PASS, and the prediction drops, but never
    below the busiest engine's own time."""
    from hw.layouts import CMD_HEADER, Engine, Opcode, WaitMask
    from sw_driver.compiler import (DramAllocator, PlaneStore, cmd_words, compile_layer)
    from sw_driver.perfmodel import predict_program
    from amaranth.lib import data

    L = LayerShape(1, 8, 10, 10, 16, 3, 3, 1, 1)
    from sw_driver.mapper import map_layer
    mp = map_layer(L, TINY, buffers=(1,))          # single-buffered: the serial schedule

    def program(relax):
        dram = DramAllocator(base=16)
        x = PlaneStore.allocate(dram, L.N, L.C, L.H, L.W, rlc=False)
        y = PlaneStore.allocate(dram, L.N, L.M, L.E, L.F, rlc=False)
        prog = compile_layer(mp, dram, weights=np.zeros((L.M, L.C, L.R, L.S)), bias=None,
                             ifmap=x, ofmap=y)
        words = list(prog.commands) + cmd_words(Opcode.END)
        if relax:
            i = 0
            mask = (1 << CMD_HEADER.size) - 1
            while i < len(words):
                h = data.Const(CMD_HEADER, words[i] & mask)
                n = int(h.n_words)
                if h.opcode == Opcode.RUN:
                    wait = {Engine.LOAD: WaitMask(0), Engine.PASS: WaitMask.LOAD,
                            Engine.STORE: WaitMask.PASS}[h.engine]
                    words[i] = cmd_words(h.opcode, h.engine, [0] * n, wait)[0]
                i += 1 + n
        addr = dram.alloc(len(words))
        return predict_program(TINY, words, addr, tensors=[(x, None), (y, None)],
                               mappings=[mp])

    serial, overlapped = program(False), program(True)
    assert overlapped.cycles < serial.cycles
    assert overlapped.cycles >= serial.counts["pass_cycles"]
    assert any("+" in k for k in overlapped.phases)       # engines ran concurrently
    for k in ("macs", "glb_reads", "glb_writes", "dram_writes"):
        assert overlapped.counts[k] == serial.counts[k]


@pytest.mark.verilator
def test_ifmap_burst_waits_only_for_the_chains_it_feeds(monkeypatch):
    """1x1 filters, p=2, two psum lanes on ``tiny``: each window needs 4 GON transfers and a
    4-value ifmap burst, and the RTL overlaps them at 4 cycles per window. The model used
    to release a burst only when the LAST chain had started its window (5 cycles per
    window); a burst's value for the chain of ifmap tag k goes out k*q cycles after its
    start, so each chain only needs its own slot free by then. Measured with widths 16 and
    32: the per-window slope of the PASS cycles matches exactly."""
    import sw_driver.mapper as mapper_mod
    import sw_driver.strips as strips_mod
    from sw_driver.mapper import Mapping, _glb_plan

    def run(W):
        L = LayerShape(1, 1, 4, W, 2, 1, 1, 1, 0, 1)
        base = mapper_mod.map_layer(L, TINY, refine=0)
        mp = Mapping(L, TINY, e=base.e, n_fold=base.n_fold, Rc=1, n_rchunks=1, r_sets=1,
                     t_sets=1, p=2, q=1, nb=1, buffers=1,
                     glb=_glb_plan(L, TINY, e=base.e, n_fold=base.n_fold, Rc=1, r_sets=1,
                                   t_sets=1, p=2, q=1, nb=1))
        monkeypatch.setattr(strips_mod, "map_layer", lambda *a, **k: mp)
        rng = np.random.default_rng(5)
        x = rng.integers(1, 300, size=(1, 1, 4, W)).astype(np.int16)    # no zeros
        w = _data(rng, (2, 1, 1, 1), -60, 60)
        y, stats = _acc(TINY, DramModel()).conv2d(x, w, None, output_shift=6)
        pred = predict_layer(TINY, L, ifmap=x, ofmap=y, mapping=mp)
        assert stats.layers[0].mapping is mp and mp.psum_groups == 2
        return stats.counters["pass_cycles"], pred.counts["pass_cycles"]

    (r16, m16), (r32, m32) = run(16), run(32)
    assert (r32 - r16) == 4 * 16, (r16, r32)          # the RTL: 4 cycles per window
    assert (m32 - m16) == (r32 - r16), (m16, m32)
    assert abs(m32 - r32) <= 0.05 * r32


def test_row_strips_run_as_one_pipeline(monkeypatch):
    """AlexNet CONV1 on ``eyeriss`` at batch 4 runs as 8 row strips (7 of 7 ofmap rows,
    then one of 6) with the same GLB regions. ``compile_strips`` chains them into one
    software pipeline: only the first two commands wait for every engine, PE roles are set
    once at the start and once more, waiting only for PASS, before the 6-row strip's first
    pass; the strips compiled one by one start each with a load that waits for every
    engine. At batch 1 (the 6-row strip maps differently there, so 7 strips chain) the
    chained list moves the same DRAM words in fewer cycles (model)."""
    import sw_driver.compiler as comp
    from hw.layouts import Opcode, WaitMask
    from sw_driver.perfmodel import _parse_commands
    from sw_driver.strips import plan_layer

    eye = preset("eyeriss")
    L = LayerShape(4, 3, 227, 227, 96, 11, 11, 4)
    _, strips = plan_layer(L, eye, dram_rate=0.3)
    mps = [s.mapping for s in strips]
    assert [s.e1 - s.e0 for s in strips] == [7] * 7 + [6]
    assert comp.strips_chain(mps)

    chain_real = comp.strips_chain

    def commands(chain):
        monkeypatch.setattr(comp, "strips_chain", chain_real if chain else lambda m: False)
        dram = comp.DramAllocator(base=16)
        ins = [comp.PlaneStore.allocate(dram, mp.layer.N, mp.layer.C, mp.layer.H,
                                        mp.layer.W, rlc=False) for mp in mps]
        outs = [comp.PlaneStore.allocate(dram, mp.layer.N, mp.layer.M, mp.layer.E,
                                         mp.layer.F, rlc=True) for mp in mps]
        progs = comp.compile_strips(mps, dram, weights=np.zeros((96, 3, 11, 11)), bias=None,
                                    ifmaps=ins, ofmaps=outs, relu=True)
        return _parse_commands([w for p in progs for w in p.commands], 0)

    chained, separate = commands(True), commands(False)
    all_engines = (WaitMask.LOAD | WaitMask.STORE | WaitMask.PASS).value
    # ROLES, then the first load: the only commands that wait for every engine
    assert [c.index for c in chained if c.wait == all_engines] == [0, 1]
    assert chained[0].opcode == Opcode.ROLES
    assert sum(c.wait == all_engines for c in separate) == 2 * len(strips)
    roles = [c for c in chained if c.opcode == Opcode.ROLES]
    assert len(roles) == 2 and roles[1].wait == WaitMask.PASS.value
    passes = [c.index for c in chained if c.opcode == Opcode.RUN and c.engine.name == "PASS"]
    n7 = sum(mp.n_passes for mp in mps[:7])
    assert passes[n7 - 1] < roles[1].index < passes[n7]      # just before strip 8's first

    layer = ConvLayer(np.zeros((96, 3, 11, 11), dtype=np.int16), stride=4, relu=True)
    monkeypatch.setattr(comp, "strips_chain", chain_real)
    fast = predict_network(eye, (1, 3, 227, 227), [layer], dram=DramModel.eyeriss())
    monkeypatch.setattr(comp, "strips_chain", lambda m: False)
    slow = predict_network(eye, (1, 3, 227, 227), [layer], dram=DramModel.eyeriss())
    assert fast.counts["dram_reads_data"] == slow.counts["dram_reads_data"]
    assert fast.counts["dram_writes"] == slow.counts["dram_writes"]
    assert fast.cycles < 0.99 * slow.cycles, (fast.cycles, slow.cycles)


@pytest.mark.verilator
def test_deep_psum_fifo_lets_zero_skipping_save_cycles():
    """``psum_fifo_depth`` (each PE's output FIFO of finished psums) decouples the PEs of a
    psum chain. With zero skipping every PE's windows cost different cycles; with the
    7-entry FIFO a window waits for the slowest PE of its chain, with 49 entries a PE may
    run about ``48 / p`` windows ahead. The same sparse CONV2-like layer (5 x 5 filters,
    60% zeros, 5-PE chains, p = 8) on ``small`` with both depths: bit-exact, the same
    mapping, the model's counts exact and its cycles within 5% of each run, and the deep
    FIFO faster in the RTL and in the model (measured: 16,836 -> 15,508 cycles)."""
    runs = {}
    for depth in (7, 49):
        cfg = SMALL.replace(psum_fifo_depth=depth)
        stats, pred = _run_and_predict(cfg, 1, 8, 14, 16, 5, 1, 2, zeros=0.6, relu=True,
                                       seed=11)
        _check(stats, pred)
        mp = stats.layers[0].mapping
        runs[depth] = (stats.counters["cycles"], pred.cycles,
                       (mp.p, mp.q, mp.e, mp.n_fold, mp.r_sets, mp.t_sets, mp.nb))
    (r7, m7, g7), (r49, m49, g49) = runs[7], runs[49]
    assert g7 == g49 and g7[0] > 1, (g7, g49)
    assert r49 < 0.95 * r7, (r7, r49)
    assert m49 < 0.95 * m7, (m7, m49)
