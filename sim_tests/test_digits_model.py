"""Tests of the digits CNN (``sw_driver.models.digits``) and its packaged int16 weights.

No training here (``python -m sw_driver.models.digits`` does that, in a few seconds): the
committed weights are checked for shape, type and range, their golden-model accuracy on the
360 held-out scikit-learn digits is computed, and the hand-written backprop is checked against
central finite differences on a tiny random batch.
"""

from __future__ import annotations

import numpy as np
import pytest

from sw_driver import golden
from sw_driver.models import digits

I16_MIN, I16_MAX = -32768, 32767

# (name, weight shape, stride, padding, relu, ofmap shape without N)
EXPECTED = [
    ("conv1", (8, 1, 3, 3), 1, 1, True, (8, 8, 8)),
    ("conv2", (16, 8, 3, 3), 2, 1, True, (16, 4, 4)),
    ("fc", (10, 16, 4, 4), 1, 0, False, (10, 1, 1)),
]


@pytest.fixture(scope="module")
def qmodel():
    return digits.load_model()


@pytest.fixture(scope="module")
def test_set():
    return digits.load_test_set()


def test_weights_file_is_packaged():
    assert digits.DEFAULT_WEIGHTS.name == "digits_int16.npz"
    assert digits.DEFAULT_WEIGHTS.parent.name == "models"
    assert digits.DEFAULT_WEIGHTS.is_file()
    assert digits.DEFAULT_WEIGHTS.stat().st_size < 64 * 1024


def test_layer_shapes_and_types(qmodel):
    assert len(qmodel) == len(EXPECTED)
    for layer, (name, wshape, stride, padding, relu, _) in zip(qmodel, EXPECTED):
        w, b = layer["weights"], layer["bias"]
        assert layer["name"] == name
        assert w.dtype == np.int16 and w.shape == wshape
        assert b.dtype == np.int32 and b.shape == (wshape[0],)
        assert golden.fits_signed(w, 16) and golden.fits_signed(b, 32)
        assert I16_MIN < int(w.min()) and int(w.max()) < I16_MAX     # no saturated weights
        assert np.count_nonzero(w) > w.size // 2                      # really trained
        assert (layer["stride"], layer["padding"], layer["relu"]) == (stride, padding, relu)
        assert layer["product_shift"] == 0
        assert layer["output_shift"] == digits.FRAC_BITS == layer["frac_bits"]
        assert layer["psum_width"] == 32
        assert isinstance(layer["relu"], bool)


def test_save_load_roundtrip(qmodel, tmp_path):
    path = tmp_path / "m.npz"
    digits.save_model(qmodel, path)
    again = digits.load_model(path)
    for a, b in zip(qmodel, again):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
            else:
                assert a[k] == b[k]


def test_quantize_model_formats():
    params = digits.init_params(seed=3)
    params["conv1_b"][:] = 0.5
    params["conv1_w"][0, 0, 0, 0] = 1.0 + 1.0 / 512            # a rounding tie: half up
    q = digits.quantize_model(params, frac_bits=8)
    assert [l["name"] for l in q] == ["conv1", "conv2", "fc"]
    assert q[0]["weights"][0, 0, 0, 0] == 257
    assert np.all(q[0]["bias"] == 0.5 * 2 ** 16)                # 2*frac_bits fraction bits
    for layer, p in zip(q, ("conv1", "conv2", "fc")):
        assert np.array_equal(layer["weights"], golden.quantize(params[p + "_w"], 8))
        assert layer["weights"].dtype == np.int16 and layer["bias"].dtype == np.int32


def test_load_test_set_is_deterministic(test_set):
    x, labels = test_set
    assert x.shape == (digits.TEST_SIZE, 1, 8, 8) == (360, 1, 8, 8)
    assert x.dtype == np.int16 and labels.shape == (360,)
    # pixel p (0..16) scaled to p/16 with 8 fraction bits is exactly 16 * p
    assert int(x.min()) == 0 and int(x.max()) == 256 and np.all(x % 16 == 0)
    assert set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).min() >= 35                       # stratified: ~36 per class
    x2, labels2 = digits.load_test_set()
    assert np.array_equal(x, x2) and np.array_equal(labels, labels2)
    x3, labels3 = digits.load_test_set(limit=200)
    assert np.array_equal(x3, x[:200]) and np.array_equal(labels3, labels[:200])


def test_split_is_disjoint():
    x_tr, y_tr, x_te, y_te = digits.load_split()
    assert len(x_tr) + len(x_te) == 1797 and len(x_te) == 360
    # no held-out image appears in the training set (digits has a few exact duplicates
    # across classes at most; compare byte strings)
    train_keys = {a.tobytes() for a in x_tr}
    dup = sum(a.tobytes() in train_keys for a in x_te)
    assert dup <= 5


def test_golden_accuracy(qmodel, test_set):
    x, labels = test_set
    outs = digits.golden_forward(x, qmodel)
    for y, (*_, oshape) in zip(outs, EXPECTED):
        assert y.dtype == np.int16 and y.shape == (len(x), *oshape)
    assert np.all(outs[0] >= 0) and np.all(outs[1] >= 0)        # ReLU layers
    # no activation saturates, so 16-bit Q7.8 is enough for this network
    for y in outs:
        assert I16_MIN < int(y.min()) and int(y.max()) < I16_MAX
    acc = digits.accuracy(digits.predict(outs[-1]), labels)
    assert acc >= 0.90, f"quantized golden-model accuracy {acc:.3f} < 0.90"


def test_golden_forward_matches_layerwise_conv2d(qmodel, test_set):
    x = test_set[0][:7]
    outs = digits.golden_forward(x, qmodel)
    a = x
    for layer, y in zip(qmodel, outs):
        a = golden.conv2d(a, layer["weights"], layer["bias"], stride=layer["stride"],
                          padding=layer["padding"], product_shift=0,
                          output_shift=layer["output_shift"], psum_width=32, data_width=16,
                          relu=layer["relu"])
        assert np.array_equal(a, y)


def test_predict():
    logits = np.array([[1, 5, 3], [7, 7, 0]], dtype=np.int16).reshape(2, 3, 1, 1)
    assert digits.predict(logits).tolist() == [1, 0]
    assert digits.predict(logits.reshape(2, 3)).tolist() == [1, 0]


# -- backprop ------------------------------------------------------------------------------

def _numerical_grad(params, x, labels, key, idx, h=1e-5):
    p = params[key]
    old = p[idx]
    p[idx] = old + h
    lp, _ = digits.loss_and_grads(params, x, labels)
    p[idx] = old - h
    lm, _ = digits.loss_and_grads(params, x, labels)
    p[idx] = old
    return (lp - lm) / (2 * h)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1234)
    params = digits.init_params(seed=7)
    for k in params:
        if k.endswith("_b"):                       # non-zero biases exercise their gradients
            params[k] = rng.normal(0.0, 0.1, size=params[k].shape)
    x = rng.random((3, 1, 8, 8))
    labels = np.array([2, 7, 0])
    loss, grads = digits.loss_and_grads(params, x, labels)
    assert np.isfinite(loss) and loss > 0
    assert grads.keys() == params.keys()
    for key, p in params.items():
        g = grads[key]
        assert g.shape == p.shape
        # every bias entry and 12 random weight entries per layer
        flat = range(p.size) if key.endswith("_b") else rng.choice(p.size, 12, replace=False)
        for f in flat:
            idx = np.unravel_index(f, p.shape)
            num = _numerical_grad(params, x, labels, key, idx)
            assert abs(num - g[idx]) <= 1e-6 + 1e-4 * abs(num), (key, idx, num, g[idx])


def test_input_gradient_path_through_strided_padded_conv():
    """conv2 (stride 2, padding 1) backward scatters into the right input pixels: check the
    gradient of the conv1 filters, which flows through it, on every conv1 weight."""
    rng = np.random.default_rng(5)
    params = digits.init_params(seed=11)
    x = rng.random((2, 1, 8, 8))
    labels = np.array([4, 9])
    _, grads = digits.loss_and_grads(params, x, labels)
    p = params["conv1_w"]
    num = np.array([_numerical_grad(params, x, labels, "conv1_w",
                                    np.unravel_index(f, p.shape)) for f in range(p.size)])
    np.testing.assert_allclose(grads["conv1_w"].ravel(), num, rtol=1e-4, atol=1e-6)


def test_train_step_reduces_loss():
    rng = np.random.default_rng(0)
    params = digits.init_params(seed=0)
    x = rng.random((8, 1, 8, 8))
    labels = np.arange(8)
    state = {}
    first = digits.train_step(params, state, x, labels, lr=1e-2)
    for _ in range(30):
        last = digits.train_step(params, state, x, labels, lr=1e-2)
    assert state["t"] == 31
    assert last < 0.5 * first
