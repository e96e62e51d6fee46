"""Tests of the NumPy golden model, ``sw_driver.golden``.

The convolution is checked against a deliberately naive pure-Python implementation written
from the numerics contract (DESIGN.md section 2), and the RLC codec against words packed by
hand from the format contract (DESIGN.md section 3).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sw_driver import golden
from sw_driver.golden import conv2d, dequantize, quantize, rlc_decode, rlc_encode

I16_MIN, I16_MAX = -32768, 32767
LAST = 1 << 63


# =====================================================================================
# Naive reference convolution: Python ints, explicit loops, straight from the contract.
# =====================================================================================

def naive_point(x, w, bias, n, m, e, f, *, stride, padding, groups, product_shift,
                output_shift, psum_width, data_width, relu):
    """One output value y[n, m, e, f], computed with Python ints."""
    _, C, H, W = x.shape
    M, Cg, R, S = w.shape
    g = m // (M // groups)
    acc = int(bias[m]) if bias is not None else 0
    for c in range(Cg):
        for r in range(R):
            for s in range(S):
                i = e * stride + r - padding          # row in the unpadded ifmap
                j = f * stride + s - padding
                xv = int(x[n, g * Cg + c, i, j]) if (0 <= i < H and 0 <= j < W) else 0
                prod = xv * int(w[m, c, r, s])
                acc += prod >> product_shift          # Python >> is floor for negatives
    # wrap to psum_width bits, two's complement
    acc %= 1 << psum_width
    if acc >= 1 << (psum_width - 1):
        acc -= 1 << psum_width
    if output_shift > 0:
        y = (acc + (1 << (output_shift - 1))) >> output_shift
    else:
        y = acc
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    y = max(lo, min(hi, y))
    if relu:
        y = max(y, 0)
    return y


def naive_conv2d(x, w, bias=None, *, stride=1, padding=0, groups=1, product_shift=0,
                 output_shift=0, psum_width=32, data_width=16, relu=False):
    N, C, H, W = x.shape
    M, Cg, R, S = w.shape
    E = (H + 2 * padding - R) // stride + 1
    F = (W + 2 * padding - S) // stride + 1
    kw = dict(stride=stride, padding=padding, groups=groups, product_shift=product_shift,
              output_shift=output_shift, psum_width=psum_width, data_width=data_width,
              relu=relu)
    out = [[[[naive_point(x, w, bias, n, m, e, f, **kw) for f in range(F)]
             for e in range(E)] for m in range(M)] for n in range(N)]
    return np.array(out, dtype=object).reshape(N, M, E, F)


def assert_same(got, want):
    assert got.shape == want.shape
    assert [int(v) for v in got.ravel()] == [int(v) for v in want.ravel()]


# =====================================================================================
# Property tests: golden.conv2d == naive reference
# =====================================================================================

def extreme_ints(bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return st.one_of(st.sampled_from([lo, hi, lo + 1, hi - 1, 0, 1, -1]),
                     st.integers(lo, hi))


@st.composite
def conv_case(draw, data_widths=(16,), psum_widths=(16, 24, 32)):
    data_width = draw(st.sampled_from(data_widths))
    psum_width = draw(st.sampled_from([p for p in psum_widths if p >= data_width]))
    N = draw(st.integers(1, 2))
    groups = draw(st.integers(1, 3))
    Cg = draw(st.integers(1, 2))
    Mg = draw(st.integers(1, 2))
    R = draw(st.integers(1, 5))
    S = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 4))
    padding = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, R - 2 * padding), max(1, R - 2 * padding) + 5))
    W = draw(st.integers(max(1, S - 2 * padding), max(1, S - 2 * padding) + 5))
    # A "big" draw fills the tensors with extremes, which overflows narrow psums.
    big = draw(st.booleans())
    elem = (st.sampled_from([-(1 << (data_width - 1)), (1 << (data_width - 1)) - 1])
            if big else extreme_ints(data_width))
    x = draw(hnp.arrays(np.int64, (N, groups * Cg, H, W), elements=elem))
    w = draw(hnp.arrays(np.int64, (groups * Mg, Cg, R, S), elements=elem))
    bias = draw(st.none() | hnp.arrays(np.int64, (groups * Mg,),
                                      elements=extreme_ints(psum_width)))
    product_shift = draw(st.one_of(st.just(0), st.sampled_from([1, data_width - 1]),
                                   st.integers(0, 2 * data_width - 1)))
    output_shift = draw(st.one_of(st.just(0), st.integers(0, psum_width - 1)))
    relu = draw(st.booleans())
    kw = dict(stride=stride, padding=padding, groups=groups, product_shift=product_shift,
              output_shift=output_shift, psum_width=psum_width, data_width=data_width,
              relu=relu)
    return x, w, bias, kw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_case())
def test_conv2d_matches_naive(case):
    x, w, bias, kw = case
    got = conv2d(x, w, bias, **kw)
    assert got.dtype == np.int16
    assert_same(got, naive_conv2d(x, w, bias, **kw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_case(data_widths=(8, 12, 32), psum_widths=(8, 16, 40, 48, 64)))
def test_conv2d_matches_naive_other_widths(case):
    """int8/int32 outputs, psum_width up to 64 and the uint64 (non-float) summation path
    that 32-bit data forces."""
    x, w, bias, kw = case
    got = conv2d(x, w, bias, **kw)
    assert got.dtype == golden.int_dtype(kw["data_width"])
    assert_same(got, naive_conv2d(x, w, bias, **kw))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.booleans(), st.integers(1, 40))
def test_conv2d_psum16_overflow_many_terms(product_shift, output_shift, relu, C):
    """Eyeriss setting (psum_width=16) with many large products: the sum wraps many times."""
    rng = np.random.default_rng(C * 1000 + product_shift * 16 + output_shift)
    x = rng.choice([I16_MIN, I16_MAX, 30000, -30000, 12345], size=(1, C, 4, 4))
    w = rng.choice([I16_MIN, I16_MAX, 29999, -31000, 777], size=(3, C, 3, 3))
    bias = rng.integers(I16_MIN, I16_MAX + 1, size=3)
    kw = dict(product_shift=product_shift, output_shift=output_shift, psum_width=16,
              relu=relu)
    assert_same(conv2d(x, w, bias, **kw), naive_conv2d(x, w, bias, **kw))


# =====================================================================================
# Hand-computed numerics
# =====================================================================================

def one(v):
    """A (1, 1, 1, 1) tensor."""
    return np.array(v, dtype=np.int64).reshape(1, 1, 1, 1)


def acc_out(acc, **kw):
    """Output for a given accumulator value: x=1, w=0, bias=acc."""
    return int(conv2d(one(1), one(0), np.array([acc]), **kw)[0, 0, 0, 0])


def test_product_shift_floors_negative_products():
    # 3 * -1 = -3; -3 >> 1 = floor(-1.5) = -2 (truncation would give -1)
    assert int(conv2d(one(3), one(-1), product_shift=1)[0, 0, 0, 0]) == -2
    # the shift is per product: two products of -3 give -2 + -2 = -4, not (-6) >> 1 = -3
    x = np.array([3, 3]).reshape(1, 2, 1, 1)
    w = np.array([-1, -1]).reshape(1, 2, 1, 1)
    assert int(conv2d(x, w, product_shift=1)[0, 0, 0, 0]) == -4
    # positive products floor toward zero: 7 >> 2 = 1
    assert int(conv2d(one(7), one(1), product_shift=2)[0, 0, 0, 0]) == 1
    # -7 >> 2 = floor(-1.75) = -2
    assert int(conv2d(one(-7), one(1), product_shift=2)[0, 0, 0, 0]) == -2
    # the largest product (-32768)^2 = 2**30, >> 31 = 0; and -32768 * 32767 >> 31 = -1
    assert int(conv2d(one(I16_MIN), one(I16_MIN), product_shift=31)[0, 0, 0, 0]) == 0
    assert int(conv2d(one(I16_MIN), one(I16_MAX), product_shift=31)[0, 0, 0, 0]) == -1


@pytest.mark.parametrize("acc, shift, want", [
    (-3, 1, -1),     # -1.5 -> -1
    (-5, 1, -2),     # -2.5 -> -2
    (5, 1, 3),       # 2.5 -> 3
    (3, 1, 2),       # 1.5 -> 2
    (-4, 1, -2),     # exact
    (-6, 2, -1),     # -1.5 -> -1
    (-7, 2, -2),     # -1.75 -> -2
    (-2, 2, 0),      # -0.5 -> 0
    (-3, 2, -1),     # -0.75 -> -1
    (1, 1, 1),       # 0.5 -> 1
    (-1, 1, 0),      # -0.5 -> 0
    (7, 0, 7),       # no shift, no rounding
    (-7, 0, -7),
    (256 * 100 + 128, 8, 101),
    (256 * 100 + 127, 8, 100),
    (-(256 * 100 + 128), 8, -100),
    (-(256 * 100 + 129), 8, -101),
])
def test_output_shift_rounds_half_up(acc, shift, want):
    assert acc_out(acc, output_shift=shift) == want


def test_output_shift_rounding_at_psum_extremes():
    # psum_width=64: acc = 2**63 - 1 must not overflow while rounding
    top = (1 << 63) - 1
    assert acc_out(top, output_shift=48, psum_width=64) == 32767     # saturates
    assert acc_out(top, output_shift=62, psum_width=64) == 2         # 1.99.. -> 2
    assert acc_out(-(1 << 63), output_shift=63, psum_width=64) == -1
    assert acc_out((1 << 31) - 1, output_shift=31) == 1              # 0.99.. -> 1
    assert acc_out(-(1 << 31), output_shift=31) == -1


def test_saturation_both_ends():
    assert acc_out(40000) == I16_MAX
    assert acc_out(-40000) == I16_MIN
    assert acc_out(32767) == I16_MAX
    assert acc_out(32768) == I16_MAX
    assert acc_out(-32768) == I16_MIN
    assert acc_out(-32769) == I16_MIN
    # after rounding: 65535 >> 1 rounds to 32768, which saturates
    assert acc_out(65535, output_shift=1) == I16_MAX
    assert acc_out(65533, output_shift=1) == I16_MAX    # 32766.5 -> 32767
    assert acc_out(65531, output_shift=1) == 32766      # 32765.5 -> 32766
    # -65537 >> 1 = -32768.5 -> -32768 (half up), -65538 >> 1 = -32769 saturates
    assert acc_out(-65537, output_shift=1) == I16_MIN
    assert acc_out(-65538, output_shift=1) == I16_MIN
    # narrower data: int8
    y = conv2d(one(100), one(100), data_width=8, psum_width=16)
    assert y.dtype == np.int8 and int(y[0, 0, 0, 0]) == 127
    y = conv2d(one(-100), one(100), data_width=8, psum_width=16)
    assert int(y[0, 0, 0, 0]) == -128


def test_wraparound_psum16():
    # 200 * 200 = 40000 -> 40000 - 65536 = -25536 in 16 bits
    assert int(conv2d(one(200), one(200), psum_width=16)[0, 0, 0, 0]) == -25536
    # two such products: 80000 mod 65536 = 14464
    x = np.full((1, 2, 1, 1), 200)
    w = np.full((1, 2, 1, 1), 200)
    assert int(conv2d(x, w, psum_width=16)[0, 0, 0, 0]) == 14464
    # bias + product wraps: 32767 + 1 = -32768
    assert int(conv2d(one(1), one(1), np.array([32767]), psum_width=16)[0, 0, 0, 0]) == I16_MIN
    # the same sum without wrap at 32 bits saturates instead
    assert int(conv2d(one(1), one(1), np.array([32767]), psum_width=32)[0, 0, 0, 0]) == I16_MAX
    # (-32768)^2 = 2**30 wraps to 0 at 16 bits and at 24 bits, but not at 32
    assert int(conv2d(one(I16_MIN), one(I16_MIN), psum_width=16)[0, 0, 0, 0]) == 0
    assert int(conv2d(one(I16_MIN), one(I16_MIN), psum_width=24)[0, 0, 0, 0]) == 0
    assert int(conv2d(one(I16_MIN), one(I16_MIN), psum_width=32, output_shift=16)
               [0, 0, 0, 0]) == 16384
    # wrap happens before the output shift: 40000 -> -25536, >> 4 -> -1596
    assert int(conv2d(one(200), one(200), psum_width=16, output_shift=4)[0, 0, 0, 0]) == -1596


def test_relu_after_saturation():
    assert acc_out(-40000, relu=True) == 0
    assert acc_out(40000, relu=True) == I16_MAX
    assert acc_out(5, relu=True) == 5
    assert acc_out(-1, output_shift=1, relu=True) == 0        # -0.5 -> 0
    assert acc_out(-3, output_shift=1, relu=True) == 0        # -1.5 -> -1 -> 0
    # a positive product that wraps negative at psum_width=16 is cut by ReLU
    assert int(conv2d(one(200), one(200), psum_width=16, relu=True)[0, 0, 0, 0]) == 0


def test_padding_zeros_stride_and_shape():
    # 1x1 input, padding 1, 3x3 filter: only the centre tap sees the value
    w = np.arange(1, 10).reshape(1, 1, 3, 3)
    y = conv2d(one(5), w, padding=1)
    assert y.shape == (1, 1, 1, 1) and int(y[0, 0, 0, 0]) == 5 * 5
    # 4x4 ramp, 2x2 ones filter, stride 2 -> sums of 2x2 blocks
    x = np.arange(16).reshape(1, 1, 4, 4)
    y = conv2d(x, np.ones((1, 1, 2, 2), dtype=np.int64), stride=2)
    assert y.tolist() == [[[[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]]]
    # E = (H + 2p - R) // U + 1: H=7, p=1, R=3, U=3 -> 3 ; W=5 -> (5+2-3)//3+1 = 2
    y = conv2d(np.ones((2, 1, 7, 5), dtype=np.int16), np.ones((4, 1, 3, 3), dtype=np.int16),
               stride=3, padding=1)
    assert y.shape == (2, 4, 3, 2)
    # padded ifmap is 9x7 with real ones in rows 1..7, cols 1..5. Window (0, 0) covers
    # padded rows/cols 0..2 -> 2x2 real ones = 4; (1, 1) rows/cols 3..5 -> 9; (2, 1) rows
    # 6..8 (row 8 is padding), cols 3..5 -> 2x3 = 6
    assert int(y[0, 0, 0, 0]) == 4 and int(y[0, 0, 1, 1]) == 9 and int(y[1, 3, 2, 1]) == 6


def test_groups_only_see_their_channels():
    x = np.array([2, 3, 5, 7]).reshape(1, 4, 1, 1)
    w = np.array([[1, 10], [100, 1000]]).reshape(2, 2, 1, 1)
    y = conv2d(x, w, groups=2)
    # filter 0 sees channels 0,1; filter 1 sees channels 2,3
    assert y[0, :, 0, 0].tolist() == [2 * 1 + 3 * 10, 5 * 100 + 7 * 1000]


def test_fully_connected_is_conv_with_full_filter():
    rng = np.random.default_rng(1)
    x = rng.integers(-100, 100, size=(2, 3, 4, 5))
    w = rng.integers(-100, 100, size=(6, 3, 4, 5))
    bias = rng.integers(-1000, 1000, size=6)
    y = conv2d(x, w, bias, output_shift=4)
    assert y.shape == (2, 6, 1, 1)
    dot = x.reshape(2, -1) @ w.reshape(6, -1).T + bias
    want = np.clip((dot + 8) >> 4, I16_MIN, I16_MAX)
    assert y[:, :, 0, 0].tolist() == want.tolist()


def test_accepts_lists_and_small_dtypes_and_does_not_modify_inputs():
    x = np.array([[[[1, -2], [3, 4]]]], dtype=np.int8)
    w = np.array([[[[2]]]], dtype=np.uint8)
    x0, w0 = x.copy(), w.copy()
    y = conv2d(x, w, [5])
    assert y.tolist() == [[[[7, 1], [11, 13]]]]
    assert (x == x0).all() and (w == w0).all()
    assert conv2d(x.tolist(), w.tolist()).tolist() == [[[[2, -4], [6, 8]]]]


def test_alexnet_conv1_shape_runs():
    """AlexNet CONV1 (x 1x3x227x227, w 96x3x11x11, stride 4): full run, values spot-checked
    against the naive reference for both the Eyeriss and the default numerics."""
    rng = np.random.default_rng(2017)
    x = rng.integers(-(1 << 12), 1 << 12, size=(1, 3, 227, 227))
    w = rng.integers(-(1 << 12), 1 << 12, size=(96, 3, 11, 11))
    bias = rng.integers(-(1 << 20), 1 << 20, size=96)
    points = [(0, 0, 0, 0), (0, 95, 54, 54), (0, 17, 23, 40), (0, 60, 54, 0), (0, 3, 1, 52)]
    for b, kw in ((bias, dict(product_shift=0, output_shift=12, psum_width=32)),
                  (bias >> 5, dict(product_shift=8, output_shift=0, psum_width=16, relu=True))):
        y = conv2d(x, w, b, stride=4, **kw)
        assert y.shape == (1, 96, 55, 55) and y.dtype == np.int16
        full = dict(stride=4, padding=0, groups=1, data_width=16, relu=False)
        full.update(kw)
        for n, m, e, f in points:
            assert int(y[n, m, e, f]) == naive_point(x, w, b, n, m, e, f, **full)
        assert len(np.unique(y)) > 100      # not degenerate (e.g. all saturated)


# =====================================================================================
# conv2d errors
# =====================================================================================

X = np.zeros((1, 2, 5, 5), dtype=np.int16)
Wt = np.zeros((4, 2, 3, 3), dtype=np.int16)


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.zeros((2, 5, 5), np.int16), Wt), {}, r"x must be 4-D"),
    ((np.zeros((1, 1, 2, 5, 5), np.int16), Wt), {}, r"x must be 4-D"),
    ((X, np.zeros((4, 2, 3), np.int16)), {}, r"w must be 4-D"),
    ((X, np.zeros((4, 3, 3, 3), np.int16)), {}, r"channel mismatch"),
    ((X, np.zeros((4, 2, 3, 3), np.int16)), {"groups": 2}, r"channel mismatch"),
    ((np.zeros((1, 4, 5, 5), np.int16), np.zeros((3, 2, 3, 3), np.int16)), {"groups": 2},
     r"M = 3 output channels .*not divisible by groups = 2"),
    ((np.zeros((1, 3, 5, 5), np.int16), np.zeros((4, 1, 3, 3), np.int16)), {"groups": 2},
     r"C = 3 input channels is not divisible by groups = 2"),
    ((X, np.zeros((4, 2, 6, 3), np.int16)), {}, r"larger than the padded input"),
    ((X, np.zeros((4, 2, 3, 8), np.int16)), {"padding": 1}, r"larger than the padded input"),
    ((np.zeros((0, 2, 5, 5), np.int16), Wt), {}, r"x must not have an empty dimension"),
    ((X, np.zeros((4, 2, 0, 3), np.int16)), {}, r"w must not have an empty dimension"),
    ((X.astype(np.float32), Wt), {}, r"x must be an integer array"),
    ((X, Wt.astype(np.float64)), {}, r"w must be an integer array"),
    ((X.astype(bool), Wt), {}, r"x must be an integer array"),
    ((X, Wt.astype(bool)), {}, r"w must be an integer array"),
    ((X.astype(object), Wt), {}, r"x must be an integer array"),
    ((X, Wt, np.zeros(4, np.float64)), {}, r"bias must be an integer array"),
    ((X, Wt, np.zeros(3, np.int32)), {}, r"bias must have shape \(M,\) = \(4,\)"),
    ((X, Wt, np.zeros((4, 1), np.int32)), {}, r"bias must have shape"),
    ((X + 32768 * np.eye(5, dtype=np.int64), Wt), {}, r"x values must fit in signed 16 bits"),
    ((X - 32769 * np.eye(5, dtype=np.int64), Wt), {}, r"x values must fit in signed 16"),
    ((X, Wt.astype(np.int64) + 40000), {}, r"w values must fit in signed 16 bits"),
    ((X + 128 * np.eye(5, dtype=np.int64), Wt), {"data_width": 8, "psum_width": 16},
     r"x values must fit in signed 8 bits"),
    ((X, Wt, np.array([0, 0, 0, 1 << 15])), {"psum_width": 16},
     r"bias values must fit in signed 16 bits"),
    ((X, Wt, np.array([0, -(1 << 31) - 1, 0, 0])), {}, r"bias values must fit in signed 32"),
    ((X, Wt), {"stride": 0}, r"stride must be in the range >= 1"),
    ((X, Wt), {"stride": 1.5}, r"stride must be an integer"),
    ((X, Wt), {"stride": True}, r"stride must be an integer"),
    ((X, Wt), {"padding": -1}, r"padding must be in the range >= 0"),
    ((X, Wt), {"groups": 0}, r"groups must be in the range >= 1"),
    ((X, Wt), {"product_shift": -1}, r"product_shift must be in the range 0..31"),
    ((X, Wt), {"product_shift": 32}, r"product_shift must be in the range 0..31"),
    ((X, Wt), {"product_shift": 16, "data_width": 8, "psum_width": 16},
     r"product_shift must be in the range 0..15"),
    ((X, Wt), {"output_shift": -1}, r"output_shift must be in the range 0..31"),
    ((X, Wt), {"output_shift": 32}, r"output_shift must be in the range 0..31"),
    ((X, Wt), {"output_shift": 16, "psum_width": 16}, r"output_shift must be in the range 0..15"),
    ((X, Wt), {"psum_width": 65}, r"psum_width must be in the range 16..64"),
    ((X, Wt), {"psum_width": 8}, r"psum_width must be in the range 16..64"),
    ((X, Wt), {"data_width": 1}, r"data_width must be in the range 2..32"),
    ((X, Wt), {"data_width": 33}, r"data_width must be in the range 2..32"),
    ((X, Wt), {"relu": 1}, r"relu must be a bool"),
])
def test_conv2d_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv2d(*args, **kwargs)


# =====================================================================================
# RLC
# =====================================================================================

def pair(run, level):
    """A (run, level) pair packed as DESIGN.md section 3: run bits [4:0], level [20:5]."""
    assert 0 <= run <= 31
    return run | ((level & 0xFFFF) << 5)


def word(pairs, last):
    """Pairs packed least significant first at 21-bit spacing; bit 63 if last."""
    v = 0
    for k, (run, level) in enumerate(pairs):
        v |= pair(run, level) << (21 * k)
    return v | (LAST if last else 0)


def pack(pairs):
    """All pairs of a stream into words (last word padded with (0, 0))."""
    chunks = [pairs[i:i + 3] for i in range(0, len(pairs), 3)]
    return [word(c, i == len(chunks) - 1) for i, c in enumerate(chunks)]


def naive_encode_pairs(values):
    """The greedy encoder, literally as written in the contract."""
    pairs, z = [], 0
    for v in values:
        v = int(v)
        if v == 0:
            z += 1
            continue
        while z > 31:
            pairs.append((31, 0))
            z -= 32
        pairs.append((z, v))
        z = 0
    while z > 0:
        run = min(z - 1, 31)
        pairs.append((run, 0))
        z -= run + 1
    return pairs


def enc(values):
    out = rlc_encode(np.asarray(values, dtype=np.int64))
    assert out.dtype == np.uint64 and out.ndim == 1
    return [int(v) for v in out]


def test_rlc_literal_words():
    # [0, 0, 5]: pair0 = run 2 | level 5 << 5 = 0xA2, bit 63 set
    assert enc([0, 0, 5]) == [0x8000_0000_0000_00A2]
    # [-1]: level 0xFFFF -> 0xFFFF << 5 = 0x1FFFE0
    assert enc([-1]) == [0x8000_0000_001F_FFE0]
    # [1, 2, 3]: 0x20 | 0x40 << 21 | 0x60 << 42
    assert enc([1, 2, 3]) == [0x20 | (0x40 << 21) | (0x60 << 42) | LAST]
    # [-32768, 32767, 0]: (0, 0x8000), (0, 0x7FFF), trailing zero -> (0, 0)
    assert enc([-32768, 32767, 0]) == [(0x8000 << 5) | ((0x7FFF << 5) << 21) | LAST]
    # four values -> two words, the first without bit 63
    assert enc([1, 2, 3, 4]) == [0x20 | (0x40 << 21) | (0x60 << 42), 0x80 | LAST]
    # a single zero -> (0, 0) in a last word: exactly bit 63
    assert enc([0]) == [LAST]


@pytest.mark.parametrize("values, pairs", [
    ([0] * 31 + [7], [(31, 7)]),
    ([0] * 32 + [7], [(31, 0), (0, 7)]),
    ([0] * 33 + [7], [(31, 0), (1, 7)]),
    ([0] * 63 + [7], [(31, 0), (31, 7)]),
    ([0] * 64 + [7], [(31, 0), (31, 0), (0, 7)]),
    ([0] * 65 + [7], [(31, 0), (31, 0), (1, 7)]),
    ([7] + [0] * 31, [(0, 7), (30, 0)]),
    ([7] + [0] * 32, [(0, 7), (31, 0)]),
    ([7] + [0] * 33, [(0, 7), (31, 0), (0, 0)]),
    ([7] + [0] * 64, [(0, 7), (31, 0), (31, 0)]),
    ([7] + [0] * 65, [(0, 7), (31, 0), (31, 0), (0, 0)]),
    ([0] * 10, [(9, 0)]),
    ([0] * 32, [(31, 0)]),
    ([0] * 33, [(31, 0), (0, 0)]),
    ([0] * 64, [(31, 0), (31, 0)]),
    ([0] * 100, [(31, 0), (31, 0), (31, 0), (3, 0)]),
    ([1, -2, 3, -4, 5, -6], [(0, 1), (0, -2), (0, 3), (0, -4), (0, 5), (0, -6)]),
    ([0, 0, 9, 0, -9, 0, 0, 0], [(2, 9), (1, -9), (2, 0)]),
    ([0, 4, 0, 0, 0, 5, 6], [(1, 4), (3, 5), (0, 6)]),          # exact multiple of 3 pairs
])
def test_rlc_hand_examples(values, pairs):
    want = pack(pairs)
    assert enc(values) == want
    assert naive_encode_pairs(values) == pairs            # the test's own encoder agrees
    got = rlc_decode(np.array(want, dtype=np.uint64), len(values))
    assert got.dtype == np.int16 and got.tolist() == values


def test_rlc_full_last_word_has_last_bit():
    # six pairs fill two words exactly; only the second carries bit 63
    words = enc([1, 2, 3, 4, 5, 6])
    assert len(words) == 2
    assert words[0] >> 63 == 0 and words[1] >> 63 == 1
    assert (words[1] & ~LAST) >> 42 == pair(0, 6)


def test_rlc_empty_plane():
    out = rlc_encode(np.zeros(0, dtype=np.int16))
    assert out.dtype == np.uint64 and out.shape == (0,)
    dec = rlc_decode(np.zeros(0, dtype=np.uint64), 0)
    assert dec.dtype == np.int16 and dec.shape == (0,)


@st.composite
def planes(draw):
    n = draw(st.integers(1, 400))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    v = rng.integers(I16_MIN, I16_MAX + 1, size=n)
    v[rng.random(n) >= density] = 0
    if draw(st.booleans()):                               # extremes
        v[rng.random(n) < 0.1] = rng.choice([I16_MIN, I16_MAX, -1, 1])
    return v.astype(np.int16)


@settings(max_examples=200, deadline=None)
@given(planes())
def test_rlc_round_trip_and_matches_naive_encoder(v):
    words = rlc_encode(v)
    assert [int(x) for x in words] == pack(naive_encode_pairs(v))
    assert len(words) == -(-len(naive_encode_pairs(v)) // 3)
    dec = rlc_decode(words, v.size)
    assert dec.dtype == np.int16
    assert np.array_equal(dec, v)
    # only the last word has bit 63
    assert [int(x) >> 63 for x in words] == [0] * (len(words) - 1) + [1]


def test_rlc_accepts_lists_and_dtypes():
    assert enc([0, 0, 5]) == [int(x) for x in rlc_encode([0, 0, 5])]
    assert [int(x) for x in rlc_encode(np.array([0, 0, 5], np.uint8))] == enc([0, 0, 5])
    words = enc([1, 2, 3, 4])
    assert rlc_decode(words, 4).tolist() == [1, 2, 3, 4]          # Python ints >= 2**63
    assert rlc_decode(np.array(words, dtype=np.uint64).astype(object).tolist(), 4).tolist() \
        == [1, 2, 3, 4]


def test_rlc_decode_stops_at_count():
    # a run reaching past count is cut off: (5, 7) holds 6 values, decode 3 -> 0, 0, 0
    assert rlc_decode([word([(5, 7)], True)], 3).tolist() == [0, 0, 0]
    # padding pairs after count are ignored
    assert rlc_decode([word([(0, 9), (0, 0), (0, 0)], True)], 1).tolist() == [9]


@pytest.mark.parametrize("values", [[32768], [-32769], [0, 1 << 20]])
def test_rlc_encode_out_of_range(values):
    with pytest.raises(ValueError, match=r"values must fit in signed 16 bits"):
        rlc_encode(np.array(values, dtype=np.int64))


def test_rlc_encode_bad_input():
    with pytest.raises(ValueError, match=r"values must be 1-D"):
        rlc_encode(np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match=r"values must be an integer array"):
        rlc_encode(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"values must be an integer array"):
        rlc_encode(np.zeros(3, bool))


FOUR = [0x20 | (0x40 << 21) | (0x60 << 42), 0x80 | LAST]     # encode of [1, 2, 3, 4]


@pytest.mark.parametrize("words, count, match", [
    # last-word bit appears before count values are decoded
    ([FOUR[0] | LAST, FOUR[1]], 4, r"last-word bit set on word 0 after 3 value\(s\), before "
                                   r"count = 4"),
    ([word([(0, 1), (0, 2)], True)], 5, r"last-word bit set on word 0 .*before count = 5"),
    # count reached in a word without the last-word bit
    ([FOUR[0], FOUR[1] & ~LAST], 4, r"count = 4 values reached in word 1 but its last-word "
                                    r"bit \(bit 63\) is clear"),
    ([FOUR[0], FOUR[1]], 2, r"reached in word 0 but its last-word bit .* is clear"),
    # words after the last word
    ([FOUR[0], FOUR[1], LAST], 4, r"words after the last word: 1 word\(s\) follow word 1"),
    ([LAST], 0, r"words after the last word"),
    # fewer words than needed
    ([FOUR[0]], 4, r"fewer words than needed: 1 word\(s\) hold only 3 of count = 4"),
    ([], 1, r"fewer words than needed"),
    # bad arguments
    ([LAST], -1, r"count must be a non-negative integer"),
    ([LAST], 1.0, r"count must be a non-negative integer"),
    (np.zeros((1, 1), np.uint64), 1, r"words must be 1-D"),
    (np.zeros(1, np.float64), 1, r"words must be an integer array"),
    (np.array([-1], np.int64), 1, r"words must be 64-bit unsigned"),
    ([1 << 64], 1, r"words must be 64-bit unsigned"),
])
def test_rlc_decode_malformed(words, count, match):
    with pytest.raises(ValueError, match=match):
        rlc_decode(words, count)


# =====================================================================================
# Fixed point
# =====================================================================================

@pytest.mark.parametrize("x, frac, want", [
    (0.5, 0, 1), (-0.5, 0, 0), (1.5, 0, 2), (-1.5, 0, -1), (2.5, 0, 3), (-2.5, 0, -2),
    (0.49, 0, 0), (-0.51, 0, -1),
    (1.0, 8, 256), (1 / 256, 8, 1), (1 / 512, 8, 1), (-1 / 512, 8, 0), (-3 / 512, 8, -1),
    (-1.0, 15, -32768), (0.999969482421875, 15, 32767),
    (3.0, -1, 2),              # 1.5 -> 2 with negative frac_bits
])
def test_quantize_rounds_half_up(x, frac, want):
    q = quantize(np.array([x]), frac)
    assert q.dtype == np.int16 and int(q[0]) == want


def test_quantize_saturates():
    q = quantize([1000.0, -1000.0, 127.999, 128.0, np.inf, -np.inf], 8)
    assert q.tolist() == [32767, -32768, 32767, 32767, 32767, -32768]
    q = quantize([1.0, -1.0, 0.99, -0.999], 7, data_width=8)
    assert q.dtype == np.int8 and q.tolist() == [127, -128, 127, -128]
    q = quantize([1e30, -1e30], 0, data_width=32)
    assert q.dtype == np.int32 and q.tolist() == [2**31 - 1, -2**31]
    assert quantize(np.zeros((2, 3)), 8).shape == (2, 3)


def test_quantize_dequantize_errors():
    with pytest.raises(ValueError, match=r"NaN"):
        quantize([0.0, np.nan], 8)
    with pytest.raises(ValueError, match=r"frac_bits must be an integer"):
        quantize([0.0], 8.0)
    with pytest.raises(ValueError, match=r"data_width must be in the range 2..32"):
        quantize([0.0], 8, data_width=64)
    with pytest.raises(ValueError, match=r"x_float must be real-valued"):
        quantize(np.array([1 + 1j]), 8)
    with pytest.raises(ValueError, match=r"q must be an integer array"):
        dequantize(np.array([0.5]), 8)
    with pytest.raises(ValueError, match=r"frac_bits must be an integer"):
        dequantize(np.array([1]), None)


def test_dequantize_exact():
    d = dequantize(np.array([256, -1, -32768, 3], dtype=np.int16), 8)
    assert d.dtype == np.float64
    assert d.tolist() == [1.0, -1 / 256, -128.0, 3 / 256]
    assert dequantize([5], -2).tolist() == [20.0]


@settings(max_examples=200, deadline=None)
@given(st.floats(-127.99, 127.99), st.integers(0, 8))
def test_quantize_round_trip_error(x, frac):
    q = quantize([x], frac)
    err = abs(float(dequantize(q, frac)[0]) - x)
    assert err <= 2.0 ** -(frac + 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(0, 24))
def test_quantize_matches_output_rounding(acc, s):
    """quantize(acc / 2**s) applies the same round-half-up rule as the output shift."""
    want = (acc + (1 << (s - 1))) >> s if s else acc
    want = max(-(1 << 31), min((1 << 31) - 1, want))
    assert int(quantize([acc * 2.0 ** -s], 0, data_width=32)[0]) == want
    assert acc_out(acc, output_shift=s, psum_width=48, data_width=32) == want


# =====================================================================================
# helpers
# =====================================================================================

def test_int_dtype_and_fits_signed():
    assert golden.int_dtype(8) == np.int8
    assert golden.int_dtype(12) == np.int16
    assert golden.int_dtype(16) == np.int16
    assert golden.int_dtype(17) == np.int32
    assert golden.int_dtype(64) == np.int64
    with pytest.raises(ValueError, match=r"bits must be an integer in the range 1..64"):
        golden.int_dtype(65)
    assert golden.fits_signed([-32768, 32767], 16)
    assert not golden.fits_signed([32768], 16)
    assert not golden.fits_signed([-129], 8)
    assert golden.fits_signed(np.zeros(0, dtype=np.int64), 8)
    assert set(golden.__all__) >= {"conv2d", "rlc_encode", "rlc_decode", "quantize",
                                   "dequantize"}
