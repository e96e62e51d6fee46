"""Row-stationary mapper: a CONV layer shape to a mapping of the PE array.

The mapping follows Eyeriss (Chen et al., JSSC 2017, section IV-A and Table II; Sze et al.
survey section V-B):

- A *PE set* is ``Rc`` filter rows (array rows) by ``e`` ofmap rows (array columns). PE
  (i, j) convolves filter row i with ifmap row ``i + U*j``; psums accumulate up the column.
- **Folding**: when ``E > pe_cols``, each PE column processes ``n_fold`` ofmap rows one after
  the other (``e = ceil(E / n_fold)`` columns are used).
- **Strip-mining** of filter rows: when ``R > pe_rows`` the rows are split into ``n_rchunks``
  equal chunks of ``Rc`` rows (a short last chunk is padded with zero weights); their psums
  accumulate in the GLB like channel blocks.
- **Replication**: ``r_sets`` sets stacked vertically take different channel groups (the psum
  chain runs through all of them); ``t_sets`` filter groups take different filters and share
  the ifmap rows, delivered by one multicast. The filter groups sit side by side
  (``t_cols = t_sets // t_rows`` of them) and, when the sets are short, also stacked
  (``t_rows``), each stack of ``r_sets`` channel sets with a psum chain of its own. Stacked
  filter groups are Eyeriss's CONV3-5 mapping (JSSC 2017, Table III: ``t = 4`` sets of
  3 rows, one channel set): more filters per pass, so each ifmap block read from DRAM serves
  more filters.
- Inside a PE: ``p`` filters x ``q`` channels interleaved (``p*q*S <= filter spad``,
  ``q*S <= ifmap spad``, ``p <= psum spad``).
- Images: ``nb`` images per block run through the PEs as consecutive rows.

``Mapping.explain()`` prints the choice and its predicted utilisation. A layer that cannot be
mapped raises ``ValueError`` saying why, before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hw.config import AcceleratorConfig
from hw.layouts import TAG_BITS, act_bits, lanes, psum_bits
from hw.pe import F_BITS, N_ROWS_BITS

__all__ = ["LayerShape", "Mapping", "candidates", "map_layer", "REFINE", "WHAT_IF"]


#: Design-space what-ifs for the cost model (NOT the RTL); shared with, and documented at,
#: ``sw_driver.perfmodel.WHAT_IF``.
WHAT_IF: dict = {}


@dataclass(frozen=True)
class LayerShape:
    """A CONV layer (an FC layer is a CONV with R = H, S = W).

    ``H``/``W`` are the *unpadded* ifmap sizes; ``padding`` zeros are added on each side.
    ``C`` and ``M`` are totals over all ``groups``.
    """

    N: int
    C: int
    H: int
    W: int
    M: int
    R: int
    S: int
    U: int = 1
    padding: int = 0
    groups: int = 1

    def __post_init__(self):
        for name in ("N", "C", "H", "W", "M", "R", "S", "U", "groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        if self.C % self.groups or self.M % self.groups:
            raise ValueError(f"C={self.C} and M={self.M} must be divisible by "
                             f"groups={self.groups}")
        if self.R > self.Hp or self.S > self.Wp:
            raise ValueError(f"filter {self.R}x{self.S} is larger than the padded ifmap "
                             f"{self.Hp}x{self.Wp}")

    @property
    def Hp(self):
        return self.H + 2 * self.padding

    @property
    def Wp(self):
        return self.W + 2 * self.padding

    @property
    def E(self):
        return (self.Hp - self.R) // self.U + 1

    @property
    def F(self):
        return (self.Wp - self.S) // self.U + 1

    @property
    def Cg(self):
        return self.C // self.groups

    @property
    def Mg(self):
        return self.M // self.groups

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the layer (all images)."""
        return self.N * self.M * self.E * self.F * self.Cg * self.R * self.S


@dataclass
class Mapping:
    """A row-stationary mapping; sizes are in elements unless the name says words."""

    layer: LayerShape
    config: AcceleratorConfig
    e: int            # PE columns per set (ofmap rows in parallel)
    n_fold: int       # ofmap rows per PE column, one after the other
    Rc: int           # filter rows per chunk (PE rows per set)
    n_rchunks: int
    r_sets: int       # sets stacked vertically (channel groups)
    t_sets: int       # filter groups (t_cols side by side x t_rows stacked)
    p: int            # filters per PE
    q: int            # channels per PE
    nb: int           # images per block
    glb: dict = field(default_factory=dict)   # region -> (word address, words)
    #: 1: one GLB region each for filters, bias, ifmaps and psums; the compiler serialises
    #: LOAD, PASS and STORE. 2: every region double-buffered ("filter", "filter.1", ...);
    #: the compiler overlaps DRAM loads and stores with the passes (Eyeriss JSSC 2017,
    #: section IV: the GLB hides DRAM latency).
    buffers: int = 1
    #: 64-bit DRAM words per cycle assumed by the cost model (0.3 for Eyeriss's link).
    dram_rate: float = 1.0
    #: Filter groups stacked vertically (divides ``t_sets``): group ``t`` sits in vertical
    #: block ``t // t_cols`` (rows ``[(t // t_cols) * r_sets * Rc, ...)``) and column block
    #: ``t % t_cols``.
    t_rows: int = 1
    #: The GLB ifmap region holds all channels of an image block (``Cg`` rounded up to whole
    #: channel blocks), loaded from DRAM once per image block and read by every filter
    #: block. Otherwise it holds one channel block, loaded again for every filter block.
    #: Eyeriss keeps ifmaps in the GLB across filters where they fit (JSSC 2017, section
    #: IV-A). Always so with one channel block (no extra GLB); with several, the mapper
    #: weighs the larger region (AlexNet: no layer fits it on ``eyeriss``).
    ifmap_resident: bool = False
    #: With ``buffers == 2``: ONE psum region (and bias region) while the filter and ifmap
    #: regions stay double-buffered. A filter block's first pass then waits for the STOREs of
    #: the filter block before, but the psums of twice as many images (or filters) fit, so
    #: filters are read from DRAM once per larger image block. Eyeriss runs AlexNet CONV3-5
    #: with n = 4 images per pass (JSSC 2017, Table III; BENCHMARKS.md).
    single_psum: bool = False

    # -- derived ---------------------------------------------------------------------------
    @property
    def filter_tag_values(self):
        """GLB elements per filter tag: ``p*q*S``, padded to whole filter-GIN transfers of
        ``config.filter_lanes`` values (:func:`_tag_values`)."""
        return _tag_values(self.p * self.q * self.layer.S, self.config.filter_lanes)

    @property
    def t_cols(self):
        """Filter groups side by side: ``t_sets // t_rows``."""
        return self.t_sets // self.t_rows

    def set_origin(self, v: int, t: int) -> tuple[int, int]:
        """PE (row, column) of filter row 0 / ofmap row 0 of channel set ``v`` in filter
        group ``t``."""
        return ((t // self.t_cols) * self.r_sets + v) * self.Rc, (t % self.t_cols) * self.e

    @property
    def CB(self):
        """Channels per channel block (one pass)."""
        return self.q * self.r_sets

    @property
    def PT(self):
        """Filters per filter block."""
        return self.p * self.t_sets

    @property
    def n_cblocks(self):
        return math.ceil(self.layer.Cg / self.CB)

    @property
    def if_copies(self) -> int:
        """Copies of the GLB ifmap region: ``buffers``, except 1 for a resident ifmap of
        several channel blocks, which is loaded channel block by channel block into planes
        of its own and so double-buffers itself (:func:`_if_copies`)."""
        return _if_copies(self.buffers, self.ifmap_resident, self.n_cblocks)

    @property
    def psum_copies(self) -> int:
        """Copies of the GLB psum and bias regions: ``buffers``, except 1 with
        :attr:`single_psum`."""
        return 1 if self.single_psum else self.buffers

    @property
    def if_channels(self) -> int:
        """Channel planes per image in the GLB ifmap region: all ``n_cblocks * CB`` when
        :attr:`ifmap_resident`, else one channel block ``CB``."""
        return self.n_cblocks * self.CB if self.ifmap_resident else self.CB

    @property
    def ifmap_dram_words(self) -> int:
        """64-bit DRAM words of dense ifmap loads in the layer: each image block's ``Cg``
        channels once when :attr:`ifmap_resident`, else its channel blocks once per filter
        block."""
        L = self.layer
        la = lanes(act_bits(self.config.data_width))
        per_block = L.groups * self.n_nblocks
        if self.ifmap_resident:
            return per_block * math.ceil(self.nb * L.Cg * self.plane_pitch / la)
        return per_block * self.n_mblocks * self.n_cblocks * math.ceil(
            self.nb * self.CB * self.plane_pitch / la)

    @property
    def n_mblocks(self):
        return math.ceil(self.layer.Mg / self.PT)

    @property
    def n_nblocks(self):
        return math.ceil(self.layer.N / self.nb)

    @property
    def e_pad(self):
        """``e`` rounded up to a multiple of ``config.psum_lanes``: the chains of a set as
        numbered in psum tags (``t*e_pad + j``) and the GLB psum rows of a fold; the GON and
        the psum GIN serve the chains in groups of ``psum_lanes`` (:func:`_e_pad`)."""
        return _e_pad(self.e, self.config.psum_lanes)

    @property
    def psum_groups(self):
        """Chain groups of one GON / psum-GIN transfer per set: ``e_pad // psum_lanes``."""
        return self.e_pad // self.config.psum_lanes

    @property
    def E_alloc(self):
        """GLB psum rows per plane: ``e_pad`` per fold."""
        return self.e_pad * self.n_fold

    @property
    def n_h(self):
        """Ifmap rows (tags) in flight per channel group: ``U*(e-1) + Rc``."""
        return self.layer.U * (self.e - 1) + self.Rc

    @property
    def W_cols(self):
        """Ifmap columns each PE reads per row: ``(F-1)*U + S``."""
        return (self.layer.F - 1) * self.layer.U + self.layer.S

    @property
    def active_pes(self):
        return self.Rc * self.r_sets * self.e * self.t_sets

    @property
    def plane_pitch(self):
        """GLB elements per ifmap plane (H*W rounded up to whole words)."""
        la = lanes(act_bits(self.config.data_width))
        return math.ceil(self.layer.H * self.layer.W / la) * la

    @property
    def n_passes(self):
        return (self.layer.groups * self.n_nblocks * self.n_mblocks * self.n_cblocks
                * self.n_rchunks)

    @property
    def ifmap_gin_per_window(self) -> int:
        """Ifmap values the 1-value/cycle ifmap GIN delivers per window (the ``U`` new
        columns of every ifmap row in flight: ``U * r_sets * n_h * q``)."""
        return math.ceil(self.layer.U * self.r_sets * self.n_h * self.q
                         / WHAT_IF.get("ifmap_gin_per_cycle", 1))

    def pass_cycles(self, nbn=None) -> int:
        """Predicted cycles of one pass: filter load over the filter GIN (``filter_lanes``
        values per cycle, each tag's block in whole transfers) plus
        ``n_rows*F`` windows, each the longest of the PE work (``p*q*S`` MACs), the GON
        draining the window's ``p*e*t_sets`` psums at one transfer of ``psum_lanes`` chains
        per cycle (``p*psum_groups*t_sets`` transfers; the GON is shared by all columns) and
        the ifmap GIN delivering the window's new columns at 1 value/cycle
        (:attr:`ifmap_gin_per_window`). ``sw_driver.perfmodel`` models all three exactly;
        here a window costs the 4-norm of the three (:func:`_window`), not their maximum."""
        L = self.layer
        nbn = self.nb if nbn is None else nbn
        n_tags = self.r_sets * self.t_sets * self.Rc
        fil_w = WHAT_IF.get("filter_gin_per_cycle", self.config.filter_lanes)
        gon_w = WHAT_IF.get("gon_per_cycle", 1)
        load = n_tags * math.ceil(self.p * self.q * L.S / fil_w)
        window = _window(self.p * self.q * L.S,
                         math.ceil(self.p * self.psum_groups * self.t_sets / gon_w),
                         self.ifmap_gin_per_window)
        compute = nbn * self.n_fold * L.F * window
        return load + compute

    def predicted_cycles(self) -> int:
        L = self.layer
        total = 0
        for nbk in range(self.n_nblocks):
            nbn = min(self.nb, L.N - nbk * self.nb)
            total += self.pass_cycles(nbn) * (L.groups * self.n_mblocks * self.n_cblocks
                                              * self.n_rchunks)
        return total

    def serial_cycles(self) -> int:
        """Cycle estimate with load, compute and store serialised (as the compiler issues
        them today): PE work plus DRAM words moved (1 word/cycle) plus stored values."""
        L, c = self.layer, self.config
        la = lanes(act_bits(c.data_width))
        per_block = L.groups * self.n_nblocks
        ifmap_words = self.ifmap_dram_words
        filter_words = self.n_passes * math.ceil(
            self.r_sets * self.t_sets * self.Rc * self.filter_tag_values / la)
        store_values = per_block * self.n_mblocks * self.nb * self.PT * L.E * L.F
        return self.predicted_cycles() + ifmap_words + filter_words + store_values

    def overlap_cycles(self) -> int:
        """Cycle estimate with double buffering: loads of the next pass and stores of the
        previous filter block run under the passes, so a pass costs the longer of its PE work
        and the DRAM words moved meanwhile (at ``dram_rate`` words/cycle)."""
        L, c = self.layer, self.config
        la = lanes(act_bits(c.data_width))
        rate = max(1e-6, min(1.0, self.dram_rate))
        per_block = L.groups * self.n_nblocks
        ifmap_words = self.ifmap_dram_words
        filter_words = self.n_passes * math.ceil(
            self.r_sets * self.t_sets * self.Rc * self.filter_tag_values / la)
        store_words = math.ceil(per_block * self.n_mblocks * self.nb * self.PT * L.E * L.F
                                / la)
        dram = (ifmap_words + filter_words + store_words) / rate
        ramp = self.pass_cycles() // max(1, self.n_passes) + \
            (self.nb * self.PT * L.E * L.F) // max(1, self.n_mblocks)
        pe = self.predicted_cycles()
        if self.single_psum:
            # Each filter block's STOREs run before the next block's first pass, at the link
            # rate. Stores are of ReLU'd ofmaps in RLC: with about half the values zero
            # (random weights), three (run, level) pairs per word cover about six values,
            # 2/3 of the raw words (DESIGN.md section 3).
            pe += STORE_RLC_FRACTION * store_words / rate
        return int(max(pe, dram) + ramp)

    def cost(self) -> int:
        """The mapper's objective: :meth:`overlap_cycles` when double-buffered, else
        :meth:`serial_cycles` (its 1 word/cycle DRAM term scaled by ``dram_rate``)."""
        if self.buffers == 2:
            return self.overlap_cycles()
        pe = self.predicted_cycles()
        return int(pe + (self.serial_cycles() - pe) / max(1e-6, min(1.0, self.dram_rate)))

    def predicted_utilization(self) -> float:
        """Useful MACs / (predicted cycles x all PEs)."""
        return self.layer.macs / (self.predicted_cycles() * self.config.num_pes)

    def explain(self) -> str:
        L, c = self.layer, self.config
        lines = [
            f"layer: N={L.N} C={L.C} H={L.H} W={L.W} M={L.M} R={L.R} S={L.S} U={L.U} "
            f"pad={L.padding} groups={L.groups} -> E={L.E} F={L.F}, {L.macs:,} MACs",
            f"array: {c.pe_rows}x{c.pe_cols} PEs; PE set {self.Rc} rows x {self.e} cols, "
            f"{self.r_sets} set(s) stacked (channels) x {self.t_sets} filter group(s) "
            f"({self.t_cols} side by side x {self.t_rows} stacked)"
            f" -> {self.active_pes} active PEs ({self.active_pes / c.num_pes:.0%})",
            f"per PE: p={self.p} filters x q={self.q} channels x S={L.S} "
            f"({self.p * self.q * L.S}/{c.filter_spad_depth} filter spad words)",
            f"folding: {self.n_fold} ofmap row(s) per column; strip-mining: "
            f"{self.n_rchunks} chunk(s) of {self.Rc} filter rows; {self.nb} image(s) per block",
            f"buffers: {'double (loads/stores overlap passes)' if self.buffers == 2 else 'single (serial)'}"
            + ("; one psum region (a filter block's first pass waits for the stores of the "
               "block before)" if self.single_psum else "")
            + (f"; ifmap resident: all {self.if_channels} channel(s) of an image block in the "
               f"GLB ({self.if_copies} cop{'y' if self.if_copies == 1 else 'ies'}), loaded "
               f"once for all filter blocks" if self.ifmap_resident else ""),
            f"passes: {self.n_passes} = {L.groups} group(s) x {self.n_nblocks} image block(s)"
            f" x {self.n_mblocks} filter block(s) of {self.PT} x {self.n_cblocks} channel "
            f"block(s) of {self.CB} x {self.n_rchunks} row chunk(s)",
            "GLB: " + ", ".join(f"{k} {w} words @ {a}" for k, (a, w) in self.glb.items())
            + f" (of {c.glb_words})",
            f"predicted: {self.predicted_cycles():,} cycles of PE work, utilization "
            f"{self.predicted_utilization():.1%} (ideal {L.macs / c.num_pes:,.0f} cycles)",
        ]
        return "\n".join(lines)


#: DRAM words of an RLC ofmap store per raw (4 values per word) word, as the mapper's cost
#: assumes for :attr:`Mapping.single_psum` (about half the values zero after ReLU).
STORE_RLC_FRACTION = 2 / 3

#: Mapper candidates checked with the analytical model (:func:`map_layer`'s ``refine``).
REFINE = 4
#: Largest layer (MACs, all images) whose mapping candidates go through the model.
REFINE_MACS = 20_000_000


def _refine(cands, dram_rate: float) -> Mapping:
    """The candidate (``(cost, index, Mapping)`` tuples, cheapest first) with the fewest
    cycles in the analytical model on dense data at ``dram_rate`` words/cycle; ties go to
    the cheaper :meth:`Mapping.cost`."""
    from fractions import Fraction

    from sw_driver.perfmodel import predict_layer
    from sw_driver.targets import DramModel

    rate = Fraction(min(1.0, max(1e-3, dram_rate))).limit_denominator(1000)
    dram = DramModel(rate_num=rate.numerator, rate_den=rate.denominator)
    scored = [(predict_layer(mp.config, mp.layer, dram=dram, mapping=mp).cycles, k, mp)
              for k, (_, _, mp) in enumerate(cands)]
    return min(scored, key=lambda t: (t[0], t[1]))[2]


def _window(*loads) -> int:
    """Cycles of one window whose PE work, GON and ifmap GIN need ``loads`` cycles each: the
    4-norm of the loads. They overlap, but through small buffers (8 psums per chain, a
    ``q*S``-word ifmap spad), so a window is slower than the largest when another load comes
    close to it: equal loads cost 19% more than one alone, a load half as large 3%. Against
    ``sw_driver.perfmodel`` on AlexNet CONV2 (``eyeriss``, 4 psum lanes, N=4) the maximum
    ranked the mapping of 7.73 M model cycles first and the 4-norm the one of 7.20 M."""
    return math.ceil(sum(x ** 4 for x in loads) ** 0.25)


def _e_pad(e: int, psum_lanes: int) -> int:
    """``e`` rounded up to a multiple of ``psum_lanes`` (chains per set in psum tags and GLB
    psum rows per fold)."""
    return math.ceil(e / psum_lanes) * psum_lanes


def _tag_values(pqs: int, filter_lanes: int) -> int:
    """GLB elements of one filter tag's block: ``pqs`` rounded up to a multiple of
    ``filter_lanes`` (with lanes, a tag's block is whole GLB words, read word by word)."""
    return math.ceil(pqs / filter_lanes) * filter_lanes


def _buffer_options(buffers, n_cblocks):
    """(buffers, ifmap resident, single psum) candidates. With one channel block the ifmap
    is resident at no GLB cost; otherwise both are tried. Double-buffered candidates are
    also tried with one psum region (:attr:`Mapping.single_psum`)."""
    for nbuf in buffers:
        for single in ((False, True) if nbuf == 2 else (False,)):
            if n_cblocks > 1:
                yield nbuf, False, single
            yield nbuf, True, single


def _if_copies(buffers, resident, n_cblocks):
    """Copies of the GLB ifmap region (see :attr:`Mapping.if_copies`)."""
    return 1 if resident and n_cblocks > 1 else buffers


def _glb_plan(layer, config, *, e, n_fold, Rc, r_sets, t_sets, p, q, nb, buffers=1,
              if_channels=None, if_buffers=None, psum_buffers=None):
    """GLB regions (``buffers`` copies of each; ``if_buffers`` of the ifmap region, which
    holds ``if_channels`` planes per image, default ``q * r_sets``; ``psum_buffers`` of the
    psum and bias regions), or None when they do not fit. The copies of a region are named
    ``name`` and ``name.1``.

    Filter, psum and ifmap copies start on a bank boundary, so the engines that stream them
    at the same time (filter and ifmap GIN, GON, LOAD, STORE) meet in no bank. A filter
    block's bias (one word per filter) follows its psum buffer in the same banks: both
    belong to the same filter block, the STORE engine reads them one after the other, and
    only the bias LOAD (32 words for 32 filters) can meet the block's last pass there.
    A bank of its own would cost, e.g., the 16 x 2-group CONV1 mapping its fit in the
    Eyeriss preset's 27 banks."""
    la = lanes(act_bits(config.data_width))
    lp = lanes(psum_bits(config.psum_width))
    bank = config.glb_bank_words
    pitch = math.ceil(layer.H * layer.W / la) * la
    n_tags = r_sets * t_sets * Rc
    filter_words = math.ceil(n_tags * _tag_values(p * q * layer.S, config.filter_lanes) / la)
    bias_words = p * t_sets
    ifmap_words = nb * (if_channels or q * r_sets) * pitch // la
    psum_words = math.ceil(nb * p * t_sets * _e_pad(e, config.psum_lanes) * n_fold * layer.F
                           / lp)
    plan, addr = {}, 0

    def banks(words):
        return math.ceil(words / bank) * bank

    for k in range(buffers):
        plan["filter" if k == 0 else f"filter.{k}"] = (addr, filter_words)
        addr += banks(filter_words)
    for k in range(psum_buffers or buffers):
        sfx = "" if k == 0 else f".{k}"
        plan["psum" + sfx] = (addr, psum_words)
        plan["bias" + sfx] = (addr + psum_words, bias_words)
        addr += banks(psum_words + bias_words)
    for k in range(if_buffers or buffers):     # ifmap after the others: base > 0
        plan["ifmap" if k == 0 else f"ifmap.{k}"] = (addr, ifmap_words)
        addr += banks(ifmap_words)
    if addr > config.glb_words:
        return None
    return plan


def _geometry(L: LayerShape, c: AcceleratorConfig) -> tuple[int, int, int]:
    """``(Rc, e, n_fold)``: filter rows per chunk (the fewest chunks of at most
    ``pe_rows``), PE columns per set and ofmap rows per column (the fewest folds of at most
    ``pe_cols`` columns, balanced)."""
    Rc = math.ceil(L.R / math.ceil(L.R / c.pe_rows))
    n_fold = math.ceil(L.E / min(L.E, c.pe_cols))
    return Rc, math.ceil(L.E / n_fold), n_fold


def p_limit(c: AcceleratorConfig) -> int:
    """Largest ``p`` (filters interleaved per PE) the mapper uses: ``psum_spad_depth``, and
    with lock-step rows (``lockstep_rows``, :mod:`hw.pe_row`) at most half the usable
    output FIFO, ``(psum_fifo_depth - 1) // 2``. A lock-step row stops when any of its
    PEs has no FIFO room, and the psum GIN and GON drain a row's chains one after another,
    so each PE must hold a second window of ``p`` psums while the first waits to drain;
    with less, a pass can deadlock (measured: a 1x1 layer with ``p = 5`` hung with 6
    usable entries on ``tiny``, and ran with 7 or more)."""
    if c.lockstep_rows:
        return min(c.psum_spad_depth, (c.psum_fifo_depth - 1) // 2)
    return c.psum_spad_depth


def _check_limits(L: LayerShape, c: AcceleratorConfig) -> None:
    """Raise ValueError when a layer breaks a PE limit that no tiling can avoid."""
    if L.S > c.ifmap_spad_depth or L.S > c.filter_spad_depth:
        raise ValueError(f"filter width S={L.S} exceeds the ifmap spad "
                         f"({c.ifmap_spad_depth} words) or filter spad "
                         f"({c.filter_spad_depth} words): one filter row must fit a PE")
    if L.F >= 1 << F_BITS:
        raise ValueError(f"ofmap width F={L.F} exceeds the PE's limit {(1 << F_BITS) - 1}")
    if L.U >= 16:
        raise ValueError(f"stride U={L.U} exceeds the PE's limit 15")


def candidates(layer: LayerShape, config: AcceleratorConfig, *, dram_rate: float = 1.0,
               buffers=(1, 2), reasons: set | None = None):
    """Every row-stationary mapping of ``layer`` that :func:`map_layer` weighs: each image
    block size, channel-set count, ``q``, filter-group arrangement and buffer option (one or
    two copies of the GLB regions, ifmap resident or not, one or two psum regions) whose GLB
    regions fit, with the largest ``p`` that fits and the ``p`` of the next few filter-block
    counts. Yields :class:`Mapping` objects; ``reasons`` (a set) collects why the others
    were dropped.

    Raises
    ------
    ValueError
        A PE limit no tiling avoids (see :func:`map_layer`).
    """
    L, c = layer, config
    _check_limits(L, c)
    reasons = set() if reasons is None else reasons
    n_rchunks = math.ceil(L.R / c.pe_rows)
    Rc, e, n_fold = _geometry(L, c)
    v_max = max(1, c.pe_rows // Rc)         # sets stacked vertically
    r_max = max(1, min(v_max, L.Cg))
    t_max = max(1, min(c.pe_cols // e, L.Mg))
    q_max = max(1, min(c.ifmap_spad_depth // L.S, c.filter_spad_depth // L.S, L.Cg))
    n_h = L.U * (e - 1) + Rc
    nb_options = sorted({max(1, math.ceil(L.N / 2 ** k)) for k in range(12)}, reverse=True)
    for nb in nb_options:
        if nb * n_fold >= 1 << N_ROWS_BITS:
            reasons.add(f"{nb} image(s) x {n_fold} folds exceed {(1 << N_ROWS_BITS) - 1} "
                        f"rows per PE run")
            continue
        for r_sets in range(r_max, 0, -1):
            if r_sets * n_h > 1 << TAG_BITS:
                reasons.add("too many ifmap GIN tags")
                continue
            for q in range(min(q_max, math.ceil(L.Cg / r_sets)), 0, -1):
                for t_rows, t_cols in [(tr, tc) for tr in range(1, v_max // r_sets + 1)
                                       for tc in range(t_max, 0, -1)]:
                    t_sets = t_rows * t_cols
                    if t_rows > 1 and t_sets > L.Mg:
                        continue
                    if r_sets * t_sets * Rc > 1 << TAG_BITS:
                        reasons.add("too many filter GIN tags")
                        continue
                    p_cap = min(p_limit(c), c.filter_spad_depth // (q * L.S),
                                math.ceil(L.Mg / t_sets), 255)

                    n_cb = math.ceil(L.Cg / (q * r_sets))
                    for nbuf, resident, single in _buffer_options(buffers, n_cb):
                        def plan_for(p):
                            # fewer filter groups when p * t_sets overshoots M (side by
                            # side only: a stack keeps its t_rows)
                            t_eff = min(t_sets, math.ceil(L.Mg / p))
                            if t_rows > 1 and t_eff != t_sets:
                                return t_eff, None
                            return t_eff, _glb_plan(L, c, e=e, n_fold=n_fold, Rc=Rc,
                                                    r_sets=r_sets, t_sets=t_eff, p=p, q=q,
                                                    nb=nb, buffers=nbuf,
                                                    if_channels=(n_cb * q * r_sets
                                                                 if resident else None),
                                                    if_buffers=_if_copies(
                                                        nbuf, resident, n_cb),
                                                    psum_buffers=1 if single else nbuf)
                        # The GLB need grows with p: binary-search the largest p that fits.
                        lo, hi, found = 1, p_cap, None
                        while lo <= hi:
                            mid = (lo + hi) // 2
                            t_eff, plan = plan_for(mid)
                            if plan is None:
                                hi = mid - 1
                            else:
                                found, lo = (mid, t_eff, plan), mid + 1
                        if found is None:
                            reasons.add("GLB capacity")
                            continue
                        p_max, t_eff, plan = found
                        # Also the p of the next few filter-block counts: p just large
                        # enough for k blocks leaves fewer padded filters in the last one
                        # (CONV4: 192 filters in 6 blocks of 32, not 5.3 blocks of 36).
                        k0 = math.ceil(L.Mg / (t_eff * p_max))
                        p_opts = {p_max} | {math.ceil(L.Mg / (t_eff * k))
                                            for k in range(k0, k0 + 3)}
                        for p in sorted(p_opts, reverse=True):
                            if p != p_max:
                                t_p, plan = plan_for(p)
                                if plan is None or t_p != t_eff:
                                    continue
                            mp = Mapping(L, c, e=e, n_fold=n_fold, Rc=Rc,
                                         n_rchunks=n_rchunks, r_sets=r_sets, t_sets=t_eff,
                                         p=p, q=q, nb=nb, glb=plan, buffers=nbuf,
                                         dram_rate=dram_rate, t_rows=t_rows,
                                         ifmap_resident=resident, single_psum=single)
                            yield mp


def map_layer(layer: LayerShape, config: AcceleratorConfig, *, dram_rate: float = 1.0,
              buffers=(1, 2), refine: int = REFINE) -> Mapping:
    """Choose a row-stationary mapping of ``layer`` on ``config``.

    Candidates with single and double-buffered GLB regions (``buffers``), each with the
    ifmap reloaded per filter block or resident (:attr:`Mapping.ifmap_resident`, where the
    GLB holds it; the cheaper of the two per geometry is kept), are weighed by
    :meth:`Mapping.cost` with the DRAM link at ``dram_rate`` 64-bit words per cycle. The
    ``refine`` cheapest (default :data:`REFINE`; 0 or 1: just the cheapest) are then run
    through the analytical model (``sw_driver.perfmodel.predict_layer``, dense data, the
    same link) and the one it predicts fastest wins, for layers of at most
    :data:`REFINE_MACS` MACs (the model takes about 20 s for AlexNet CONV2 at N=4, too long
    to run four times per layer). :meth:`Mapping.cost` is a closed form
    that misses the chain, GON and GIN interplay the model simulates (on a ``tiny`` R=5
    layer it ranked p=2 q=2 first, which the RTL runs in 6,334 cycles, over p=4 q=2 in
    5,669; the model predicts 6,653 and 5,800).

    Raises
    ------
    ValueError
        If the layer cannot be mapped: a filter row wider than the ifmap spad, more tags than
        the GIN carries, F or rows beyond the PE's counters, or no tiling that fits the GLB.
        The message says which limit was hit.
    """
    L, c = layer, config
    reasons = set()
    cands = [(mp.cost(), k, mp) for k, mp in enumerate(
        candidates(L, c, dram_rate=dram_rate, buffers=buffers, reasons=reasons))]
    if cands:
        # One candidate per geometry: with and without a resident ifmap, or with one or two
        # psum regions, the same passes run, so keep the cheaper (two psum regions never
        # cost more), and on a tie the one reading fewer DRAM words.
        geo = {}
        for cost, k, mp in cands:
            key = (mp.p, mp.q, mp.r_sets, mp.t_sets, mp.t_rows, mp.nb, mp.buffers)
            rank = (cost, mp.ifmap_dram_words, k)
            if key not in geo or rank < geo[key][0]:
                geo[key] = (rank, mp)
        ranked = sorted(geo.values(), key=lambda r: r[0])
        if refine > 1 and len(ranked) > 1 and L.macs <= REFINE_MACS:
            return _refine([(r[0][0], r[0][2], r[1]) for r in ranked[:refine]], dram_rate)
        return ranked[0][1]
    Rc, e, n_fold = _geometry(L, c)
    smallest = _glb_plan(L, c, e=e, n_fold=n_fold, Rc=Rc, r_sets=1, t_sets=1, p=1, q=1, nb=1)
    reasons = sorted(reasons)
    raise ValueError(
        f"layer {L} cannot be mapped on {c.pe_rows}x{c.pe_cols} PEs with a "
        f"{c.glb_words}-word GLB: even p=q=1, one image, needs more GLB than there is "
        f"(one ifmap plane is {math.ceil(L.H * L.W / lanes(act_bits(c.data_width)))} words, "
        f"one psum block "
        f"{math.ceil(_e_pad(e, c.psum_lanes) * n_fold * L.F / lanes(psum_bits(c.psum_width)))}"
        f" words)"
        if smallest is None else f"layer {L} cannot be mapped: {reasons}")
