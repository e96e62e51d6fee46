"""End to end on Verilator: whole layers through ``Accelerator(...).conv2d``, bit-exact
against the golden model (DESIGN.md section 2), on the ``tiny`` preset (and ``small``).

Each test is one simulation of the cached build: DRAM is loaded and read back in bulk and
the accelerator runs the command list on its own.
"""

import numpy as np
import pytest

from hw.config import preset
from hw.layouts import ErrorCode
from sw_driver.accelerator import Accelerator, ConvLayer
from sw_driver.golden import conv2d, rlc_encode
from sw_driver.targets import AcceleratorError, DramModel

pytestmark = pytest.mark.verilator

TINY = preset("tiny")


@pytest.fixture(scope="module")
def acc():
    return Accelerator(TINY)


def _data(rng, shape, lo=-300, hi=300, zeros=0.0):
    x = rng.integers(lo, hi + 1, size=shape)
    if zeros:
        x[rng.random(shape) < zeros] = 0
    return x.astype(np.int16)


def _check(acc, x, w, b=None, **kw):
    y, stats = acc.conv2d(x, w, b, **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("stride", "padding", "groups",
                                                   "product_shift", "output_shift", "relu")}
    ref = conv2d(x, w, b, psum_width=acc.config.psum_width,
                 data_width=acc.config.data_width, **ref_kw)
    np.testing.assert_array_equal(y, ref)
    assert stats.counters["macs"] + stats.counters["macs_gated"] >= stats.macs
    return y, stats


def test_basic_layer_bias_relu_shifts(acc):
    rng = np.random.default_rng(0)
    x = _data(rng, (1, 2, 8, 8), zeros=0.3)
    w = _data(rng, (3, 2, 3, 3), -100, 100)
    b = rng.integers(-5000, 5000, size=3)
    y, stats = _check(acc, x, w, b, stride=1, padding=1, output_shift=6, relu=True)
    assert y.shape == (1, 3, 8, 8)
    assert stats.cycles > 0 and 0 < stats.utilization <= 1


@pytest.mark.parametrize("R, U, P, H", [(1, 1, 0, 6), (1, 2, 0, 9), (3, 2, 1, 9),
                                        (5, 1, 2, 7), (11, 4, 0, 23)])
def test_filter_sizes_and_strides(acc, R, U, P, H):
    rng = np.random.default_rng(R * 10 + U)
    x = _data(rng, (1, 3, H, H))
    w = _data(rng, (4, 3, R, R), -50, 50)
    _check(acc, x, w, stride=U, padding=P, output_shift=4)


def test_several_passes_folding_and_batch(acc):
    """C and M beyond one pass, E > pe_cols (folding), N > 1, product_shift floor."""
    rng = np.random.default_rng(5)
    x = _data(rng, (2, 5, 12, 12), zeros=0.5)
    w = _data(rng, (7, 5, 3, 3), -2000, 2000)
    y, stats = _check(acc, x, w, stride=1, padding=0, product_shift=3, output_shift=5)
    assert stats.layers[0].mapping.n_fold > 1
    assert stats.layers[0].mapping.n_passes > 1


def test_groups_and_fc(acc):
    rng = np.random.default_rng(7)
    x = _data(rng, (1, 4, 6, 6))
    w = _data(rng, (4, 2, 3, 3), -50, 50)
    _check(acc, x, w, stride=1, padding=1, groups=2, output_shift=3)
    # Fully connected = CONV with R = H, S = W.
    xf = _data(rng, (2, 3, 4, 4))
    wf = _data(rng, (5, 3, 4, 4), -50, 50)
    y, _ = _check(acc, xf, wf, output_shift=4)
    assert y.shape == (2, 5, 1, 1)


def test_extreme_values_wrap_and_saturate():
    cfg = TINY.replace(psum_width=16, psum_lanes=4)
    acc16 = Accelerator(cfg)
    rng = np.random.default_rng(9)
    x = rng.choice([-32768, 32767, 0, 1, -1], size=(1, 2, 6, 6)).astype(np.int16)
    w = rng.choice([-32768, 32767, 3], size=(3, 2, 3, 3)).astype(np.int16)
    _check(acc16, x, w, product_shift=15, output_shift=0)


def test_random_memory_latency_and_backpressure_give_identical_results():
    rng = np.random.default_rng(11)
    x = _data(rng, (1, 3, 9, 9), zeros=0.4)
    w = _data(rng, (5, 3, 3, 3), -80, 80)
    fast = Accelerator(TINY)
    slow = Accelerator(TINY, dram=DramModel(latency=13, jitter_mask=31, rate_num=3,
                                            rate_den=10, stall=90, seed=5))
    y1, s1 = _check(fast, x, w, padding=1, output_shift=4, relu=True)
    y2, s2 = _check(slow, x, w, padding=1, output_shift=4, relu=True)
    np.testing.assert_array_equal(y1, y2)
    assert s2.cycles > s1.cycles


def test_network_keeps_rlc_ofmaps_in_dram(acc):
    rng = np.random.default_rng(13)
    x = _data(rng, (1, 2, 10, 10))
    l1 = ConvLayer(_data(rng, (4, 2, 3, 3), -60, 60), rng.integers(-300, 300, 4), padding=1,
                   output_shift=5, relu=True)
    l2 = ConvLayer(_data(rng, (3, 4, 3, 3), -60, 60), None, stride=2, output_shift=5,
                   relu=True)
    outs, stats = acc.run_network(x, [l1, l2])
    r1 = conv2d(x, l1.weights, l1.bias, padding=1, output_shift=5, relu=True)
    r2 = conv2d(r1, l2.weights, stride=2, output_shift=5, relu=True)
    np.testing.assert_array_equal(outs[0], r1)
    np.testing.assert_array_equal(outs[1], r2)
    assert stats.layers[0].ofmap_words < stats.layers[0].ofmap_dense_words or \
        (r1 != 0).mean() > 0.7


def test_malformed_rlc_sets_error_and_does_not_hang(acc):
    rng = np.random.default_rng(17)
    x = _data(rng, (1, 1, 6, 6), zeros=0.5)
    w = _data(rng, (2, 1, 3, 3))
    # Corrupt the input: clear the last-word bit of the plane's stream.
    import sw_driver.compiler as comp
    orig = comp.PlaneStore.encode

    def broken(self, t, data_width=16):
        words = orig(self, t, data_width)
        if self.rlc:
            n = len(rlc_encode(t[0, 0].ravel()))
            words[n - 1] &= np.uint64((1 << 63) - 1)
        return words

    comp.PlaneStore.encode = broken
    try:
        with pytest.raises(AcceleratorError) as info:
            acc.conv2d(x, w, ifmap_rlc=True, max_cycles=200_000)
    finally:
        comp.PlaneStore.encode = orig
    assert info.value.code == ErrorCode.RLC_MALFORMED
    # The same accelerator then runs a good layer.
    _check(acc, x, w, ifmap_rlc=True)


def test_reset_mid_layer_then_clean_rerun(acc):
    rng = np.random.default_rng(19)
    x = _data(rng, (1, 3, 10, 10))
    w = _data(rng, (4, 3, 3, 3), -50, 50)
    y, stats = _check(acc, x, w, padding=1, output_shift=3, reset_at=1500)
    assert stats.reset_while_busy


def test_random_shapes_bit_exact(acc):
    """Random layer shapes not listed elsewhere, against the golden model."""
    rng = np.random.default_rng(23)
    for _ in range(4):
        R = int(rng.integers(1, 5))
        U = int(rng.integers(1, 4))
        P = int(rng.integers(0, 2))
        H = int(rng.integers(R + 1, 13))
        C = int(rng.integers(1, 6))
        M = int(rng.integers(1, 9))
        N = int(rng.integers(1, 3))
        x = _data(rng, (N, C, H, H), zeros=float(rng.random()) * 0.7)
        w = _data(rng, (M, C, R, R), -128, 128)
        _check(acc, x, w, stride=U, padding=P, output_shift=int(rng.integers(0, 8)),
               relu=bool(rng.integers(0, 2)), ifmap_rlc=bool(rng.integers(0, 2)))


def test_small_preset_layer():
    acc8 = Accelerator(preset("small"))
    rng = np.random.default_rng(29)
    x = _data(rng, (2, 6, 14, 14), zeros=0.5)
    w = _data(rng, (10, 6, 3, 3), -60, 60)
    _check(acc8, x, w, padding=1, output_shift=5, relu=True)


@pytest.mark.slow
def test_eyeriss_conv3_shaped_layer():
    """AlexNet CONV3 shape (13x13, 3x3, pad 1) on the 12x14 eyeriss preset, C and M cut
    for time; prints cycles against the ideal MACs / 168."""
    acc_e = Accelerator(preset("eyeriss"))
    rng = np.random.default_rng(31)
    x = _data(rng, (1, 32, 13, 13), -64, 64, zeros=0.5)
    w = _data(rng, (48, 32, 3, 3), -64, 64)
    y, stats = _check(acc_e, x, w, padding=1, product_shift=6, relu=True)
    ideal = stats.macs / 168
    print(f"\neyeriss CONV3-shaped (N=1, C=32, M=48): {stats.cycles} cycles, ideal "
          f"{ideal:.0f} (MACs/168), utilization {stats.utilization:.1%}, "
          f"{stats.cycles_per_second:,.0f} simulated cycles/s")
    print(stats.layers[0].mapping.explain())


def test_pysim_target_matches_golden_and_verilator(acc):
    """The Amaranth-simulation target (Python DRAM with latency and backpressure) gives the
    same ofmap as the golden model and as the Verilator target."""
    rng = np.random.default_rng(37)
    x = _data(rng, (1, 2, 6, 6), zeros=0.3)
    w = _data(rng, (3, 2, 3, 3), -100, 100)
    b = rng.integers(-500, 500, size=3)
    py = Accelerator(TINY, "pysim", dram=DramModel(latency=5, jitter_mask=7, stall=60))
    y_py, s_py = _check(py, x, w, b, padding=1, output_shift=6, relu=True)
    y_vl, s_vl = _check(acc, x, w, b, padding=1, output_shift=6, relu=True)
    np.testing.assert_array_equal(y_py, y_vl)
    assert s_py.counters["macs"] == s_vl.counters["macs"]


def _layer_4x6x6_to_6():
    """A 3x3 layer, C=4 6x6 -> M=6 (20% zeros), that maps double-buffered on ``tiny``."""
    rng = np.random.default_rng(44)
    x = _data(rng, (1, 4, 6, 6), zeros=0.2)
    w = _data(rng, (6, 4, 3, 3), -100, 100)
    return x, w, rng.integers(-500, 500, size=6)


def test_pysim_dram_serves_overlapped_loads_and_stores_like_verilator(acc):
    """A double-buffered layer, whose LOADs and STOREs reach the DRAM in the same cycles:
    the Amaranth-simulation target's DRAM accepts one transfer per cycle with alternating
    priority, as ``sim_dram.v`` does, so both targets take the same cycles. (It used to
    raise a read's ready together with a write and drop the read: the run hung.)"""
    x, w, b = _layer_4x6x6_to_6()
    kw = dict(padding=1, output_shift=6, relu=True)
    y_py, s_py = _check(Accelerator(TINY, "pysim"), x, w, b, max_cycles=20_000, **kw)
    y_vl, s_vl = _check(acc, x, w, b, **kw)
    assert s_vl.layers[0].mapping.buffers == 2
    np.testing.assert_array_equal(y_py, y_vl)
    assert s_py.cycles == s_vl.cycles
    assert s_py.counters["dram_reads"] == s_vl.counters["dram_reads"]


def _same_layer_two_configs(configs, x, w, b, **kw):
    """Run one layer on each config in Amaranth simulation (no Verilator); assert both
    bit-exact (``_check``), equal to each other and mapped the same way (p, q, e, t_sets,
    t_rows, r_sets, nb), so that a cycle difference comes from the hardware alone. Returns
    ``[(PASS cycles, mapping)]`` per config."""
    out = []
    for cfg in configs:
        y, st = _check(Accelerator(cfg, "pysim"), x, w, b, **kw)
        out.append((y, st.counters["pass_cycles"], st.layers[0].mapping))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    shape = lambda m: (m.p, m.q, m.e, m.t_sets, m.t_rows, m.r_sets, m.nb)   # noqa: E731
    assert shape(out[0][2]) == shape(out[1][2])
    return [(cycles, mp) for _, cycles, mp in out]


def test_filter_lanes_one_and_four_agree_and_four_loads_faster():
    """The same layer with one filter value per filter-GIN transfer (the ``fpga`` preset's
    PE) and with a whole GLB word of four (the other presets): both bit-exact with the same
    mapping, and the PASS engine's cycles drop with the wide filter loads."""
    x, w, b = _layer_4x6x6_to_6()
    (c1, m1), (c4, _) = _same_layer_two_configs(
        [TINY.replace(filter_lanes=lanes) for lanes in (1, 4)], x, w, b,
        padding=1, output_shift=6, relu=True)
    assert m1.p * m1.q * 3 > 4                         # more than one transfer per tag
    assert c4 < c1, (c4, c1)


def test_psum_lanes_one_and_two_agree_and_two_drain_faster():
    """A GON-bound layer (1x1 filters: p MACs per window against p*e psums to drain) with
    one psum per GON / psum-GIN transfer (the ``fpga`` preset's array) and with a whole GLB
    word of two 32-bit psums (``tiny``): both bit-exact with the same mapping, and the PASS
    engine's cycles drop with the wide GON."""
    rng = np.random.default_rng(46)
    x = _data(rng, (1, 2, 8, 8), zeros=0.2)
    w = _data(rng, (16, 2, 1, 1), -100, 100)
    b = rng.integers(-500, 500, size=16)
    (c1, m1), (c2, m2) = _same_layer_two_configs(
        [TINY.replace(psum_lanes=lanes) for lanes in (1, 2)], x, w, b,
        output_shift=6, relu=True)
    assert m2.e_pad == m2.e and m2.psum_groups * 2 == m2.e   # whole groups of 2 chains
    # GON-bound: each window drains p*e psums (p*e/2 transfers with 2 lanes) for p MACs
    assert m1.p * m1.e * m1.t_sets > m1.p * m1.q
    assert m1.t_rows == 2          # two filter groups stacked: two chains per column
    # measured: 1,104 -> 608 PASS cycles; at least a quarter fewer
    assert c2 * 4 < c1 * 3, (c2, c1)


def test_unknown_target_and_unmappable_layer_are_rejected():
    with pytest.raises(ValueError, match="unknown target 'fpga-x'"):
        Accelerator(TINY, "fpga-x")
    acc_t = Accelerator(TINY, "pysim")
    with pytest.raises(ValueError, match="filter width S=13 exceeds the ifmap spad"):
        acc_t.map((1, 1, 20, 20), (1, 1, 13, 13))
    with pytest.raises(ValueError, match="larger than the padded ifmap"):
        acc_t.map((1, 1, 4, 4), (1, 1, 5, 5))


def test_row_strips_when_the_ifmap_plane_does_not_fit_the_glb(acc):
    """A 60x60 plane with its psum block needs more than tiny's 2,048-word GLB: the driver
    runs it as row strips (sw_driver.strips, like AlexNet CONV1 on the eyeriss preset),
    host-padded because padding = 1, in one command list; the result is bit-exact."""
    rng = np.random.default_rng(60)
    x = _data(rng, (1, 2, 60, 60), zeros=0.3)
    w = _data(rng, (4, 2, 3, 3), -60, 60)
    b = rng.integers(-2000, 2000, size=4)
    with pytest.raises(ValueError, match="cannot be mapped"):
        acc.map(x.shape, w.shape, padding=1)
    ((padded, strips),) = acc.plan_network(x.shape, [ConvLayer(w, b, 1, 1)])
    assert padded and len(strips) > 1
    assert strips[0].e0 == 0 and strips[-1].e1 == 60
    assert all(a.e1 == c.e0 for a, c in zip(strips, strips[1:]))
    # Strip j reads padded rows [e0, e1 + 2): neighbours overlap by R - U = 2 rows.
    assert all(s.h0 == s.e0 and s.h1 == s.e1 + 2 for s in strips)
    y, stats = _check(acc, x, w, b, stride=1, padding=1, output_shift=6, relu=True)
    assert stats.macs == 4 * 2 * 9 * 60 * 60
    assert len(stats.layers) == len(strips)


def test_only_a_first_layer_may_be_strip_mined():
    """Layer 1 reads a 48x48 plane (from layer 0's padding) and, padded to 52x52, needs more
    than tiny's 8 GLB banks (3 for the ifmap, 5 for the 50x50 32-bit psums, 1 for the
    filters): the driver refuses to split an ofmap already in DRAM."""
    from sw_driver.strips import plan_network
    w0 = np.ones((1, 1, 1, 1), np.int16)
    w1 = np.ones((1, 1, 3, 3), np.int16)
    ((padded, strips),) = plan_network(TINY, (1, 1, 20, 20), [ConvLayer(w0, padding=14)])
    assert not padded and len(strips) == 1
    with pytest.raises(ValueError, match="only a network's first layer can be strip-mined"):
        plan_network(TINY, (1, 1, 20, 20), [ConvLayer(w0, padding=14),
                                            ConvLayer(w1, padding=2)])


# -- double-buffered GLB regions: loads and stores overlap the passes -----------------------

@pytest.mark.parametrize("shape", [
    dict(N=2, C=6, H=9, M=10, R=3, U=1, P=1, G=1),       # several units, N > 1 stores
    dict(N=1, C=4, H=11, M=8, R=5, U=2, P=0, G=2),       # groups, strip-mined rows
    dict(N=3, C=3, H=7, M=5, R=3, U=1, P=1, G=1),        # more stores than passes per unit
])
def test_double_buffered_schedule_is_bit_exact_under_backpressure(shape):
    """Forced double buffering (software-pipelined command list with partial wait masks)
    against the serial schedule, on a DRAM with jitter, 0.3 words/cycle and 35% refusals:
    same ofmap, both bit-exact, and the engines really overlapped."""
    rng = np.random.default_rng(shape["C"] * 7 + shape["R"])
    x = _data(rng, (shape["N"], shape["C"], shape["H"], shape["H"]), zeros=0.5)
    w = _data(rng, (shape["M"], shape["C"] // shape["G"], shape["R"], shape["R"]), -90, 90)
    b = rng.integers(-3000, 3000, size=shape["M"])
    dram = DramModel(latency=13, jitter_mask=31, rate_num=3, rate_den=10, stall=90, seed=3)
    kw = dict(stride=shape["U"], padding=shape["P"], groups=shape["G"], output_shift=5,
              relu=True, ifmap_rlc=True)
    ys = {}
    for bufs in (1, 2):
        a = Accelerator(TINY, dram=dram, buffers=(bufs,))
        ys[bufs], st = _check(a, x, w, b, **kw)
        mp = st.layers[0].mapping
        assert mp.buffers == bufs
        if bufs == 2:
            assert mp.n_passes > 1
            # Overlap: the command list has commands that do not wait for every engine.
            from sw_driver.compiler import DramAllocator, PlaneStore, compile_layer
            from hw.layouts import CMD_HEADER, Opcode
            d = DramAllocator()
            L = mp.layer
            prog = compile_layer(mp, d, weights=w, bias=b,
                                 ifmap=PlaneStore.allocate(d, L.N, L.C, L.H, L.W, rlc=True),
                                 ofmap=PlaneStore.allocate(d, L.N, L.M, L.E, L.F, rlc=True))
            runs, i = [], 0
            while i < len(prog.commands):
                h = CMD_HEADER.from_bits(prog.commands[i])
                if h.opcode == Opcode.RUN:
                    runs.append((h.engine, h.wait))
                i += 1 + int(h.n_words)
            from hw.layouts import Engine, WaitMask
            all_ = WaitMask.LOAD | WaitMask.STORE | WaitMask.PASS
            assert runs[0] == (Engine.LOAD, all_)          # the layer's first load
            assert all(wt == WaitMask.LOAD for e, wt in runs if e == Engine.PASS)
            assert sum(1 for e, wt in runs if e == Engine.LOAD and wt == WaitMask(0)) > 1
            assert all(wt != all_ for _, wt in runs[1:])
    np.testing.assert_array_equal(ys[1], ys[2])


def test_double_buffered_network_waits_for_the_previous_layers_stores():
    """Two layers in one command list, double-buffered: layer 2 reads layer 1's ofmap
    from DRAM, so its first load must wait for every STORE of layer 1."""
    rng = np.random.default_rng(21)
    x = _data(rng, (2, 3, 10, 10), zeros=0.2)
    w1 = _data(rng, (6, 3, 3, 3), -60, 60)
    w2 = _data(rng, (4, 6, 3, 3), -60, 60)
    layers = [ConvLayer(w1, None, padding=1, output_shift=5, relu=True),
              ConvLayer(w2, None, stride=2, padding=1, output_shift=5, relu=True)]
    a = Accelerator(TINY, dram=DramModel(latency=9, jitter_mask=15, stall=60, seed=8),
                    buffers=(2,))
    outs, stats = a.run_network(x, layers)
    ref = x
    for layer, y in zip(layers, outs):
        ref = conv2d(ref, layer.weights, None, stride=layer.stride, padding=layer.padding,
                     output_shift=layer.output_shift, relu=True, psum_width=TINY.psum_width)
        np.testing.assert_array_equal(y, ref)
    assert all(l.mapping.buffers == 2 for l in stats.layers)
