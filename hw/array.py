"""The PE array: a ``pe_rows x pe_cols`` grid of row-stationary PEs and the networks around it.

Row-stationary (RS) dataflow, Sze et al., "Efficient Processing of Deep Neural Networks",
Proc. IEEE 2017, section V-B (Fig. 28 and Fig. 29), as built in Eyeriss (Chen et al.,
IEEE JSSC 52(1), 2017, section IV): each PE runs 1-D row convolutions
(:class:`~hw.pe.ProcessingElement`); filter rows are shared along array rows, ifmap rows along
diagonals and psums accumulate up the columns. Data reaches the PEs over three global input
networks (GIN) that *multicast by ID tag* (JSSC section IV-B): every PE holds tag registers
set by the driver before a pass, and a GIN word is delivered in one transfer to every PE whose
tag matches. Finished psums leave the array over the global output network (GON).

Which PE does what is entirely in the role registers (written by the driver through
``role_wr``); the array itself has no notion of layers, sets or folding. See
:class:`PEArray` for the role semantics and the consistency the driver must guarantee.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .layouts import TAG_BITS, pe_role_layout, psum_bits, tagged_layout
from .pe import PEConfig, ProcessingElement, filter_in_shape
from .pe_row import LockstepPERow
from .skid import SkidBuffer

__all__ = ["REPLICA_KEEP_SCRIPT", "PEArray", "role_layout", "psum_link_shape"]


def psum_link_shape(config: AcceleratorConfig) -> Shape:
    """Data shape of the psum GIN and of the GON: ``signed(psum_width)`` with one psum lane
    (``config.psum_lanes == 1``), else ``signed(64)``: a whole GLB word of ``psum_lanes``
    lanes of ``pb = psum_bits(psum_width)`` bits (:func:`hw.layouts.psum_bits`), lane ``i``
    (least significant first) in bits ``[i*pb, (i+1)*pb)`` holding a psum sign-extended to
    ``pb`` bits (the GLB psum element format, so a word goes to and from the GLB as is)."""
    if config.psum_lanes == 1:
        return signed(config.psum_width)
    return signed(64)


def role_layout() -> data.StructLayout:
    """Role registers of one PE (the fields of :func:`~hw.layouts.pe_role_layout` without the
    PE index): ``active``, ``head``, ``tail`` (1 bit each) and ``filter_tag``, ``ifmap_tag``,
    ``psum_tag`` (``TAG_BITS`` each)."""
    return data.StructLayout({
        "active": 1, "head": 1, "tail": 1,
        "filter_tag": unsigned(TAG_BITS),
        "ifmap_tag": unsigned(TAG_BITS),
        "psum_tag": unsigned(TAG_BITS),
    })


class _RowPE:
    """PE ``i`` of a :class:`~hw.pe_row.LockstepPERow`, with the port names of
    :class:`~hw.pe.ProcessingElement` (``psum_in_en`` stands for ``cfg.psum_in_en``)."""

    def __init__(self, prow, i):
        self.start, self.busy = prow.start[i], prow.busy[i]
        self.psum_in_en, self.mac_fire = prow.psum_in_en[i], prow.mac_fire[i]
        self.mac_gated = prow.mac_gated[i]
        self.filter_in, self.ifmap_in = prow.filter_in[i], prow.ifmap_in[i]
        self.psum_in, self.psum_out = prow.psum_in[i], prow.psum_out[i]


def _tree(op, items):
    """Balanced reduction of ``items`` with the binary ``op`` (log depth, not a chain)."""
    items = list(items)
    if not items:
        return Const(0)
    while len(items) > 1:
        nxt = [op(a, b) for a, b in zip(items[0::2], items[1::2])]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _input_stage(m, name, src, layout):
    """Two-entry skid buffer (:class:`~hw.skid.SkidBuffer`) at a stream input.

    Returns ``(valid, payload, fire)``: the registered head word and a ``fire`` signal the
    caller drives (1 = the head word is consumed this cycle; it must imply ``valid``).
    ``src.ready`` is a flop (the skid entry is empty), so no combinational path leads from the
    consumers back to the input, and one word per cycle is sustained.
    """
    m.submodules[name] = sk = SkidBuffer(layout)
    fire = Signal(name=f"{name}_fire")
    m.d.comb += [sk.i.valid.eq(src.valid), sk.i.payload.eq(src.payload),
                 src.ready.eq(sk.i.ready), sk.o.ready.eq(fire)]
    return sk.o.valid, sk.o.payload, fire


#: Yosys commands, run after reading the design and before synthesis (Amaranth's
#: ``script_after_read``; ``accelgen fpga`` adds them), that put "keep" on the per-row copies
#: of registers whose inputs are the same for every row, so that ``opt_merge`` does not fold
#: them back into one register fanning out across the die: the GIN stage-A tag and data
#: (``<gin>_row<r>_a_tag``/``_a_data``), the role words (``role_word_row<r>``) and each
#: lock-step row's ``cfg`` (``cfg_row``, :class:`~hw.pe_row.LockstepPERow`). On the 8 x 8
#: board top Yosys had merged each of them into one register (row 7's).
REPLICA_KEEP_SCRIPT = (
    "proc\n"
    "setattr -set keep 1 w:*_gin_row*_a_tag w:*_gin_row*_a_data w:role_word_row* w:cfg_row "
    "%u %u %u %a %ci1 t:$dff %i\n")


class PEArray(wiring.Component):
    """``pe_rows x pe_cols`` row-stationary PE array with tag-multicast GINs, vertical psum
    links and a tag-selected GON (Eyeriss JSSC section IV-B; survey section V-B).

    PE ``pe = row * pe_cols + col``; row 0 is the top. Psums flow UP a column: the PE at
    ``(row + 1, col)`` feeds the PE at ``(row, col)``.

    Psum lanes: in Eyeriss (JSSC 52(1), 2017, section IV-B) the GON and the psum GIN move
    one psum per transfer. With ``L = config.psum_lanes > 1`` both are widened to one 64-bit
    GLB word of ``L`` psums (:func:`psum_link_shape`), so that ``L`` psum chains are served
    per cycle. A PE's ``psum_tag`` then splits into a *group* ``psum_tag >> log2(L)`` (the
    tag carried by ``psum_gin`` and ``gon_sel``) and a *lane* ``psum_tag % L`` (the chain's
    psum in the word). With ``L = 1`` a group is one chain and its tag is ``psum_tag``; below,
    ``group(pe) = psum_tag >> log2(L)`` and ``lane(pe) = psum_tag % L`` cover both cases
    (``pb = psum_bits(psum_width)``, :func:`hw.layouts.psum_bits`).

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``pe_rows``, ``pe_cols``, ``data_width``, ``psum_width``, ``psum_spad_depth``,
        ``psum_lanes`` and whatever :class:`~hw.pe.ProcessingElement` uses. With
        ``lockstep_rows`` each array row is one :class:`~hw.pe_row.LockstepPERow` (one
        sequencer for the row's PEs; same ports per PE, so nothing below changes).

    Ports
    -----
    role_wr : In(stream.Signature(pe_role_layout()))
        Writes the role registers of PE ``pe`` (see *Roles*). ``ready`` is low while
        ``busy`` (from flops: ``busy`` of the previous cycle, or a start pending) and while
        ``start`` is high: roles change only between passes. A word is written a cycle after
        it is accepted. An index ``pe >= num_pes`` is accepted, dropped, and sets
        ``role_error``. All registers reset to 0 (inactive).
    role_error : Out(1)
        Sticky: a role word with ``pe >= num_pes`` was received. Cleared by ``role_error_clear``.
    role_error_clear : In(1)
        Clears ``role_error`` (a bad word in the same cycle wins). May be left unconnected.
    cfg : In(PEConfig(config))
        Run configuration of the pass, sampled in the cycle ``start`` is accepted.
    start : In(1)
        Pulse while ``busy`` is low: in the next cycle every *active* PE starts with ``cfg``,
        except that its ``psum_in_en`` is ``cfg.psum_in_en`` for a chain head and 1 for every
        other PE (a non-head always adds the psum of the PE below). Ignored while busy and in
        the cycle after ``busy`` falls (the start is taken from registered state).
    busy : Out(1)
        High from the cycle after an accepted ``start`` while a start is pending, any active PE
        is busy, or the GON holds a psum (row or output buffers); low means the pass is
        completely finished (every psum has left on ``gon``).
    filter_gin : In(stream.Signature(tagged_layout(filter_in_shape(config))))
        Filter words (one value, or ``config.filter_lanes`` values: see ``hw.pe``).
        Delivered in ONE transfer to every active PE whose ``filter_tag`` equals ``tag``;
        the transfer happens when all those PEs are ready (Eyeriss GIN semantics). Each PE
        receives its ``p*q*S`` weights (``ceil(p*q*S / filter_lanes)`` transfers) in its
        spad order (see ``hw.pe``).
    ifmap_gin : In(stream.Signature(tagged_layout(signed(data_width))))
        Ifmap words, the same with ``ifmap_tag`` (an ifmap row reaches a diagonal of the RS
        set: the driver gives PE ``(i, j)`` of a set ``ifmap_tag = i + U*j`` plus a set offset).
    psum_gin : In(stream.Signature(tagged_layout(psum_link_shape(config))))
        Input psums for active chain HEADS only; they feed the heads' ``psum_in`` and are
        used only when ``cfg.psum_in_en`` (a head started with ``psum_in_en = 0`` is never
        ready: do not send it psums). A word with tag ``g`` is delivered in ONE transfer
        (when all its targets are ready) to every active head with ``group == g``; each
        takes lane ``lane(pe)`` of ``data`` (its low ``psum_width`` bits). With ``L = 1``
        this is the other GINs' rule with ``psum_tag`` (``data`` is the psum itself); with
        ``L > 1`` lanes that no head takes are ignored.
    gin_dropped : Out(range(4))
        Number of GIN words (0..3, one per GIN) that matched no PE and were dropped; add it
        to a counter. A word is counted the cycle after the central stage hands it to the
        rows. Combinational from the GIN registers.
    gon_sel : In(stream.Signature(unsigned(TAG_BITS)))
        One tag ``g`` per wanted GON word; it selects every active TAIL with ``group == g``
        (with ``L = 1`` the one tail whose ``psum_tag`` is ``g``). The transfer waits until
        EVERY selected tail has a ``psum_out`` word, then takes one psum from each of them in
        the same cycle and emits one word on ``gon`` (one word per sel, in sel order). A sel
        that matches no tail waits forever (driver error).
    gon : Out(stream.Signature(psum_link_shape(config)))
        The selected psums: with ``L = 1`` the psum itself; with ``L > 1`` a word holding in
        lane ``lane(pe)`` the psum of each selected tail, sign-extended to ``pb`` bits, and
        0 in the lanes of no selected tail. Registered (2-entry skid buffer), ``valid``
        independent of ``ready``.
    mac_count : Out(range(num_pes + 1))
        Number of PEs whose ``mac_fire`` was high three cycles earlier (three register
        stages: the strobes, per-row sums, their total).
    gated_count : Out(range(num_pes * psum_spad_depth + 1))
        Sum of all PEs' ``mac_gated`` counts three cycles earlier. Over a pass,
        ``sum(mac_count) + sum(gated_count) = p*q*S*F*n_rows * (active PEs)``.
    stall : Out(1)
        Three cycles earlier ``busy`` was high and no PE fired or gated a MAC.

    Roles
    -----
    ``active``
        The PE takes part in the pass: it is started on ``start``, matched by the GINs/GON and
        its links are used. An inactive PE is never started nor matched.
    ``filter_tag``, ``ifmap_tag``
        Multicast IDs of the filter and ifmap GINs.
    ``psum_tag``
        Psum GIN / GON ID of a chain head / tail: group ``psum_tag >> log2(L)``, lane
        ``psum_tag % L`` (see *Psum lanes* above).
    ``head``
        First (bottom) PE of a psum chain: its ``psum_in`` comes from ``psum_gin`` (tag
        ``group(pe)``, lane ``lane(pe)``) when ``cfg.psum_in_en``, else it starts from zero.
    ``tail``
        Last (top) PE of a chain: its ``psum_out`` goes to the GON, selected by
        ``group(pe)`` into lane ``lane(pe)``. A PE may be both head and tail (a chain of one
        PE).
    non-head active PE at ``(r, c)``
        Adds, psum by psum, the ``psum_out`` of PE ``(r + 1, c)`` (vertical link).
    non-tail active PE at ``(r, c)``
        Its ``psum_out`` goes to the ``psum_in`` of PE ``(r - 1, c)``.

    Driver obligations (assumed, not checked; a violation hangs the pass or corrupts psums):

    1. Every active non-head PE ``(r, c)`` has ``r < pe_rows - 1`` and PE ``(r + 1, c)`` is
       active and not a tail; every active non-tail PE ``(r, c)`` has ``r > 0`` and PE
       ``(r - 1, c)`` is active and not a head. (Chains are contiguous runs of a column.)
    2. The ``psum_tag`` of the active tails are distinct (the GON select is one-hot per
       lane), and likewise those of the active heads.
    3. Every active PE receives exactly its words: ``p*q*S`` filter words when
       ``load_filter`` (``ceil(p*q*S / filter_lanes)`` transfers),
       ``n_rows * ((F-1)*U + S) * q`` ifmap words, and a head ``F*p*n_rows`` psum-GIN words
       of its group when ``psum_in_en``; ``gon_sel`` names every tail GROUP exactly
       ``F*p*n_rows`` times (with ``L = 1``: every tail).
    4. Stream orders keep every matched group able to progress together: a GIN word waits for
       ALL its targets (and a GON word for all the tails of its group), and the spads are
       small, so streams must interleave the targets, e.g. ifmap words column by column
       across all diagonals (``for w: for tag: for qi``) and ``gon_sel``/``psum_gin`` output
       by output across the chain groups (``for f: for chain group: for pi``; with ``L = 1``
       a group is one chain). Sending one whole row after another deadlocks (a PE waiting on
       a later word blocks a word shared with another PE).
    5. Roles are written only while idle (enforced by ``role_wr.ready``, low in the cycle of
       ``start`` too; a word lands in its PE's role registers a cycle after it is accepted,
       by the time a later start reaches the PEs). GIN words that arrive before the
       roles are set are matched against the roles of that moment (and may be dropped).

    Micro-architecture and timing
    -----------------------------
    Each GIN and ``gon_sel`` has a 2-entry input skid buffer, so the data/tag broadcast to all
    PEs starts from flops and every input ``ready`` is a flop. The central stage hands the
    word and its tag to a register in every PE row (when all of them can take it); each row
    compares the tag with its own PEs' role registers into a 2-entry row buffer of the word
    and the row's match bits (two cycles from the GIN input skid to a PE, one word per
    cycle); a row's "all matching targets ready" AND-reduction is
    combinational (a PE's ``ready`` depends only on its registered state, never on its
    ``valid``); with ``L > 1`` each head's lane is picked by a mux on its ``psum_tag``
    register. The GON
    is built like the GINs, by PE row: each ``gon_sel`` tag is broadcast (registered) to a
    stage per row, which takes the psums of the row's selected tails (a one-hot AND-OR mux,
    with ``L > 1`` one OR-tree per lane; it waits until every selected tail of the row has
    a word) into a 2-entry row buffer, or passes the tag at once if none of its tails is
    selected. A central stage then takes, in sel order, the word of every row the tag
    selects (a per-row match vector computed at dispatch, registered and queued in a
    6-entry FIFO),
    ORs them and registers the result (2-entry output buffer). Every ``ready`` a tail sees
    comes from its own row's flops.
    ``start``/``cfg`` are registered once before the fan-out to the PEs. Vertical links
    connect neighbouring PEs directly (``psum_out`` is registered inside the PE and
    ``psum_in.ready`` depends on registered state only). The performance sums are balanced
    adder trees into registers. Latency: start -> PE start 1 cycle; GIN input -> PE 1 cycle;
    tail ``psum_out`` -> ``gon`` 2 cycles (for any ``L``); ``gon_sel`` -> row stage 1
    cycle.
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        dw, n = config.data_width, config.num_pes
        super().__init__({
            "role_wr": In(stream.Signature(pe_role_layout())),
            "role_error": Out(1),
            "role_error_clear": In(1),
            "cfg": In(PEConfig(config)),
            "start": In(1),
            "busy": Out(1),
            "filter_gin": In(stream.Signature(tagged_layout(filter_in_shape(config)))),
            "ifmap_gin": In(stream.Signature(tagged_layout(signed(dw)))),
            "psum_gin": In(stream.Signature(tagged_layout(psum_link_shape(config)))),
            "gin_dropped": Out(range(4)),
            "gon_sel": In(stream.Signature(unsigned(TAG_BITS))),
            "gon": Out(stream.Signature(psum_link_shape(config))),
            "mac_count": Out(range(n + 1)),
            "gated_count": Out(range(n * config.psum_spad_depth + 1)),
            "stall": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        rows, cols, n = c.pe_rows, c.pe_cols, c.num_pes
        dw, pw = c.data_width, c.psum_width
        # Psum lanes: L psums of pb bits per psum-GIN / GON word; tag = group << lb | lane.
        L, pb = c.psum_lanes, psum_bits(pw)
        lb = L.bit_length() - 1
        link = psum_link_shape(c)

        pes = []
        lockstep = []
        for r in range(rows):
            if c.lockstep_rows:
                # One sequencer per array row (hw.pe_row): each PE is a view of its datapath.
                m.submodules[f"pe_row_{r}"] = prow = LockstepPERow(c, cols)
                lockstep.append(prow)
                pes.extend(_RowPE(prow, col) for col in range(cols))
                continue
            for col in range(cols):
                pe = ProcessingElement(c)
                m.submodules[f"pe_{r}_{col}"] = pe
                pes.append(pe)
        roles = [Signal(role_layout(), name=f"role_{k // cols}_{k % cols}") for k in range(n)]

        def at(r, col):
            return r * cols + col

        # ---- busy / start -------------------------------------------------------------------
        start_r = Signal(name="start_r")
        cfg_r = Signal(PEConfig(c), name="cfg_r")
        gon_out_valid = Signal(name="gon_out_valid")
        gon_pending = Signal(name="gon_pending")          # a GON row buffer holds a word
        any_pe_busy = Signal(name="any_pe_busy")
        m.d.comb += [
            any_pe_busy.eq(Cat(pe.busy for pe in pes).any()),
            self.busy.eq(start_r | any_pe_busy | gon_pending | gon_out_valid),
        ]
        # A start is taken from flops: ``busy`` ORs every PE's state, and a start decided from
        # it (with ``cfg_r``'s enable) was a 20.7 ns path of an 8 x 8 board top. ``busy_r``
        # lags ``busy`` by a cycle, but ``busy`` only rises with ``start_r`` (the cycle after
        # a start is taken), so a start is never taken while the array is busy; it is taken a
        # cycle later than it could be only in the cycle after ``busy`` falls.
        busy_r = Signal(name="busy_r")
        m.d.sync += busy_r.eq(self.busy)
        take_start = Signal(name="take_start")
        m.d.comb += take_start.eq(self.start & ~start_r & ~busy_r)
        m.d.sync += start_r.eq(take_start)
        with m.If(take_start):
            m.d.sync += cfg_r.eq(self.cfg)
        for prow in lockstep:
            m.d.comb += prow.cfg.eq(cfg_r)
        for pe, role in zip(pes, roles):
            psum_in_en = Mux(role.head, cfg_r.psum_in_en, 1)
            if c.lockstep_rows:
                m.d.comb += [pe.start.eq(start_r & role.active), pe.psum_in_en.eq(psum_in_en)]
                continue
            m.d.comb += [
                pe.start.eq(start_r & role.active),
                pe.cfg.eq(cfg_r),
                pe.cfg.psum_in_en.eq(psum_in_en),
            ]

        # ---- role registers -----------------------------------------------------------------
        # ready from flops (busy is an OR over every PE): a cycle late at the end of a pass.
        # An accepted word is registered once per PE row (its column one-hot) and written a
        # cycle later: the write decode fanned out from the ready logic to every role flop
        # (21.9 ns on an 8 x 8 board top after placement). Not accepted while ``start`` is
        # high, so a start always sees every word accepted before it (the start is
        # registered too).
        wr = self.role_wr
        m.d.comb += wr.ready.eq(~busy_r & ~start_r & ~self.start)
        with m.If(self.role_error_clear):
            m.d.sync += self.role_error.eq(0)
        accept = Signal(name="role_accept")
        m.d.comb += accept.eq(wr.valid & wr.ready)
        if n < (1 << len(wr.payload.pe)):
            with m.If(accept & (wr.payload.pe >= n)):
                m.d.sync += self.role_error.eq(1)
        for r in range(rows):
            hit = Signal(cols, name=f"role_hit_row{r}")
            word = Signal(role_layout(), name=f"role_word_row{r}")
            m.d.sync += hit.eq(Cat(accept & (wr.payload.pe == at(r, col))
                                   for col in range(cols)))
            with m.If(accept):
                m.d.sync += [getattr(word, f).eq(getattr(wr.payload, f))
                             for f in role_layout().members]
            for col in range(cols):
                with m.If(hit[col]):
                    m.d.sync += roles[at(r, col)].eq(word)

        # ---- GINs: registered broadcast to one stage per PE row, then all-targets-ready
        # within the row (JSSC section IV-B: a Y-bus feeding one X-bus per row). The central stage hands a word to every row stage at once, when all of them
        # can take it (their ready is a flop); each row then delivers it on its own. So no
        # path runs from a PE's ready through the whole array, and each broadcast net drives
        # one row's PEs (on the ECP5-85F the array-wide GIN nets were the most congested).
        def gin(name, src, shape, field, targets, head_only=False, lanes=1, lane_bits=0):
            """Deliver ``src`` to ``targets[k]`` (a stream In port of PE k) for each PE whose
            role ``field`` matches the tag; returns the dropped strobe. With ``lanes > 1``
            (a power of two) the tag matches ``field >> log2(lanes)`` and PE k takes lane
            ``field % lanes`` (``lane_bits`` wide) of the data, truncated to its port."""
            layout = tagged_layout(shape)
            valid, payload, fire = _input_stage(m, name, src, layout)
            shift = lanes.bit_length() - 1

            def selected(k, tag):
                key = getattr(roles[k], field)
                sel = roles[k].active & ((key >> shift if lanes > 1 else key) == tag)
                return sel & roles[k].head if head_only else sel

            def data_for(k, data):
                if lanes == 1:
                    return data
                lane = getattr(roles[k], field)[:shift]           # a role flop: static mux
                return data.as_unsigned().word_select(lane, lane_bits)

            # Two stages per row. Stage A, a register in the row, takes the word and its tag
            # from the central stage; the row compares the tag with its own PEs' roles into
            # stage B (a 2-entry skid: data and the row's match bits), whose fire decision is
            # an AND of flops (match bits, the PEs' ready flops). Matched at the central
            # stage, the tag crossed the die to the role registers of every row and back into
            # the row stages within a cycle: 21.3-23.8 ns paths of an 8 x 8 board top
            # (README, FPGA section). One cycle of latency, no loss of throughput.
            tag_w = len(payload.tag)
            b_layout = data.StructLayout({"data": shape, "match": cols})
            row_ready, row_any = [], []
            for r in range(rows):
                ks = [at(r, col) for col in range(cols)]
                a_valid = Signal(name=f"{name}_row{r}_a_valid")
                a_data = Signal(shape, name=f"{name}_row{r}_a_data")
                a_tag = Signal(tag_w, name=f"{name}_row{r}_a_tag")
                link = stream.Signature(b_layout).create(path=(f"{name}_row{r}_in",))
                rvalid, rpayload, rfire = _input_stage(m, f"{name}_row{r}", link, b_layout)
                a_ready = Signal(name=f"{name}_row{r}_a_ready")
                m.d.comb += [
                    a_ready.eq(~a_valid | link.ready),
                    link.valid.eq(a_valid),
                    link.payload.data.eq(a_data),
                    link.payload.match.eq(Cat(selected(k, a_tag) for k in ks)),
                ]
                with m.If(fire):
                    m.d.sync += [a_valid.eq(1), a_data.eq(payload.data), a_tag.eq(payload.tag)]
                with m.Elif(link.ready):
                    m.d.sync += a_valid.eq(0)
                row_ready.append(a_ready)
                # the row has a target for the word stage A took last cycle (stage A holds
                # it for that cycle whether or not it moves on)
                any_r = Signal(name=f"{name}_row{r}_any")
                m.d.comb += any_r.eq(link.payload.match.any())
                row_any.append(any_r)
                match = rpayload.match
                all_ready = Signal(name=f"{name}_row{r}_all_ready")
                m.d.comb += [
                    all_ready.eq(Cat(~match[i] | targets[k].ready
                                     for i, k in enumerate(ks)).all()),
                    rfire.eq(rvalid & all_ready),
                ]
                for i, k in enumerate(ks):
                    m.d.comb += [targets[k].valid.eq(rfire & match[i]),
                                 targets[k].payload.eq(data_for(k, rpayload.data))]
            m.d.comb += fire.eq(valid & Cat(row_ready).all())
            # A word no PE takes is counted once, the cycle after the central stage hands it
            # on (from the rows' stage A, each comparing with its own roles).
            fired = Signal(name=f"{name}_fired")
            m.d.sync += fired.eq(fire)
            dropped = Signal(name=f"{name}_dropped")
            m.d.comb += dropped.eq(fired & ~Cat(row_any).any())
            return dropped

        drop_f = gin("filter_gin", self.filter_gin, filter_in_shape(c), "filter_tag",
                     [pe.filter_in for pe in pes])
        # Ifmap GIN targets are per-PE 2-entry skid buffers: a PE's ifmap_in.ready comes out
        # of its spad-refill logic (several levels deep), and the GIN's all-targets-ready AND
        # over the whole array would chain every PE's refill logic into one path (on an
        # ECP5 8x8 array the longest). The skid's ready is a flop; throughput stays 1/cycle.
        ifmap_skid_in = [stream.Signature(signed(dw)).create(path=(f"ifmap_skid_in_{k}",))
                         for k in range(n)]
        for k, pe in enumerate(pes):
            v, pl, take_k = _input_stage(m, f"ifmap_skid_{k}", ifmap_skid_in[k], signed(dw))
            m.d.comb += [pe.ifmap_in.valid.eq(v), pe.ifmap_in.payload.eq(pl),
                         take_k.eq(v & pe.ifmap_in.ready)]
        drop_i = gin("ifmap_gin", self.ifmap_gin, signed(dw), "ifmap_tag", ifmap_skid_in)
        # psum GIN targets are per-PE proxies, muxed with the vertical links below. With psum
        # lanes a word feeds every head of a group, each from its own lane (low pw bits).
        head_in = [stream.Signature(signed(pw)).create(path=(f"head_in_{k}",))
                   for k in range(n)]
        drop_p = gin("psum_gin", self.psum_gin, link, "psum_tag", head_in,
                     head_only=True, lanes=L, lane_bits=pb)
        m.d.comb += self.gin_dropped.eq(drop_f + drop_i + drop_p)

        # ---- GON: per-row collection, then an in-order central stage ------------------------
        # The sel is broadcast (registered) to one stage per PE row, like the GINs. A row
        # stage takes the psums of its matching tails into its own 2-entry buffer (or passes a
        # sel that matches none of its tails at once); the central stage, in sel order, waits
        # for a word from every row the sel matches (a per-row match vector computed at
        # dispatch and queued) and ORs them into the output register. So no path runs from a
        # tail's psum_out.valid through the whole array and back to every tail's ready: on an
        # ECP5 8 x 8 array that loop spanned the die twice.
        sel_valid, sel_tag, sel_fire = _input_stage(m, "gon_sel", self.gon_sel,
                                                     unsigned(TAG_BITS))

        def tail_match(k, tag):
            key = roles[k].psum_tag >> lb if L > 1 else roles[k].psum_tag
            return roles[k].active & roles[k].tail & (key == tag)

        link_w = Shape.cast(link).width
        # The per-row match vector is registered (one flop per row, next to its role
        # registers) and queued a cycle after dispatch: compared and queued in the same cycle
        # it was a 20.9 ns path (sel tag -> every role -> FIFO) of the first 8 x 8 board top
        # that routed. Dispatch keeps a FIFO slot free for the vector in flight.
        order_depth = 6
        m.submodules["gon_order"] = order = SyncFIFO(width=rows, depth=order_depth)
        row_match = Signal(rows, name="gon_row_match")
        order_wr = Signal(name="gon_order_wr")
        m.d.sync += order_wr.eq(sel_fire)
        for r in range(rows):
            with m.If(sel_fire):
                m.d.sync += row_match[r].eq(Cat(tail_match(at(r, col), sel_tag)
                                                for col in range(cols)).any())
        gsel = Signal(n, name="gon_match")
        row_take = Signal(rows, name="gon_row_take")
        sel_links, outs = [], []
        for r in range(rows):
            ks = [at(r, col) for col in range(cols)]
            # the row's sel stage (fed by the central dispatch)
            sel_link = stream.Signature(unsigned(TAG_BITS)).create(path=(f"gon_row{r}_sel",))
            rv, rtag, rpop = _input_stage(m, f"gon_row{r}_sel", sel_link, unsigned(TAG_BITS))
            m.d.comb += [sel_link.valid.eq(sel_fire), sel_link.payload.eq(sel_tag)]
            sel_links.append(sel_link)
            for k in ks:
                m.d.comb += gsel[k].eq(tail_match(k, rtag))
            rsel = Cat(gsel[k] for k in ks)
            has = Signal(name=f"gon_row{r}_has")
            all_valid = Signal(name=f"gon_row{r}_all_valid")
            m.d.comb += [
                has.eq(rsel.any()),
                all_valid.eq(Cat(~gsel[k] | pes[k].psum_out.valid for k in ks).all()),
            ]
            # the row's output buffer (2-entry skid: its ready is a flop)
            out_link = stream.Signature(unsigned(link_w)).create(path=(f"gon_row{r}_word",))
            ov, od, opop = _input_stage(m, f"gon_row{r}_out", out_link, unsigned(link_w))
            word = Signal(link_w, name=f"gon_row{r}_data")
            if L == 1:
                m.d.comb += word.eq(_tree(lambda a, b: a | b,
                                          [Mux(gsel[k], pes[k].psum_out.payload.as_unsigned(),
                                               0) for k in ks]))
            else:
                for j in range(L):
                    # Sign extension to pb bits commutes with the OR (sign(a | b) = sign(a) |
                    # sign(b)), so it is applied once per lane, after the tree.
                    lane = Signal(signed(pb), name=f"gon_row{r}_lane{j}")
                    m.d.comb += [
                        lane.eq(_tree(lambda a, b: a | b,
                                      [Mux(gsel[k] & (roles[k].psum_tag[:lb] == j),
                                           pes[k].psum_out.payload, 0)
                                       for k in ks]).as_signed()),
                        word[j * pb:(j + 1) * pb].eq(lane),
                    ]
            m.d.comb += [
                out_link.valid.eq(rv & has & all_valid),
                out_link.payload.eq(word),
                row_take[r].eq(out_link.valid & out_link.ready),
                rpop.eq(rv & (~has | row_take[r])),
            ]
            outs.append((ov, od, opop))

        # central dispatch: every row stage and the order queue take the sel together
        # (first-word-fall-through FIFO: an entry written in cycle t is at r_data in t+1,
        # as early as the rows' words can be; a FIFO with an output register cost a cycle
        # per sel, and 5 instead of 4 cycles per window where the GON is the bottleneck)
        m.d.comb += [
            sel_fire.eq(sel_valid & (order.level + order_wr < order_depth)
                        & Cat(sl.ready for sl in sel_links).all()),
            order.w_en.eq(order_wr),
            order.w_data.eq(row_match),
        ]
        # central collect, in sel order (a sel that matches no tail waits forever)
        need = order.r_data
        src_valid = Signal(name="gon_src_valid")
        src_data = Signal(link_w, name="gon_src_data")
        m.submodules["gon_out"] = gout = SkidBuffer(link)
        m.d.comb += [
            src_valid.eq(order.r_rdy & need.any()
                         & Cat(~need[r] | outs[r][0] for r in range(rows)).all()),
            src_data.eq(_tree(lambda a, b: a | b,
                              [Mux(need[r], outs[r][1], 0) for r in range(rows)])),
            gout.i.valid.eq(src_valid),
            gout.i.payload.eq(src_data),
            order.r_en.eq(src_valid & gout.i.ready),
            gon_pending.eq(Cat(o[0] for o in outs).any()),
            gon_out_valid.eq(gout.o.valid),
            gout.o.ready.eq(self.gon.ready),
            self.gon.valid.eq(gout.o.valid),
            self.gon.payload.eq(gout.o.payload),
        ]
        for r in range(rows):
            m.d.comb += outs[r][2].eq(src_valid & gout.i.ready & need[r])

        # ---- vertical psum links and psum_in/psum_out routing ------------------------------
        for r in range(rows):
            for col in range(cols):
                k = at(r, col)
                pe, role = pes[k], roles[k]
                # psum_in: the psum GIN for a head, the PE below for a non-head.
                if r + 1 < rows:
                    below, brole = pes[at(r + 1, col)], roles[at(r + 1, col)]
                    link_valid = below.psum_out.valid & ~brole.tail
                    link_data = below.psum_out.payload
                else:
                    link_valid, link_data = Const(0), Const(0, signed(pw))
                m.d.comb += [
                    pe.psum_in.valid.eq(Mux(role.head, head_in[k].valid, link_valid)),
                    pe.psum_in.payload.eq(Mux(role.head, head_in[k].payload, link_data)),
                    head_in[k].ready.eq(pe.psum_in.ready),
                ]
                # psum_out: the GON for a tail, the PE above (an active non-head) otherwise.
                if r > 0:
                    above, arole = pes[at(r - 1, col)], roles[at(r - 1, col)]
                    up_ready = arole.active & ~arole.head & above.psum_in.ready
                else:
                    up_ready = Const(0)
                m.d.comb += pe.psum_out.ready.eq(Mux(role.tail, row_take[r] & gsel[k], up_ready))

        # ---- performance strobes (three register stages) -----------------------------------
        # Each PE's strobes are registered, then summed per row (registered next to the row),
        # then added: one adder tree over all PEs would run from every PE's MAC strobe (in
        # lock step: the row's issue decision) across the array in one cycle.
        fire_r = [Signal(name=f"mac_fire_r{k}") for k in range(n)]
        gated_r = [Signal.like(pe.mac_gated, name=f"mac_gated_r{k}") for k, pe in enumerate(pes)]
        for k, pe in enumerate(pes):
            m.d.sync += [fire_r[k].eq(pe.mac_fire), gated_r[k].eq(pe.mac_gated)]
        row_fires, row_gated, row_work = [], [], []
        for r in range(rows):
            ks = [at(r, col) for col in range(cols)]
            rf = Signal(range(cols + 1), name=f"row{r}_mac_count")
            rg = Signal(range(cols * c.psum_spad_depth + 1), name=f"row{r}_gated_count")
            rw = Signal(name=f"row{r}_working")
            m.d.sync += [
                rf.eq(_tree(lambda a, b: a + b, [fire_r[k] for k in ks])),
                rg.eq(_tree(lambda a, b: a + b, [gated_r[k] for k in ks])),
                rw.eq(Cat(fire_r[k] | gated_r[k].any() for k in ks).any()),
            ]
            row_fires.append(rf)
            row_gated.append(rg)
            row_work.append(rw)
        busy_rr = Signal(name="busy_rr")
        m.d.sync += [
            busy_rr.eq(busy_r),
            self.mac_count.eq(_tree(lambda a, b: a + b, row_fires)),
            self.gated_count.eq(_tree(lambda a, b: a + b, row_gated)),
            self.stall.eq(busy_rr & ~Cat(row_work).any()),
        ]
        return m
