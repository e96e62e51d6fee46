"""A small all-CONV CNN for handwritten digits, trained in pure NumPy and quantized for the
accelerator.

Data
----
scikit-learn's ``load_digits``: 1797 real 8x8 scans of handwritten digits, 17 grey levels
(0..16), from the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin and
Kaynak, 1998; test part of the original 32x32 bitmaps, downsampled to 8x8 by counting on
pixels in 4x4 blocks). The split is fixed: ``train_test_split(test_size=0.2, random_state=0,
stratify=labels)``, which gives 1437 training and 360 held-out images. Pixels are scaled to
``pixel / 16`` in [0, 1].

Network (every layer is a CONV layer, so the accelerator runs all of them)
--------------------------------------------------------------------------
=====  ============================  ======  =======  ====  ===========================
layer  filters (M, C, R, S)          stride  padding  ReLU  ofmap (N, M, E, F)
=====  ============================  ======  =======  ====  ===========================
conv1  (8, 1, 3, 3)                  1       1        yes   (N, 8, 8, 8)
conv2  (16, 8, 3, 3)                 2       1        yes   (N, 16, 4, 4)
fc     (10, 16, 4, 4), R = H, S = W  1       0        no    (N, 10, 1, 1) logits
=====  ============================  ======  =======  ====  ===========================

All layers have biases: 3,784 weights and 34 biases (conv1 72 + 8, conv2 1,152 + 16,
fc 2,560 + 10), 3,818 parameters in all; 25,600 MACs per image (conv1 4,608, conv2 18,432,
fc 2,560).

Fixed point (DESIGN.md section 2, "default" setting)
----------------------------------------------------
With ``frac_bits = f`` (default 8):

* ifmaps / activations and filters: signed 16-bit, ``f`` fraction bits (Q7.8 for f = 8),
  produced by :func:`sw_driver.golden.quantize` (round half up, saturate);
* biases: signed 32-bit in accumulator units, i.e. ``2*f`` fraction bits
  (``bias_q = floor(b * 2**(2f) + 0.5)``), because a product of two ``f``-fraction values has
  ``2f`` fraction bits;
* per layer ``product_shift = 0``, ``psum_width = 32``, ``output_shift = f`` (back to ``f``
  fraction bits, round half up, saturate to 16 bits), ReLU on conv1 and conv2. The logits go
  through the same shift and saturation; only their argmax is used.

On the 360 held-out images of the shipped weights the largest accumulator magnitude is about
3.2e6 (fc; 2.98e5 conv1, 8.0e5 conv2), so the model needs ``psum_width >= 23``: run it on a
32-bit-psum preset, not the Eyeriss-faithful 16-bit one. No ofmap value saturates (largest
|y| = 12543 on the logits).

Files
-----
:data:`DEFAULT_WEIGHTS` (``digits_int16.npz`` next to this module) holds the quantized model
produced by ``python -m sw_driver.models.digits``; see :func:`save_model` for its layout.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sw_driver import golden

__all__ = ["ARCH", "FRAC_BITS", "PSUM_WIDTH", "DATA_WIDTH", "DEFAULT_WEIGHTS", "TEST_SIZE",
           "load_split", "load_test_set", "init_params", "float_forward", "loss_and_grads",
           "train_step", "train", "quantize_model", "save_model", "load_model",
           "golden_forward", "predict", "accuracy", "main"]

#: Quantized weights shipped with the package (written by :func:`main`).
DEFAULT_WEIGHTS = Path(__file__).with_name("digits_int16.npz")
#: Fraction bits of activations and weights (biases get twice as many).
FRAC_BITS = 8
#: Accumulator width (bits) the quantized model is made for.
PSUM_WIDTH = 32
#: ifmap / filter / ofmap width (bits).
DATA_WIDTH = 16
#: Number of held-out images of the fixed split (20 % of 1797).
TEST_SIZE = 360

#: Layers in order: name, filter shape (M, C, R, S), stride, padding, ReLU.
ARCH = (
    {"name": "conv1", "shape": (8, 1, 3, 3), "stride": 1, "padding": 1, "relu": True},
    {"name": "conv2", "shape": (16, 8, 3, 3), "stride": 2, "padding": 1, "relu": True},
    {"name": "fc", "shape": (10, 16, 4, 4), "stride": 1, "padding": 0, "relu": False},
)

_SPLIT_SEED = 0


# -- data ---------------------------------------------------------------------------------

def load_split():
    """The fixed train / held-out split of scikit-learn digits, as floats in [0, 1].

    Returns
    -------
    (x_train, y_train, x_test, y_test)
        ``x_*``: float64, shape (N, 1, 8, 8), ``pixel / 16``; ``y_*``: int64 labels 0..9,
        shape (N,). N = 1437 for training and 360 (:data:`TEST_SIZE`) held out.
        Split: ``train_test_split(test_size=0.2, random_state=0, stratify=labels)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float64) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=_SPLIT_SEED,
                                              stratify=y)
    return x_tr, y_tr, x_te, y_te


def load_test_set(limit=None, frac_bits=FRAC_BITS):
    """The held-out images, quantized for the accelerator.

    Parameters
    ----------
    limit : int or None
        return only the first ``limit`` images of the (fixed-order) held-out set.
    frac_bits : int
        fraction bits of the result (default 8, so pixel p becomes ``p * 16``, 0..256).

    Returns
    -------
    (x, labels)
        ``x``: np.int16, shape (N, 1, 8, 8), ``golden.quantize(pixel / 16, frac_bits)``;
        ``labels``: np.int64, shape (N,), digits 0..9. N = min(limit, 360).
    """
    _, _, x_te, y_te = load_split()
    if limit is not None:
        if int(limit) < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit!r}")
        x_te, y_te = x_te[:int(limit)], y_te[:int(limit)]
    return golden.quantize(x_te, frac_bits, DATA_WIDTH), y_te


# -- float model: forward and backward ------------------------------------------------------

def init_params(seed=0):
    """He-normal filters and zero biases, float64: ``{"conv1_w": (8, 1, 3, 3), "conv1_b": (8,),
    ...}`` with keys ``<name>_w`` / ``<name>_b`` for every layer of :data:`ARCH`."""
    rng = np.random.default_rng(seed)
    params = {}
    for layer in ARCH:
        M, C, R, S = layer["shape"]
        params[layer["name"] + "_w"] = rng.normal(0.0, np.sqrt(2.0 / (C * R * S)),
                                                  size=(M, C, R, S))
        params[layer["name"] + "_b"] = np.zeros(M)
    return params


def _conv_forward(x, w, b, stride, padding):
    """Float convolution by im2col. x (N, C, H, W), w (M, C, R, S), b (M,) -> (N, M, E, F)."""
    N, C, H, W = x.shape
    M, _, R, S = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    E = (H + 2 * padding - R) // stride + 1
    F = (W + 2 * padding - S) // stride + 1
    win = sliding_window_view(xp, (R, S), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :E, :F]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * E * F, C * R * S)   # (c, r, s) order
    out = cols @ w.reshape(M, -1).T + b
    y = out.reshape(N, E, F, M).transpose(0, 3, 1, 2)
    return y, (x.shape, cols, stride, padding)


def _conv_backward(dy, w, cache):
    """Gradients (dx, dw, db) of :func:`_conv_forward` given dL/dy (N, M, E, F)."""
    (N, C, H, W), cols, stride, padding = cache
    M, _, R, S = w.shape
    _, _, E, F = dy.shape
    d2 = dy.transpose(0, 2, 3, 1).reshape(-1, M)
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    dcols = (d2 @ w.reshape(M, -1)).reshape(N, E, F, C, R, S)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    for r in range(R):
        for s in range(S):
            dxp[:, :, r:r + stride * (E - 1) + 1:stride, s:s + stride * (F - 1) + 1:stride] += \
                dcols[:, :, :, :, r, s].transpose(0, 3, 1, 2)
    dx = dxp[:, :, padding:padding + H, padding:padding + W] if padding else dxp
    return dx, dw, db


def _forward(params, x):
    a, caches = x, []
    for layer in ARCH:
        w = params[layer["name"] + "_w"]
        z, cache = _conv_forward(a, w, params[layer["name"] + "_b"],
                                 layer["stride"], layer["padding"])
        a = np.maximum(z, 0.0) if layer["relu"] else z
        caches.append((cache, z))
    return a.reshape(len(x), -1), caches


def float_forward(params, x):
    """Float logits, shape (N, 10), of images ``x`` (N, 1, 8, 8) scaled to [0, 1]."""
    return _forward(params, np.asarray(x, dtype=np.float64))[0]


def loss_and_grads(params, x, labels):
    """Mean softmax cross-entropy of a batch and its gradient w.r.t. every parameter.

    Parameters
    ----------
    params : dict of float arrays (see :func:`init_params`)
    x : float array (N, 1, 8, 8), pixels in [0, 1]
    labels : int array (N,), 0..9

    Returns
    -------
    (loss, grads)
        ``loss``: float (nats per image); ``grads``: dict with the keys and shapes of
        ``params``.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    N = len(x)
    logits, caches = _forward(params, x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(N), labels].mean()
    d = np.exp(logp)
    d[np.arange(N), labels] -= 1.0
    d /= N
    grads = {}
    da = d.reshape(N, -1, 1, 1)
    for layer, (cache, z) in zip(reversed(ARCH), reversed(caches)):
        dz = da * (z > 0) if layer["relu"] else da
        w = params[layer["name"] + "_w"]
        da, grads[layer["name"] + "_w"], grads[layer["name"] + "_b"] = \
            _conv_backward(dz, w, cache)
    return float(loss), grads


def train_step(params, opt_state, x, labels, lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step (Kingma and Ba, 2015) on a mini-batch, updating ``params`` in place.

    ``opt_state`` is ``{}`` at the start and is updated in place (moments and step count).
    Returns the batch loss before the step.
    """
    loss, grads = loss_and_grads(params, x, labels)
    t = opt_state["t"] = opt_state.get("t", 0) + 1
    for k, g in grads.items():
        m = opt_state.setdefault("m_" + k, np.zeros_like(g))
        v = opt_state.setdefault("v_" + k, np.zeros_like(g))
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        step = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        params[k] -= step * m / (np.sqrt(v) + eps)
    return loss


def accuracy(pred, labels) -> float:
    """Fraction of ``pred == labels``."""
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def train(seed=0, epochs=40, out_path=None, *, batch_size=32, lr=3e-3, verbose=False):
    """Train the float CNN on the fixed training split (1437 images).

    Adam, mini-batches of ``batch_size`` reshuffled every epoch, learning rate ``lr`` for the
    first 3/4 of the epochs and ``lr / 10`` after. Everything is seeded by ``seed``
    (initialization and shuffling) and BLAS runs single-threaded, so a run is reproducible on
    the same NumPy / BLAS build. The held-out set is only evaluated after training (no early
    stopping on it).

    Parameters
    ----------
    out_path : str or Path or None
        if given, the model is quantized (:func:`quantize_model`, 8 fraction bits) and saved
        there (:func:`save_model`).

    Returns
    -------
    dict
        ``params`` (float weights, see :func:`init_params`), ``train_accuracy``,
        ``test_accuracy`` (float model on the 360 held-out images), ``losses`` (mean loss per
        epoch), ``seconds`` (training wall time), ``seed``, ``epochs``, and ``qmodel`` when
        ``out_path`` is given.
    """
    from threadpoolctl import threadpool_limits   # a dependency of scikit-learn

    # The matrices are tiny: one BLAS thread is ~25x faster than a thread pool on a busy
    # machine, and it makes the floating-point summation order (hence the result) fixed.
    with threadpool_limits(limits=1, user_api="blas"):
        return _train(seed, epochs, out_path, batch_size, lr, verbose)


def _train(seed, epochs, out_path, batch_size, lr, verbose):
    x_tr, y_tr, x_te, y_te = load_split()
    rng = np.random.default_rng(seed)
    params = init_params(seed)
    opt_state = {}
    losses = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        lr_e = lr if epoch < (3 * epochs) // 4 else lr / 10
        order = rng.permutation(len(x_tr))
        tot = 0.0
        for b0 in range(0, len(order), batch_size):
            idx = order[b0:b0 + batch_size]
            tot += train_step(params, opt_state, x_tr[idx], y_tr[idx], lr=lr_e) * len(idx)
        losses.append(tot / len(order))
        if verbose:
            print(f"epoch {epoch + 1:3d}: loss {losses[-1]:.4f}")
    seconds = time.perf_counter() - t0
    result = {
        "params": params,
        "train_accuracy": accuracy(predict(float_forward(params, x_tr)), y_tr),
        "test_accuracy": accuracy(predict(float_forward(params, x_te)), y_te),
        "losses": losses, "seconds": seconds, "seed": seed, "epochs": epochs,
    }
    if out_path is not None:
        result["qmodel"] = quantize_model(params)
        save_model(result["qmodel"], out_path)
    return result


# -- quantized model ----------------------------------------------------------------------

def quantize_model(params, frac_bits=FRAC_BITS):
    """Fixed-point version of the float model for the accelerator / golden model.

    Parameters
    ----------
    params : dict of float arrays (see :func:`init_params`)
    frac_bits : int
        fraction bits ``f`` of weights and activations.

    Returns
    -------
    list of dict, one per layer of :data:`ARCH`
        ``weights``: np.int16 (M, C, R, S), ``golden.quantize(w, f)``; ``bias``: np.int32
        (M,), ``floor(b * 2**(2f) + 0.5)`` (accumulator units); ``stride``, ``padding``;
        ``product_shift`` = 0; ``output_shift`` = f; ``relu`` (bool); plus ``name``,
        ``frac_bits`` and ``psum_width`` (32) for information.

    Raises
    ------
    ValueError
        If a bias does not fit in ``psum_width`` bits.
    """
    frac_bits = int(frac_bits)
    layers = []
    for layer in ARCH:
        w = params[layer["name"] + "_w"]
        b = params[layer["name"] + "_b"]
        bq = np.floor(np.ldexp(np.asarray(b, dtype=np.float64), 2 * frac_bits) + 0.5)
        if np.abs(bq).max(initial=0) >= 2.0 ** (PSUM_WIDTH - 1):
            raise ValueError(f"{layer['name']} bias does not fit in {PSUM_WIDTH} bits with "
                             f"{2 * frac_bits} fraction bits")
        layers.append({
            "name": layer["name"],
            "weights": golden.quantize(w, frac_bits, DATA_WIDTH),
            "bias": bq.astype(np.int32),
            "stride": layer["stride"], "padding": layer["padding"],
            "product_shift": 0, "output_shift": frac_bits, "relu": bool(layer["relu"]),
            "frac_bits": frac_bits, "psum_width": PSUM_WIDTH,
        })
    return layers


def save_model(qmodel, path):
    """Write a quantized model (list of layer dicts) to an ``.npz`` file.

    Arrays: ``num_layers``; per layer i (0-based) ``layer{i}_weights`` (int16, M x C x R x S),
    ``layer{i}_bias`` (int32, M), and the scalars ``layer{i}_stride``, ``layer{i}_padding``,
    ``layer{i}_product_shift``, ``layer{i}_output_shift``, ``layer{i}_relu`` (0/1),
    ``layer{i}_frac_bits``, ``layer{i}_psum_width``, ``layer{i}_name`` (str).
    """
    arrays = {"num_layers": np.int64(len(qmodel))}
    for i, layer in enumerate(qmodel):
        arrays[f"layer{i}_weights"] = np.asarray(layer["weights"], dtype=np.int16)
        arrays[f"layer{i}_bias"] = np.asarray(layer["bias"], dtype=np.int32)
        for k in ("stride", "padding", "product_shift", "output_shift"):
            arrays[f"layer{i}_{k}"] = np.int64(layer[k])
        arrays[f"layer{i}_relu"] = np.int64(bool(layer["relu"]))
        arrays[f"layer{i}_frac_bits"] = np.int64(layer.get("frac_bits", FRAC_BITS))
        arrays[f"layer{i}_psum_width"] = np.int64(layer.get("psum_width", PSUM_WIDTH))
        arrays[f"layer{i}_name"] = np.array(str(layer.get("name", f"layer{i}")))
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_model(path=DEFAULT_WEIGHTS):
    """Read a quantized model written by :func:`save_model` (default: the packaged
    ``digits_int16.npz``). Returns a list of layer dicts as :func:`quantize_model` does, with
    Python ints / bools for the scalars."""
    with np.load(path, allow_pickle=False) as z:
        layers = []
        for i in range(int(z["num_layers"])):
            layers.append({
                "name": str(z[f"layer{i}_name"]),
                "weights": z[f"layer{i}_weights"].astype(np.int16),
                "bias": z[f"layer{i}_bias"].astype(np.int32),
                "stride": int(z[f"layer{i}_stride"]),
                "padding": int(z[f"layer{i}_padding"]),
                "product_shift": int(z[f"layer{i}_product_shift"]),
                "output_shift": int(z[f"layer{i}_output_shift"]),
                "relu": bool(int(z[f"layer{i}_relu"])),
                "frac_bits": int(z[f"layer{i}_frac_bits"]),
                "psum_width": int(z[f"layer{i}_psum_width"]),
            })
    return layers


def golden_forward(x, qmodel, *, psum_width=PSUM_WIDTH, data_width=DATA_WIDTH):
    """Run the quantized model through the bit-exact golden model, layer by layer.

    Parameters
    ----------
    x : np.int16 (N, 1, 8, 8), e.g. from :func:`load_test_set`
    qmodel : list of layer dicts (:func:`quantize_model` / :func:`load_model`)

    Returns
    -------
    list of np.int16 arrays, the ofmap of every layer: (N, 8, 8, 8), (N, 16, 4, 4),
    (N, 10, 1, 1) (the last one holds the logits with ``frac_bits`` fraction bits).
    """
    outs, a = [], x
    for layer in qmodel:
        a = golden.conv2d(a, layer["weights"], layer["bias"], stride=layer["stride"],
                          padding=layer["padding"], product_shift=layer["product_shift"],
                          output_shift=layer["output_shift"], psum_width=psum_width,
                          data_width=data_width, relu=layer["relu"])
        outs.append(a)
    return outs


def predict(logits):
    """Class labels, shape (N,): argmax over all but the first axis of ``logits``
    ((N, 10) or (N, 10, 1, 1)); ties go to the lowest class."""
    logits = np.asarray(logits)
    return logits.reshape(len(logits), -1).argmax(axis=1)


# -- command line ---------------------------------------------------------------------------

def main(argv=None):
    """Train, quantize, save :data:`DEFAULT_WEIGHTS` (or ``--out``) and report accuracies."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    res = train(seed=args.seed, epochs=args.epochs, out_path=args.out, verbose=args.verbose)
    print(f"training: {res['epochs']} epochs, seed {res['seed']}, {res['seconds']:.1f} s")
    print(f"float accuracy: train {res['train_accuracy']:.2%}, "
          f"held-out {res['test_accuracy']:.2%}")
    qmodel = load_model(args.out)
    x, labels = load_test_set()
    outs = golden_forward(x, qmodel)
    q_acc = accuracy(predict(outs[-1]), labels)
    print(f"quantized (int16, {FRAC_BITS} fraction bits) golden-model accuracy: {q_acc:.2%} "
          f"on {len(labels)} held-out images")
    for layer, y in zip(qmodel, outs):
        w = layer["weights"]
        print(f"  {layer['name']}: weights {w.shape} |w|max {int(np.abs(w).max())}, "
              f"ofmap {y.shape} |y|max {int(np.abs(y.astype(np.int32)).max())}")
    print(f"saved {args.out} ({args.out.stat().st_size} bytes)")
    return res, q_acc


if __name__ == "__main__":
    main()
