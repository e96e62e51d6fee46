"""``sw_driver.bounds``: lower bounds over every mapping, checked against the RTL."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gen.cli import main
from sim_tests.test_perfmodel import TINY, _run_and_predict
from sw_driver.bounds import layer_bounds, nonzero_counts, plane_words, plans_below
from sw_driver.golden import conv2d, rlc_encode
from sw_driver.mapper import LayerShape
from sw_driver.targets import DramModel


def test_nonzero_counts_match_a_direct_count():
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(2, 3, 9, 9)).astype(np.int16)      # about 1/7 zeros
    L = LayerShape(2, 3, 9, 9, 4, 3, 3, 2, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 3, L.E), np.int64)
    for e in range(L.E):
        for f in range(L.F):
            win = xp[:, :, e * 2:e * 2 + 3, f * 2:f * 2 + 3]
            want[:, :, e] += (win != 0).sum(axis=(2, 3))
    np.testing.assert_array_equal(nonzero_counts(x, L), want)


def test_plane_words_raw_and_rlc():
    x = np.zeros((1, 2, 5, 5), np.int16)
    x[0, 0, 2, 2] = 7
    assert plane_words(x, rlc=False) == 2 * 7                   # 25 values, 4 per word
    assert plane_words(x, rlc=True) == (len(rlc_encode(x[0, 0].ravel()))
                                        + len(rlc_encode(x[0, 1].ravel())))


@pytest.mark.verilator
@pytest.mark.parametrize("args, opts", [
    ((1, 3, 8, 8, 3, 1, 1), {}),
    ((2, 3, 8, 8, 3, 1, 1), {"zeros": 0.6, "relu": True, "bias": True}),
    ((1, 4, 8, 6, 3, 1, 1), {"dram": DramModel.eyeriss(), "relu": True}),
    ((1, 4, 10, 4, 5, 1, 2), {"relu": True}),
])
def test_bounds_never_exceed_the_rtl(args, opts):
    """The RTL runs one of the mappings the bounds range over, so its cycles and DRAM words
    are at least the bounds; and the bounds are not vacuous (at least a quarter of the RTL's
    cycles; every weight and ifmap value in the DRAM words)."""
    stats, pred = _run_and_predict(TINY, *args, **opts)
    N, C, H, M, R = args[:5]
    U = args[5] if len(args) > 5 else 1
    P = args[6] if len(args) > 6 else 0
    L = LayerShape(N, C, H, H, M, R, R, U, P)
    rng = np.random.default_rng(0)            # the ifmap _run_and_predict drew
    x = rng.integers(-300, 301, size=(N, C, H, H))
    if opts.get("zeros"):
        x[rng.random(x.shape) < opts["zeros"]] = 0
    dram = opts.get("dram", DramModel())
    w = rng.integers(-60, 61, size=(M, C, R, R))
    b = rng.integers(-2000, 2000, size=M) if opts.get("bias") else None
    y = conv2d(x.astype(np.int16), w.astype(np.int16), b, stride=U, padding=P,
               output_shift=6, relu=bool(opts.get("relu")), psum_width=TINY.psum_width,
               data_width=TINY.data_width)
    bd = layer_bounds(L, TINY, x.astype(np.int16), y, dram_rate=dram.rate_num / dram.rate_den,
                      ifmap_rlc=False, ofmap_rlc=bool(opts.get("relu")))
    c = stats.counters
    moved = c["dram_reads"] + c["dram_writes"]
    assert bd.cycles <= c["cycles"], (bd.cycles, c["cycles"])
    assert bd.dram_words <= moved, (bd.dram_words, moved)
    assert bd.cycles >= c["cycles"] / 4, (bd.cycles, c["cycles"])
    # the RTL's reads also fetch the command list and the bias, which the bound leaves out;
    # the bound holds at least every weight once and every ifmap value once
    assert bd.dram_words >= -(-M * C * R * R // 4) + plane_words(x.astype(np.int16), False)
    assert bd.candidates > 1


def test_bench_bounds_cli_writes_json(tmp_path):
    res = CliRunner().invoke(main, ["bench", "alexnet", "--bounds", "--preset", "small",
                                    "--scale-c", "8", "--scale-m", "8", "--batch", "1",
                                    "--layers", "conv2,conv3", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "bounds.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["conv2", "conv3"]
    for r in data["layers"]:
        assert r["cycles_bound"] > 0 and r["dram_words_bound"] > 0
        assert r["utilization_bound"] == pytest.approx(r["ideal_cycles"] / r["cycles_bound"])
    assert data["dram_words_bound"] == sum(r["dram_words_bound"] for r in data["layers"])
    assert "DRAM words >=" in res.output


def _tiny_layer(seed=1):
    rng = np.random.default_rng(seed)
    L = LayerShape(2, 3, 10, 10, 6, 3, 3, 1, 1)
    x = rng.integers(-200, 201, size=(L.N, L.C, L.H, L.W)).astype(np.int16)
    x[rng.random(x.shape) < 0.4] = 0
    w = rng.integers(-60, 61, size=(L.M, L.C, L.R, L.S)).astype(np.int16)
    y = conv2d(x, w, None, stride=1, padding=1, output_shift=6, relu=True,
               psum_width=TINY.psum_width, data_width=TINY.data_width)
    return L, x, y


def test_plans_below_screen_every_mapping_and_start_at_the_bound():
    """Whole layer: one plan per candidate, lowest bound first; the lowest is the layer's
    cycle bound, and a threshold keeps exactly the plans under it."""
    L, x, y = _tiny_layer()
    kw = dict(dram_rate=0.3, ifmap_rlc=True, ofmap_rlc=True)
    bd = layer_bounds(L, TINY, x, y, **kw)
    plans = plans_below(L, TINY, x, y, float("inf"), **kw)
    assert len(plans) == bd.candidates
    bounds = [b for b, _ in plans]
    assert bounds == sorted(bounds) and bounds[0] == bd.cycles
    cut = bounds[len(bounds) // 2]
    under = plans_below(L, TINY, x, y, cut, **kw)
    assert len(under) == sum(b < cut for b in bounds) and all(b < cut for b, _ in under)
    for _, plan in plans:
        assert len(plan) == 1 and (plan[0].e0, plan[0].e1) == (0, L.E)


def test_model_runs_a_given_strip_plan_like_the_drivers_own():
    """A strip plan handed to the model (``mapping=[Strip, ...]``) predicts what the
    driver's own plan for the layer predicts when the plans are the same."""
    from sw_driver.perfmodel import predict_layer
    from sw_driver.strips import plan_layer

    L = LayerShape(1, 2, 40, 40, 4, 3, 3, 1, 0)
    cfg = TINY
    _, strips = plan_layer(L, cfg, strips_if_cheaper=True)
    assert len(strips) > 1           # the 40 x 40 plane does not fit tiny's GLB
    own = predict_layer(cfg, L, relu=True)
    given = predict_layer(cfg, L, relu=True, mapping=list(strips))
    assert given.cycles == own.cycles and given.counts == own.counts
    # and a plan with another strip count is modelled as that plan
    other = plans_below(L, cfg, np.ones((1, 2, 40, 40), np.int16),
                        np.ones((1, 4, 38, 38), np.int16), float("inf"), dram_rate=1.0,
                        ifmap_rlc=False, ofmap_rlc=True, strips=True)
    alt = next(plan for _, plan in other if len(plan) not in (1, len(strips)))
    assert predict_layer(cfg, L, relu=True, mapping=alt).cycles != own.cycles


def test_model_check_needs_bounds():
    res = CliRunner().invoke(main, ["bench", "alexnet", "--model-check"])
    assert res.exit_code == 2 and "--bounds" in res.output
