"""NumPy golden model of the accelerator: convolution numerics, RLC codec, fixed point.

Everything here is the *reference* the hardware is checked against, bit for bit:

* :func:`conv2d` implements the numerics contract of DESIGN.md section 2 (per-product floor
  shift, wrap-around accumulation at ``psum_width`` bits, round-half-up output shift,
  saturation, ReLU after saturation, zero padding, grouped convolution).
* :func:`rlc_encode` / :func:`rlc_decode` implement the run-length code of DESIGN.md section 3,
  which follows Eyeriss (Chen et al., IEEE JSSC 52(1), 2017, section IV-B): 5-bit runs of zeros,
  16-bit levels, three (run, level) pairs per 64-bit word, bit 63 marks the last word.
* :func:`quantize` / :func:`dequantize` convert between floats and the two's-complement
  fixed-point values the user feeds the accelerator.

Exactness of the arithmetic
---------------------------
All convolution arithmetic is exact for every configuration the hardware can be built with
(``data_width`` up to 32, ``psum_width`` up to 64, see ``hw.config``):

* a product of two signed ``data_width``-bit values has magnitude at most ``2**(2*dw - 2)``
  (``<= 2**62`` for ``dw = 32``), so it is computed exactly in ``int64`` and the floor shift
  ``>> product_shift`` is exact;
* the accumulation is only needed modulo ``2**psum_width`` with ``psum_width <= 64``, so the
  products and the bias are summed in ``uint64`` (well-defined modulo ``2**64`` wrap-around) and
  then reduced to ``psum_width`` bits, whatever the number of terms;
* when ``product_shift == 0`` and the worst-case sum ``K * max|x| * max|w|`` (``K`` = C/groups
  * R * S terms) is at most ``2**53``, the sum is done as a float64 BLAS matrix product, which
  is exact because every partial sum is an integer of magnitude ``<= 2**53``; for 16-bit data
  that holds up to K = 2**23 terms, far beyond any CNN layer;
* the output rounding ``(acc + 2**(s-1)) >> s`` is evaluated as
  ``(acc >> s) + ((acc >> (s - 1)) & 1)``, which is identical and cannot overflow even for
  ``psum_width = 64``.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hw.layouts import (RLC_LAST_BIT, RLC_LEVEL_BITS, RLC_MAX_RUN, RLC_PAIR_BITS,
                        RLC_PAIRS_PER_WORD, RLC_RUN_BITS, RLC_WORD_BITS)

__all__ = ["conv2d", "rlc_encode", "rlc_decode", "quantize", "dequantize", "int_dtype",
           "fits_signed", "DATA_WIDTH_RANGE", "PSUM_WIDTH_MAX"]

#: Inclusive range of ``data_width`` the golden model accepts (bits).
DATA_WIDTH_RANGE = (2, 32)
#: Largest ``psum_width`` the golden model accepts (bits); it must also be >= ``data_width``,
#: as for ``hw.config.AcceleratorConfig``.
PSUM_WIDTH_MAX = 64

# Working-set budget (elements of int64) for one block of the im2col / product arrays.
_BLOCK_ELEMS = 1 << 22
# float64 represents every integer of magnitude <= 2**53 exactly.
_FLOAT_EXACT = 1 << 53


# -- helpers ------------------------------------------------------------------------------

def int_dtype(bits: int) -> np.dtype:
    """Smallest NumPy signed integer dtype holding ``bits``-bit two's-complement values
    (int8, int16, int32 or int64).

    Raises
    ------
    ValueError
        If ``bits`` is not an integer in 1..64.
    """
    if not _is_int(bits) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an integer in the range 1..64, got {bits!r}")
    for dt in (np.int8, np.int16, np.int32, np.int64):
        if bits <= np.iinfo(dt).bits:
            return np.dtype(dt)
    raise AssertionError("unreachable")


def fits_signed(values, bits: int) -> bool:
    """True if every element of the integer array ``values`` is within the signed ``bits``-bit
    range ``-2**(bits-1) .. 2**(bits-1) - 1`` (True for an empty array).

    Raises
    ------
    ValueError
        If ``values`` is not an integer array.
    """
    arr = _as_int_array(values, "values")
    if arr.size == 0:
        return True
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return int(arr.min()) >= lo and int(arr.max()) <= hi


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _as_int_array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an integer array (signed or unsigned int dtype), got dtype "
            f"{arr.dtype}; quantize floats first (sw_driver.golden.quantize)")
    return arr


def _check_range(arr: np.ndarray, bits: int, name: str, what: str) -> None:
    if arr.size == 0:
        return
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    amin, amax = int(arr.min()), int(arr.max())
    if amin < lo or amax > hi:
        bad = amin if amin < lo else amax
        raise ValueError(
            f"{name} values must fit in signed {bits} bits ({what}), i.e. {lo}..{hi}; "
            f"found {bad}")


def _check_int_param(value, name: str, lo: int, hi: int | None = None) -> int:
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in the range {rng}, got {value}")
    return value


# -- convolution ----------------------------------------------------------------------------

def conv2d(x, w, bias=None, *, stride=1, padding=0, groups=1, product_shift=0,
           output_shift=0, psum_width=32, data_width=16, relu=False) -> np.ndarray:
    """Bit-exact reference convolution (DESIGN.md section 2).

    For every output ``y[n, m, e, f]`` with ``g = m // (M // groups)`` and ``Cg = C // groups``::

        p   = (x_pad[n, g*Cg + c, e*U + r, f*U + s] * w[m, c, r, s]) >> product_shift  # floor
        acc = (bias[m] + sum over c, r, s of p) mod 2**psum_width, as a signed value
        y   = saturate_data_width((acc + (1 << (output_shift - 1))) >> output_shift)
        y   = max(y, 0) if relu

    (for ``output_shift == 0`` the rounding term is absent). ``x_pad`` is ``x`` with
    ``padding`` zeros on each side of both spatial axes. A fully-connected layer is the case
    R = H, S = W (E = F = 1).

    Parameters
    ----------
    x : array of int, shape (N, C, H, W)
        ifmap, signed ``data_width``-bit values (H, W before padding).
    w : array of int, shape (M, C // groups, R, S)
        filters, signed ``data_width``-bit values.
    bias : array of int, shape (M,), or None
        one signed ``psum_width``-bit value per output channel, in accumulator units
        (i.e. scaled like the product sum, before ``output_shift``); None means 0.
    stride : int >= 1
        U, in ifmap pixels, both axes.
    padding : int >= 0
        zeros added on each side of H and W.
    groups : int >= 1
        grouped convolution (AlexNet CONV2/4/5 use 2); C and M must be divisible by it.
    product_shift : int in 0 .. 2*data_width - 1
        arithmetic right shift (floor) of every product, in bits.
    output_shift : int in 0 .. psum_width - 1
        right shift of the accumulator with round-half-up, in bits.
    psum_width : int in data_width .. 64
        accumulator width in bits; accumulation wraps modulo ``2**psum_width``.
    data_width : int in 2 .. 32
        width of ifmap, filter and ofmap values in bits.
    relu : bool
        apply ``max(y, 0)`` after saturation.

    Returns
    -------
    np.ndarray, shape (N, M, E, F)
        ``E = (H + 2*padding - R) // stride + 1``, ``F = (W + 2*padding - S) // stride + 1``;
        dtype :func:`int_dtype` (``data_width``): int16 for 16-bit data, int8 for <= 8 bits,
        int32 for 17..32 bits.

    Raises
    ------
    ValueError
        If ``x`` or ``w`` is not 4-D or has an empty dimension; the channel counts do not
        match (``C != groups * w.shape[1]``); C or M is not divisible by ``groups``; the filter
        is larger than the padded input; ``x``, ``w`` or ``bias`` has a non-integer dtype
        (float, bool, object); a value is out of range (``x``/``w`` for ``data_width``,
        ``bias`` for ``psum_width``); ``bias`` does not have shape (M,); or a parameter is
        out of its range above. The message names the offending argument.
    """
    # ---- parameters
    data_width = _check_int_param(data_width, "data_width", *DATA_WIDTH_RANGE)
    psum_width = _check_int_param(psum_width, "psum_width", data_width, PSUM_WIDTH_MAX)
    stride = _check_int_param(stride, "stride", 1)
    padding = _check_int_param(padding, "padding", 0)
    groups = _check_int_param(groups, "groups", 1)
    product_shift = _check_int_param(product_shift, "product_shift", 0, 2 * data_width - 1)
    output_shift = _check_int_param(output_shift, "output_shift", 0, psum_width - 1)
    if not isinstance(relu, (bool, np.bool_)):
        raise ValueError(f"relu must be a bool, got {relu!r}")

    # ---- arrays
    x = _as_int_array(x, "x")
    w = _as_int_array(w, "w")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"w must be 4-D (M, C // groups, R, S), got shape {w.shape}")
    if 0 in x.shape:
        raise ValueError(f"x must not have an empty dimension, got shape {x.shape}")
    if 0 in w.shape:
        raise ValueError(f"w must not have an empty dimension, got shape {w.shape}")
    N, C, H, W = x.shape
    M, Cg, R, S = w.shape
    if C % groups:
        raise ValueError(f"C = {C} input channels is not divisible by groups = {groups}")
    if M % groups:
        raise ValueError(f"M = {M} output channels (filters) is not divisible by "
                         f"groups = {groups}")
    if C != groups * Cg:
        raise ValueError(
            f"channel mismatch: x has C = {C} channels but w has {Cg} channels per filter "
            f"and groups = {groups} (need C == groups * w.shape[1] = {groups * Cg})")
    Hp, Wp = H + 2 * padding, W + 2 * padding
    if R > Hp or S > Wp:
        raise ValueError(
            f"filter R x S = {R} x {S} is larger than the padded input "
            f"{Hp} x {Wp} (H x W = {H} x {W}, padding = {padding})")
    _check_range(x, data_width, "x", f"data_width = {data_width}")
    _check_range(w, data_width, "w", f"data_width = {data_width}")
    if bias is not None:
        bias = _as_int_array(bias, "bias")
        if bias.shape != (M,):
            raise ValueError(f"bias must have shape (M,) = ({M},), got shape {bias.shape}")
        _check_range(bias, psum_width, "bias", f"psum_width = {psum_width}")

    E = (Hp - R) // stride + 1
    F = (Wp - S) // stride + 1
    Mg = M // groups
    K = Cg * R * S

    x64 = x.astype(np.int64)
    if padding:
        x64 = np.pad(x64, ((0, 0), (0, 0), (padding, padding), (padding, padding)))

    # Choose the summation method for product_shift == 0 (see module docstring).
    xmax = max(-int(x.min()), int(x.max()))
    wmax = max(-int(w.min()), int(w.max()))
    use_float = product_shift == 0 and K * xmax * wmax <= _FLOAT_EXACT
    # Weights are converted one group at a time (FC layers have tens of millions of them).
    wdtype = np.float64 if use_float else np.int64

    # acc holds the accumulator modulo 2**64 (uint64 wraps by definition).
    acc = np.empty((N, M, E, F), dtype=np.uint64)
    for g in range(groups):
        # (N, Cg, E, F, R, S) windows of the padded ifmap, no copy.
        win = sliding_window_view(x64[:, g * Cg:(g + 1) * Cg], (R, S), axis=(2, 3))
        win = win[:, :, ::stride, ::stride][:, :, :E, :F]
        win = win.transpose(0, 2, 3, 1, 4, 5)               # (N, E, F, Cg, R, S)
        # (Mg, K), same (c, r, s) order as the window axes
        wg = w[g * Mg:(g + 1) * Mg].reshape(Mg, K).astype(wdtype)
        out = acc[:, g * Mg:(g + 1) * Mg]                    # (N, Mg, E, F) view
        for n0, n1, e0, e1 in _row_blocks(N, E, F * K):
            cols = win[n0:n1, e0:e1].reshape(-1, K)          # copy: ((n1-n0)*(e1-e0)*F, K)
            if use_float:
                part = np.rint(cols.astype(np.float64) @ wg.T).astype(np.int64).view(np.uint64)
            elif product_shift == 0:
                part = cols.view(np.uint64) @ wg.T.view(np.uint64)   # exact modulo 2**64
            else:
                part = _shifted_dot(cols, wg, product_shift)
            # part: (P, Mg) with P ordered (n, e, f)
            out[n0:n1, :, e0:e1] = part.reshape(n1 - n0, e1 - e0, F, Mg).transpose(0, 3, 1, 2)

    if bias is not None:
        acc += bias.astype(np.int64).view(np.uint64)[None, :, None, None]

    # Reduce modulo 2**psum_width and interpret as signed.
    k = 64 - psum_width
    if k:
        acc <<= np.uint64(k)
    acc = acc.view(np.int64)
    if k:
        acc >>= k                                            # arithmetic: sign-extends

    # Round half up: (acc + 2**(s-1)) >> s == (acc >> s) + bit (s-1) of acc.
    s = output_shift
    y = (acc >> s) + ((acc >> (s - 1)) & 1) if s else acc
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    np.clip(y, lo, hi, out=y)
    if relu:
        np.maximum(y, 0, out=y)
    return y.astype(int_dtype(data_width))


def _row_blocks(N: int, E: int, elems_per_row: int):
    """Yield (n0, n1, e0, e1) blocks of output rows whose im2col slice has about
    ``_BLOCK_ELEMS`` elements (whole images when they fit, else rows of one image)."""
    per_image = E * elems_per_row
    if per_image <= _BLOCK_ELEMS:
        step = max(1, _BLOCK_ELEMS // per_image)
        for n0 in range(0, N, step):
            yield n0, min(N, n0 + step), 0, E
    else:
        step = max(1, _BLOCK_ELEMS // elems_per_row)
        for n0 in range(N):
            for e0 in range(0, E, step):
                yield n0, n0 + 1, e0, min(E, e0 + step)


def _shifted_dot(cols: np.ndarray, wg: np.ndarray, product_shift: int) -> np.ndarray:
    """``sum_k (cols[p, k] * wg[m, k]) >> product_shift`` modulo 2**64, shape (P, Mg), uint64.

    Each product is exact in int64 (|x*w| <= 2**62 for data_width <= 32); the floor shift is
    applied per product, then the sum wraps in uint64.
    """
    P, K = cols.shape
    Mg = wg.shape[0]
    res = np.empty((P, Mg), dtype=np.uint64)
    # Block over (p, m) so one product block has about _BLOCK_ELEMS elements.
    mstep = max(1, min(Mg, _BLOCK_ELEMS // max(1, P * K)))
    pstep = P if mstep > 1 or P * K <= _BLOCK_ELEMS else max(1, _BLOCK_ELEMS // K)
    buf = None
    for p0 in range(0, P, pstep):
        p1 = min(P, p0 + pstep)
        c = cols[p0:p1, None, :]
        for m0 in range(0, Mg, mstep):
            m1 = min(Mg, m0 + mstep)
            shape = (p1 - p0, m1 - m0, K)
            if buf is None or buf.size < np.prod(shape):
                buf = np.empty(int(np.prod(shape)), dtype=np.int64)
            prod = buf[:int(np.prod(shape))].reshape(shape)
            np.multiply(c, wg[None, m0:m1, :], out=prod)
            np.right_shift(prod, product_shift, out=prod)
            res[p0:p1, m0:m1] = prod.view(np.uint64).sum(axis=-1, dtype=np.uint64)
    return res


# -- run-length coding ------------------------------------------------------------------

_PAIR_MASK = (1 << RLC_PAIR_BITS) - 1
_RUN_MASK = (1 << RLC_RUN_BITS) - 1
_LEVEL_MASK = (1 << RLC_LEVEL_BITS) - 1
_ZEROS_PER_FILLER = RLC_MAX_RUN + 1      # a (31, 0) pair stands for 32 zeros


def rlc_encode(values) -> np.ndarray:
    """Run-length encode one plane (DESIGN.md section 3; Eyeriss JSSC section IV-B).

    Greedy and therefore unique: each non-zero ``v`` preceded by ``z`` zeros becomes
    ``z // 32`` filler pairs (31, 0) followed by (z % 32, v); ``z`` trailing zeros become
    ``z // 32`` pairs (31, 0) and, if ``z % 32``, one pair (z % 32 - 1, 0). Pairs pack three
    per 64-bit word, pair k at bits [21k+20 : 21k] (run in bits [4:0] of the pair, 16-bit
    two's-complement level in bits [20:5]); the last word is padded with all-zero pairs and has
    bit 63 set.

    Parameters
    ----------
    values : 1-D array of int, shape (E*F,)
        the plane, row-major, each value in -32768..32767.

    Returns
    -------
    np.ndarray of np.uint64, shape (ceil(pairs / 3),)
        An empty plane encodes to an empty array (zero words, no last-word flag); the
        hardware never produces an empty plane, this is only the degenerate case of the model.

    Raises
    ------
    ValueError
        If ``values`` is not a 1-D integer array or a value is outside int16.
    """
    v = _as_int_array(values, "values")
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (one row-major plane), got shape {v.shape}")
    _check_range(v, RLC_LEVEL_BITS, "values", "the RLC level width")
    if v.size == 0:
        return np.zeros(0, dtype=np.uint64)
    v = v.astype(np.int64)

    nz = np.flatnonzero(v)
    # zeros before each non-zero, and after the last one
    prev = np.concatenate(([-1], nz[:-1]))
    z = nz - prev - 1
    trailing = v.size - 1 - (nz[-1] if nz.size else -1)
    fillers = z // _ZEROS_PER_FILLER
    counts = fillers + 1                          # pairs emitted per non-zero
    n_lead = int(counts.sum())
    n_tail = trailing // _ZEROS_PER_FILLER + (1 if trailing % _ZEROS_PER_FILLER else 0)
    n_pairs = n_lead + n_tail
    n_words = -(-n_pairs // RLC_PAIRS_PER_WORD)

    runs = np.zeros(n_words * RLC_PAIRS_PER_WORD, dtype=np.uint64)
    levels = np.zeros(n_words * RLC_PAIRS_PER_WORD, dtype=np.uint64)
    runs[:n_pairs] = RLC_MAX_RUN                  # fillers (31, 0) by default
    ends = np.cumsum(counts) - 1                  # index of each non-zero's own pair
    runs[ends] = (z % _ZEROS_PER_FILLER).astype(np.uint64)
    levels[ends] = (v[nz] & _LEVEL_MASK).astype(np.uint64)
    if trailing % _ZEROS_PER_FILLER:
        runs[n_pairs - 1] = trailing % _ZEROS_PER_FILLER - 1

    pairs = (runs | (levels << np.uint64(RLC_RUN_BITS))).reshape(n_words, RLC_PAIRS_PER_WORD)
    words = np.zeros(n_words, dtype=np.uint64)
    for k in range(RLC_PAIRS_PER_WORD):
        words |= pairs[:, k] << np.uint64(k * RLC_PAIR_BITS)
    words[-1] |= np.uint64(1 << RLC_LAST_BIT)
    return words


def rlc_decode(words, count) -> np.ndarray:
    """Decode one RLC stream back into exactly ``count`` values (DESIGN.md section 3).

    The decoder stops after ``count`` values, as the hardware does: whatever follows in the
    last word (the all-zero padding pairs, or the rest of a pair whose run reaches past
    ``count``) is ignored.

    Parameters
    ----------
    words : 1-D array of unsigned 64-bit words (any integer dtype with values in 0..2**64-1)
    count : int >= 0
        number of values in the plane (E*F). ``count == 0`` decodes an empty ``words`` to an
        empty array (the counterpart of encoding an empty plane).

    Returns
    -------
    np.ndarray of np.int16, shape (count,)

    Raises
    ------
    ValueError
        If ``words`` is not a 1-D integer array in the uint64 range, ``count`` is not a
        non-negative integer, or the stream is malformed: the last-word bit (63) is set on a
        word before ``count`` values have been decoded; ``count`` is reached in a word whose
        last-word bit is clear; words follow the last word; or the words run out before
        ``count`` values.
    """
    if not _is_int(count) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    count = int(count)
    if isinstance(words, (list, tuple)):
        try:
            words = np.array(words, dtype=np.uint64) if len(words) else np.zeros(0, np.uint64)
        except OverflowError:
            raise ValueError("words must be 64-bit unsigned integers (0..2**64-1)") from None
    w = _as_int_array(words, "words")
    if w.ndim != 1:
        raise ValueError(f"words must be 1-D, got shape {w.shape}")
    if w.size and w.dtype.kind == "i" and int(w.min()) < 0:
        raise ValueError(f"words must be 64-bit unsigned integers (0..2**64-1), "
                         f"found {int(w.min())}")
    w = w.astype(np.uint64)

    if count == 0:
        if w.size:
            raise ValueError(f"words after the last word: count is 0 but {w.size} word(s) "
                             f"were given")
        return np.zeros(0, dtype=np.int16)
    if w.size == 0:
        raise ValueError(f"fewer words than needed: no words for {count} value(s)")

    last = (w >> np.uint64(RLC_LAST_BIT)).astype(bool)
    shifts = np.arange(RLC_PAIRS_PER_WORD, dtype=np.uint64) * np.uint64(RLC_PAIR_BITS)
    pairs = ((w[:, None] >> shifts[None, :]) & np.uint64(_PAIR_MASK)).reshape(-1)
    runs = (pairs & np.uint64(_RUN_MASK)).astype(np.int64)
    levels = ((pairs >> np.uint64(RLC_RUN_BITS)) & np.uint64(_LEVEL_MASK)).astype(np.uint16)
    levels = levels.view(np.int16)

    cum = np.cumsum(runs + 1)                     # values decoded after each pair
    j = int(np.searchsorted(cum, count))          # first pair reaching count
    if j == cum.size:                             # stream exhausted before count
        if last.any():
            i = int(np.flatnonzero(last)[0])
            got = int(cum[(i + 1) * RLC_PAIRS_PER_WORD - 1])
            raise ValueError(f"last-word bit set on word {i} after {got} value(s), before "
                             f"count = {count} values were decoded")
        raise ValueError(f"fewer words than needed: {w.size} word(s) hold only "
                         f"{int(cum[-1])} of count = {count} values and none has the "
                         f"last-word bit")
    wj = j // RLC_PAIRS_PER_WORD
    early = np.flatnonzero(last[:wj])
    if early.size:
        i = int(early[0])
        got = int(cum[(i + 1) * RLC_PAIRS_PER_WORD - 1])
        raise ValueError(f"last-word bit set on word {i} after {got} value(s), before "
                         f"count = {count} values were decoded")
    if not last[wj]:
        raise ValueError(f"count = {count} values reached in word {wj} but its last-word "
                         f"bit (bit {RLC_LAST_BIT}) is clear")
    if w.size > wj + 1:
        raise ValueError(f"words after the last word: {w.size - wj - 1} word(s) follow "
                         f"word {wj}, which completes count = {count} values")

    total = int(cum[j])
    out = np.zeros(total, dtype=np.int16)
    out[cum[:j + 1] - 1] = levels[:j + 1]
    return out[:count].copy() if total != count else out


# -- fixed point --------------------------------------------------------------------------

def quantize(x_float, frac_bits, data_width=16) -> np.ndarray:
    """Convert real values to signed fixed point with ``frac_bits`` fraction bits.

    ``q = saturate(floor(x * 2**frac_bits + 0.5))`` — round to nearest, ties toward +infinity
    (round half up, the same rule the hardware applies on ``output_shift``, DESIGN.md
    section 2), then saturate to signed ``data_width`` bits. +-inf saturate.

    Parameters
    ----------
    x_float : array_like of real numbers (any shape)
    frac_bits : int
        fraction bits (may be negative or larger than ``data_width``).
    data_width : int in 2 .. 32
        bits of the result.

    Returns
    -------
    np.ndarray of :func:`int_dtype` (``data_width``), same shape as ``x_float``.

    Raises
    ------
    ValueError
        If ``frac_bits`` or ``data_width`` is not an integer / out of range, ``x_float`` is not
        real-valued, or it contains NaN.
    """
    if not _is_int(frac_bits):
        raise ValueError(f"frac_bits must be an integer, got {frac_bits!r}")
    data_width = _check_int_param(data_width, "data_width", *DATA_WIDTH_RANGE)
    x = np.asarray(x_float)
    if x.dtype.kind not in "iuf":
        raise ValueError(f"x_float must be real-valued, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if np.isnan(x).any():
        raise ValueError("x_float contains NaN, which has no fixed-point value")
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    with np.errstate(over="ignore"):
        q = np.floor(np.ldexp(x, int(frac_bits)) + 0.5)
    q = np.clip(q, lo, hi)
    return q.astype(int_dtype(data_width))


def dequantize(q, frac_bits) -> np.ndarray:
    """Real value of fixed-point integers: ``q * 2**-frac_bits`` as float64 (exact for
    ``|q| < 2**53``).

    Raises
    ------
    ValueError
        If ``q`` is not an integer array or ``frac_bits`` is not an integer.
    """
    if not _is_int(frac_bits):
        raise ValueError(f"frac_bits must be an integer, got {frac_bits!r}")
    q = _as_int_array(q, "q")
    return np.ldexp(q.astype(np.float64), -int(frac_bits))
