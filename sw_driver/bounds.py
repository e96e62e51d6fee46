"""Lower bounds on a layer's cycles and DRAM words over every mapping the driver can choose.

The analytical model (:mod:`sw_driver.perfmodel`) predicts what one mapping costs; this
module answers a different question: *can any* mapping reach a target? For every candidate
:func:`sw_driver.mapper.candidates` yields (and, for a network's first layer, every row-strip
count, as :func:`sw_driver.strips.plan_layer` searches them) it computes quantities that
the hardware cannot beat, and keeps the smallest:

DRAM words (64-bit), for any layer
    each ifmap plane as often as the mapping loads it (once when
    :attr:`~sw_driver.mapper.Mapping.ifmap_resident`, else once per filter block), in the
    form it is stored (RLC or 4 values per word, the rows of each strip for strips); every
    weight once per image block, 4 per word; every ofmap plane once, RLC-encoded as a whole
    (a plane stored in strip pieces takes at least as many words). Bias words and commands
    are left out, so the bound is below what the compiler moves.

Cycles, for any layer
    the larger of the link time (DRAM words above / ``dram_rate``) and the passes, each at
    least the longest of: its MACs on non-zero ifmap values over the PEs working in it; the
    busiest PE's ``windows x p x q x S`` MACs (one per cycle) less ``p - 1`` per zero in the
    pass (zero skipping runs a zero's ``p`` MACs in one cycle); its ifmap values over the
    1-value/cycle ifmap GIN; its filter values over the filter GIN followed by the
    last-loaded PE's windows. With one copy of each GLB region (``buffers == 1``) loads,
    passes and stores run one after the other, so the link time adds to the passes; with
    one psum region (:attr:`~sw_driver.mapper.Mapping.single_psum`) each filter block's
    ofmap store (its share of the ofmap's RLC words, at the link rate) runs before the next
    block's first pass. Pass ramps, the GIN and PE interplay within a window and DRAM
    latency are left out (:func:`mapping_terms`).

The minimum over mappings of these bounds is what "no mapping of this hardware can" rests
on: if it exceeds a target, no schedule the driver can emit meets that target. Where it
does not, :func:`plans_below` lists the plans it leaves open for the analytical model
(``accelgen bench --bounds --model-check``; README, issue 5 notes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.config import AcceleratorConfig
from sw_driver.golden import rlc_encode
from sw_driver.mapper import LayerShape, Mapping, candidates
from sw_driver.strips import Strip, _split

__all__ = ["LayerBound", "layer_bounds", "mapping_terms", "nonzero_counts", "plane_words",
           "plans_below"]

#: Values per 64-bit DRAM word when stored raw (16-bit data).
_RAW_LANES = 4


def plane_words(x: np.ndarray, rlc: bool) -> int:
    """64-bit DRAM words of every plane of ``x`` (N, C, H, W) stored once: RLC-encoded per
    plane (:func:`sw_driver.golden.rlc_encode`, DESIGN.md section 3) or 4 values per word."""
    N, C, H, W = x.shape
    if not rlc:
        return N * C * math.ceil(H * W / _RAW_LANES)
    return sum(len(rlc_encode(x[n, c].ravel())) for n in range(N) for c in range(C))


@dataclass(frozen=True)
class LayerBound:
    """The smallest bounds found over the candidates.

    ``cycles_strips`` / ``dram_strips``: strip counts of the mappings that give them (1: the
    layer whole); ``cycles_mapping`` / ``dram_mapping``: the first strip's mapping;
    ``plans``: with a ``target``, the plans under it, lowest bound first (:func:`plans_below`)."""

    cycles: int
    cycles_strips: int
    cycles_mapping: Mapping
    dram_words: int
    dram_strips: int
    dram_mapping: Mapping
    candidates: int
    plans: tuple = ()


def nonzero_counts(x: np.ndarray, layer: LayerShape) -> np.ndarray:
    """(N, C, E) int64: per image, channel and ofmap row, the window positions (over the
    row's ``F`` windows and the ``R x S`` filter taps) whose ifmap value is not zero (padding
    counts as zero). A filter block of ``f`` filters runs ``f`` times that many MACs on
    non-zero values. ``x``: the unpadded ifmap (N, C, H, W)."""
    L = layer
    nz = np.pad(x != 0, ((0, 0), (0, 0), (L.padding,) * 2, (L.padding,) * 2)).astype(np.int64)
    ii = np.zeros((nz.shape[0], nz.shape[1], nz.shape[2] + 1, nz.shape[3] + 1), np.int64)
    ii[:, :, 1:, 1:] = nz.cumsum(2).cumsum(3)          # integral image
    r0 = (np.arange(L.E) * L.U)[:, None]
    c0 = (np.arange(L.F) * L.U)[None, :]
    win = (ii[:, :, r0 + L.R, c0 + L.S] - ii[:, :, r0, c0 + L.S]
           - ii[:, :, r0 + L.R, c0] + ii[:, :, r0, c0])
    return win.sum(axis=3)


def mapping_terms(mp: Mapping, *, ifmap_words: int, ofmap_words: float, nz: np.ndarray,
                  rate: float, gin_rate: float = 1.0,
                  copies: int = 1) -> tuple[float, float, int]:
    """``(serial, link, dram)`` for ``copies`` strips of equal height (or one layer) run
    with mapping ``mp``: ``dram`` the DRAM-word lower bound, ``link = dram / rate`` cycles,
    ``serial`` the PE-side cycles that cannot overlap each other. The layer needs at least
    ``max(sum(serial), sum(link))`` cycles over its strips.

    ``ifmap_words``: the strips' ifmap planes stored once (:func:`plane_words`);
    ``ofmap_words``: their ofmap planes stored once; ``nz``: (copies, N, C, E) non-zero
    window positions of each strip (:func:`nonzero_counts` over its ofmap rows).

    Each pass takes at least the longest of (a) its MACs on non-zero ifmap values over the
    PEs that work in it, and the busiest PE's ``windows x p x q x S`` less ``p - 1`` for
    every zero in the pass (zero skipping, JSSC section IV-C as built in ``hw.pe``, runs a
    zero's ``p`` MACs in one cycle);
    (b) the ifmap values it needs over the ifmap GIN (``gin_rate`` per cycle, 1 as built;
    padding not counted); and (c) its filter values over the filter GIN (``filter_lanes``
    per cycle) followed by the windows of the last-loaded PE (the emptiest filter group and
    channel set: ``p x q x S`` cycles per window, less ``p - 1`` for every zero in the
    pass, never under ``q x S``). Everything is per row chunk. With ``buffers == 1`` the
    link time adds to the passes (loads, passes and stores run one after the other); with
    one psum region each filter block's share of the ofmap store, at the link rate, runs
    before the next block's first pass."""
    L = mp.layer
    fil_rate = mp.config.filter_lanes
    ifmap = ifmap_words * (1 if mp.ifmap_resident or mp.n_cblocks == 1 else mp.n_mblocks)
    filters = copies * mp.n_nblocks * math.ceil(L.M * L.Cg * L.R * L.S / _RAW_LANES)
    dram = ifmap + filters + math.ceil(ofmap_words)
    pe = 0.0
    for g in range(L.groups):
        for nbk in range(mp.n_nblocks):
            n0, n1 = nbk * mp.nb, min(L.N, (nbk + 1) * mp.nb)
            windows = (n1 - n0) * mp.n_fold * L.F          # per PE and pass
            for cb in range(mp.n_cblocks):
                c0 = g * L.Cg + cb * mp.CB
                c1 = g * L.Cg + min(L.Cg, (cb + 1) * mp.CB)
                q = math.ceil((c1 - c0) / mp.r_sets)     # the fullest channel set
                sets = min(mp.r_sets, c1 - c0)
                cells = nz[:, n0:n1, c0:c1].sum(axis=(1, 2))       # per copy
                full = (n1 - n0) * (c1 - c0) * L.E * L.F * L.R * L.S
                gin = ((n1 - n0) * (c1 - c0) * min(L.H, mp.n_h * mp.n_fold)
                       * min(L.W, mp.W_cols)) / gin_rate
                q_min = (c1 - c0) - q * (sets - 1)       # the emptiest channel set
                for mb in range(mp.n_mblocks):
                    f = min(mp.PT, L.Mg - mb * mp.PT)
                    p = math.ceil(f / mp.t_sets)         # the fullest filter group
                    groups_on = math.ceil(f / p)
                    p_min = f - p * (groups_on - 1)      # the emptiest
                    pes = mp.Rc * sets * mp.e * groups_on
                    # every filter value of the pass crosses the filter GIN before the
                    # last-loaded PE can start its windows
                    load = math.ceil(f * (c1 - c0) * mp.Rc * L.S / fil_rate)
                    for k in range(copies):
                        # a zero skips at most p - 1 cycles of one PE
                        zeros = full - cells[k]
                        busiest = windows * p * q * L.S - (p - 1) * zeros
                        last = windows * p_min * q_min * L.S - (p_min - 1) * zeros
                        work = max(f * cells[k] / pes, busiest, windows * q * L.S)
                        pe += max(work, load + max(last, windows * q_min * L.S),
                                  gin) * mp.n_rchunks
    link = dram / rate
    serial = pe
    if mp.buffers == 1:
        serial += link
    elif mp.single_psum:
        units = copies * L.groups * mp.n_nblocks * mp.n_mblocks
        serial += ofmap_words * (units - 1) / units / rate
    return serial, link, dram


def _plans(layer, config, x, y, *, rate, ifmap_rlc, ofmap_rlc, strips, buffers):
    """Per strip split of ``layer`` (the whole layer, then 2..E strips when ``strips``) whose
    heights all map: ``(parts, per_height)``, ``per_height`` a list of ``(rows, members,
    terms, candidates)``, the majority height first; ``terms`` is an array of
    :func:`mapping_terms` rows (serial, link, dram) over all strips of that height."""
    L = layer
    ofmap_total = plane_words(y, ofmap_rlc)
    xp = np.pad(x, ((0, 0), (0, 0), (L.padding,) * 2, (L.padding,) * 2)) if strips else x
    nzc = nonzero_counts(x, L)
    splits = [[(0, L.E)]]
    if strips:
        splits += [parts for k in range(2, L.E + 1)
                   if len(parts := _split(L.E, k)) == k]      # as plan_layer tries them
    for parts in splits:
        whole = len(parts) == 1
        groups = {}
        for e0, e1 in parts:
            groups.setdefault(e1 - e0, []).append((e0, e1))
        per_height = []
        for rows, members in sorted(groups.items(), key=lambda g: -len(g[1])):
            # strips of one height share a mapping (the driver maps them alike); each reads
            # its own ifmap rows
            if whole:
                shape, words = L, plane_words(x, ifmap_rlc)
            else:
                Hs = (rows - 1) * L.U + L.R
                shape = LayerShape(L.N, L.C, Hs, L.Wp, L.M, L.R, L.S, L.U, 0, L.groups)
                words = sum(plane_words(xp[:, :, e0 * L.U:e0 * L.U + Hs, :], ifmap_rlc)
                            for e0, _ in members)
            nz = np.stack([nzc[:, :, e0:e1].sum(axis=2) for e0, e1 in members])
            try:
                cands = list(candidates(shape, config, dram_rate=rate, buffers=buffers))
            except ValueError:
                cands = []
            if not cands:
                break
            share = ofmap_total * rows * len(members) / L.E
            t = np.array([mapping_terms(mp, ifmap_words=words, ofmap_words=share, nz=nz,
                                        rate=rate, copies=len(members))
                          for mp in cands]).reshape(-1, 3)
            per_height.append((rows, members, t, cands))
        else:
            yield parts, per_height


def plans_below(layer: LayerShape, config: AcceleratorConfig, x: np.ndarray, y: np.ndarray,
                cycles: float, *, dram_rate: float, ifmap_rlc: bool, ofmap_rlc: bool,
                strips: bool = False, buffers=(1, 2)) -> list[tuple[int, list]]:
    """The strip plans whose cycle bound is below ``cycles``, lowest first, as
    ``(bound, [sw_driver.strips.Strip, ...])``. A plan is a strip count and a mapping for
    its majority strip height; the other heights (one short last strip) take the candidate
    with the lowest bound of their own, and the bound screens with each other height at its
    own minimum serial and link terms, so no other choice for them has a lower bound.
    Arguments as :func:`layer_bounds`."""
    return layer_bounds(layer, config, x, y, dram_rate=dram_rate, ifmap_rlc=ifmap_rlc,
                        ofmap_rlc=ofmap_rlc, strips=strips, buffers=buffers,
                        target=cycles).plans


def _screen(L, parts, per_height, cycles):
    """The plans of one strip split whose screening bound is below ``cycles``:
    ``(bound, [Strip, ...])`` (see :func:`plans_below`)."""
    out = []
    _, _, t0, c0 = per_height[0]
    rest_ser = sum(t[:, 0].min() for _, _, t, _ in per_height[1:])
    rest_lnk = sum(t[:, 1].min() for _, _, t, _ in per_height[1:])
    screen = np.maximum(t0[:, 0] + rest_ser, t0[:, 1] + rest_lnk)
    others = {rows: c[int(np.argmin(np.maximum(t[:, 0], t[:, 1])))]
              for rows, _, t, c in per_height[1:]}
    for i in np.nonzero(screen < cycles)[0]:
        table = {per_height[0][0]: c0[i], **others}
        plan = []
        for e0, e1 in parts:
            mp = table[e1 - e0]
            h0 = e0 * L.U if len(parts) > 1 else 0
            plan.append(Strip(e0, e1, h0, h0 + mp.layer.H, mp))
        out.append((int(math.ceil(screen[i])), plan))
    return out


def layer_bounds(layer: LayerShape, config: AcceleratorConfig, x: np.ndarray,
                 y: np.ndarray, *, dram_rate: float, ifmap_rlc: bool, ofmap_rlc: bool,
                 strips: bool = False, buffers=(1, 2),
                 target: float | None = None) -> LayerBound:
    """Lower bounds on ``layer``'s cycles and DRAM words over all mappings on ``config``.

    ``x``: the ifmap (N, C, H, W), unpadded; ``y``: the ofmap (N, M, E, F);
    ``dram_rate``: 64-bit words per cycle of the link; ``strips``: also every row-strip
    count (a network's first layer; strips read host-padded ifmap rows, stored raw or RLC
    as ``ifmap_rlc`` says); ``target``: also list, in :attr:`LayerBound.plans`, the plans
    whose cycle bound is below this many cycles (:func:`plans_below`), from the same pass.

    Raises
    ------
    ValueError
        If no mapping exists at all (the mapper's message for the whole layer).
    """
    L = layer
    rate = max(1e-6, min(1.0, dram_rate))
    best_c = best_d = None
    n_cands = 0
    plans = []
    for parts, per_height in _plans(L, config, x, y, rate=rate, ifmap_rlc=ifmap_rlc,
                                    ofmap_rlc=ofmap_rlc, strips=strips, buffers=buffers):
        n_cands += sum(len(c) for _, _, _, c in per_height)
        if target is not None:
            plans += _screen(L, parts, per_height, target)
        dram = sum(t[:, 2].min() for _, _, t, _ in per_height)
        if best_d is None or dram < best_d[0]:
            _, _, t0, c0 = per_height[0]
            best_d = (int(dram), len(parts), c0[int(np.argmin(t0[:, 2]))])
        # max(sum serial, sum link) over one candidate per height
        ser, lnk = np.zeros(1), np.zeros(1)
        for _, _, t, _ in per_height:
            ser = (ser[:, None] + t[None, :, 0]).ravel()
            lnk = (lnk[:, None] + t[None, :, 1]).ravel()
        both = np.maximum(ser, lnk)
        i = int(np.argmin(both))
        j = i // int(np.prod([len(c) for _, _, _, c in per_height[1:]] or [1]))
        if best_c is None or both[i] < best_c[0]:
            best_c = (float(both[i]), len(parts), per_height[0][3][j])
    if best_d is None:
        from sw_driver.mapper import map_layer
        map_layer(L, config, dram_rate=rate, buffers=buffers)   # raises the mapper's error
        raise ValueError(f"layer {L}: no mapping")
    return LayerBound(cycles=math.ceil(best_c[0]), cycles_strips=best_c[1],
                      cycles_mapping=best_c[2], dram_words=best_d[0], dram_strips=best_d[1],
                      dram_mapping=best_d[2], candidates=n_cands,
                      plans=tuple(sorted(plans, key=lambda r: r[0])))
