"""Address generation unit (AGU) and GLB element streams.

An AGU walks a loop nest of :data:`~hw.layouts.AGU_LEVELS` levels (descriptor
:func:`~hw.layouts.agu_layout`) and emits one :func:`~hw.layouts.agu_step_layout` step per
cycle: a GLB element address, a GIN/GON tag and an in-bounds flag for zero padding. This is
how the Eyeriss controller feeds the GIN and drains the GON in the order chosen by the
mapping (Chen et al., IEEE JSSC 52(1), 2017, section IV; DESIGN.md section 5): the driver
turns a mapping into loop counts and strides, :func:`agu_desc` turns those into the
per-level *jumps* the hardware adds, so the hardware needs only counters and adders.

- :class:`AGU` -- the loop-nest walker (counters and adders, no multipliers).
- :class:`ElementReader` -- one GLB element read per step (padding steps read nothing).
- :class:`ElementWriter` -- joins steps with data and writes one element per step.
- :func:`agu_desc` -- descriptor dict from counts and strides (used by the driver).
- :func:`agu_steps` -- pure-Python reference of the step sequence.
"""

from amaranth import Cat, Module, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .glb import GLB_MASK_BITS, glb_read_signature, glb_write_layout
from .layouts import (AGU_LEVELS, COUNT_BITS, ELEM_ADDR_BITS, GLB_WORD_BITS, GRANULE_BITS,
                      TAG_BITS, agu_layout, agu_step_layout, lanes)

__all__ = ["AGU", "ElementReader", "ElementWriter", "agu_desc", "agu_steps",
           "AGU_COORDS", "element_out_layout"]

#: Coordinates an AGU walks, in descriptor-field order (``jump_<c>``, ``base_<c>``).
AGU_COORDS = ("addr", "tag", "y", "x")

# Width and signedness of each coordinate register (the hardware wraps modulo 2**width).
_COORD_BITS = {"addr": ELEM_ADDR_BITS, "tag": TAG_BITS, "y": 16, "x": 16}
_COORD_SIGNED = {"addr": False, "tag": False, "y": True, "x": True}


def _jump_bits(c):
    return agu_layout()[f"jump_{c}"].shape.elem_shape.width


def _wrap(value, bits, is_signed):
    value &= (1 << bits) - 1
    if is_signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def _signed_fits(value, bits):
    return -(1 << (bits - 1)) <= value < (1 << (bits - 1))


# ---------------------------------------------------------------------------------------
# Pure-Python helpers (driver and reference model)
# ---------------------------------------------------------------------------------------

def agu_desc(counts, strides=None, *, base=None, H=0, W=0, pad_check=False) -> dict:
    """Build an :func:`~hw.layouts.agu_layout` descriptor dict from loop counts and strides.

    Parameters
    ----------
    counts : sequence of int
        Loop counts, outermost first, at most :data:`AGU_LEVELS` of them, each
        ``0 <= count < 2**COUNT_BITS``. A shorter list maps to the *innermost* levels (the
        outer levels get count 1). A count of 0 makes an empty nest (no steps).
    strides : dict or None
        Coordinate name (``"addr"``, ``"tag"``, ``"y"``, ``"x"``) -> list of per-level
        strides, same length as ``counts``. Missing coordinates have stride 0.
    base : dict or None
        Coordinate name -> start value (missing: 0). ``addr`` in ``[0, 2**ELEM_ADDR_BITS)``
        (with ``pad_check`` also negative down to ``-(2**ELEM_ADDR_BITS - 1)``, stored
        modulo ``2**ELEM_ADDR_BITS``: a padded walk may start before element 0),
        ``tag`` in ``[0, 2**TAG_BITS)``, ``y``/``x`` signed 16-bit.
    H, W : int
        Bounds for the in-bounds check (unsigned 16-bit).
    pad_check : bool
        When true a step is in bounds only if ``0 <= y < H and 0 <= x < W``.

    Returns
    -------
    dict
        Suitable for ``agu_layout().const(d)``: ``jump_c[l] = stride_c[l] -
        sum_{k > l} (count[k] - 1) * stride_c[k]`` (0 for levels with count <= 1, which never
        increment).

    Raises
    ------
    ValueError
        Naming the offending field: bad number of levels, a count out of range, an unknown
        coordinate or a stride list of the wrong length, a base/H/W out of range, a jump that
        does not fit its signed field (``jump_addr[l]``: ELEM_ADDR_BITS + 1 bits,
        ``jump_tag[l]``: TAG_BITS + 1, ``jump_y``/``jump_x``: 16), or a coordinate that
        leaves its register range somewhere in the nest (``y``, ``x`` signed 16-bit;
        ``tag`` unsigned TAG_BITS; ``addr`` unsigned ELEM_ADDR_BITS unless ``pad_check``,
        where padding steps may point anywhere).
    """
    L = AGU_LEVELS
    counts = [int(c) for c in counts]
    n = len(counts)
    if not 1 <= n <= L:
        raise ValueError(f"count: expected 1..{L} levels, got {n}")
    for i, c in enumerate(counts):
        if not 0 <= c < (1 << COUNT_BITS):
            raise ValueError(f"count[{i}] = {c} is out of range 0..{(1 << COUNT_BITS) - 1}")
    strides = dict(strides or {})
    base = dict(base or {})
    for name, mapping in (("strides", strides), ("base", base)):
        for k in mapping:
            if k not in AGU_COORDS:
                raise ValueError(f"{name}: unknown coordinate {k!r} (expected one of "
                                 f"{', '.join(AGU_COORDS)})")
    pad = L - n
    full_counts = [1] * pad + counts
    desc = {"count": full_counts}
    empty = any(c == 0 for c in counts)
    for c in AGU_COORDS:
        st = [int(s) for s in strides.get(c, [0] * n)]
        if len(st) != n:
            raise ValueError(f"stride {c}: expected {n} values (one per count), got {len(st)}")
        st = [0] * pad + st
        jumps = []
        for lvl in range(L):
            if full_counts[lvl] <= 1:
                jumps.append(0)
                continue
            j = st[lvl] - sum(max(full_counts[k] - 1, 0) * st[k] for k in range(lvl + 1, L))
            if not _signed_fits(j, _jump_bits(c)):
                raise ValueError(f"jump_{c}[{lvl}] = {j} does not fit a signed "
                                 f"{_jump_bits(c)}-bit field")
            jumps.append(j)
        desc[f"jump_{c}"] = jumps
        b = int(base.get(c, 0))
        bits = _COORD_BITS[c]
        lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if _COORD_SIGNED[c]
                  else (0, (1 << bits) - 1))
        if c == "addr" and pad_check:
            lo = -hi              # padding walks may start before address 0: wrap the base
        if not lo <= b <= hi:
            raise ValueError(f"base_{c} = {b} is out of range {lo}..{hi}")
        desc[f"base_{c}"] = b % (1 << bits) if c == "addr" else b
        if empty or (c == "addr" and pad_check):
            continue
        # Extremes of the coordinate over the whole nest.
        cmin = b + sum(min(0, (full_counts[k] - 1) * st[k]) for k in range(L))
        cmax = b + sum(max(0, (full_counts[k] - 1) * st[k]) for k in range(L))
        if cmin < lo or cmax > hi:
            raise ValueError(f"coordinate {c} spans {cmin}..{cmax}, outside its register "
                             f"range {lo}..{hi}")
    for name, v in (("H", H), ("W", W)):
        if not 0 <= int(v) < (1 << 16):
            raise ValueError(f"{name} = {v} is out of range 0..65535")
    desc["H"] = int(H)
    desc["W"] = int(W)
    desc["pad_check"] = int(bool(pad_check))
    return desc


def agu_steps(desc: dict) -> list[tuple[int, int, int, int]]:
    """Reference step sequence of an AGU descriptor (as the hardware computes it).

    ``desc`` is a dict with the field names of :func:`~hw.layouts.agu_layout` (e.g. from
    :func:`agu_desc`; missing jumps/bases/H/W/pad_check default to 0). Returns a list of
    ``(addr, tag, inb, last)``; coordinates wrap like the hardware registers (``addr`` mod
    ``2**ELEM_ADDR_BITS``, ``tag`` mod ``2**TAG_BITS``, ``y``/``x`` signed 16-bit). Empty
    when any count is 0. Raises ``ValueError`` when ``count`` has not AGU_LEVELS entries.
    """
    L = AGU_LEVELS
    counts = [int(c) for c in desc["count"]]
    if len(counts) != L:
        raise ValueError(f"count: expected {L} levels, got {len(counts)}")
    if any(c == 0 for c in counts):
        return []
    jumps = {c: [int(j) for j in desc.get(f"jump_{c}", [0] * L)] for c in AGU_COORDS}
    cur = {c: _wrap(int(desc.get(f"base_{c}", 0)), _COORD_BITS[c], _COORD_SIGNED[c])
           for c in AGU_COORDS}
    H, W = int(desc.get("H", 0)), int(desc.get("W", 0))
    pad_check = bool(desc.get("pad_check", 0))
    rem = [c - 1 for c in counts]
    out = []
    while True:
        inb = (not pad_check) or (0 <= cur["y"] < H and 0 <= cur["x"] < W)
        last = all(r == 0 for r in rem)
        out.append((cur["addr"], cur["tag"], int(inb), int(last)))
        if last:
            return out
        lvl = max(i for i in range(L) if rem[i] != 0)
        rem[lvl] -= 1
        for k in range(lvl + 1, L):
            rem[k] = counts[k] - 1
        for c in AGU_COORDS:
            cur[c] = _wrap(cur[c] + jumps[c][lvl], _COORD_BITS[c], _COORD_SIGNED[c])


# ---------------------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------------------

class AGU(wiring.Component):
    """Loop-nest address generator (descriptor: :func:`~hw.layouts.agu_layout`).

    Ports
    -----
    desc : In(agu_layout())
        Latched in the cycle ``start`` is high while idle; may change afterwards.
    start : In(1)
        Starts a walk when idle (``busy`` low); ignored while busy.
    busy : Out(1)
        High from the cycle after ``start`` until the cycle after the ``last`` step has been
        accepted on ``o``. A descriptor with a count of 0 emits no steps and ``busy`` never
        rises (the walk is over immediately; a new ``start`` is accepted next cycle).
    o : Out(stream.Signature(agu_step_layout()))
        Steps ``{addr (ELEM_ADDR_BITS), tag (TAG_BITS), inb, last}`` in loop order, as
        :func:`agu_steps`.

    Timing
    ------
    The first step is valid 2 cycles after ``start``; then one step per cycle while
    ``o.ready`` is high. ``o.valid`` and ``o.payload`` are registers (no combinational path
    from ``o.ready``). A new ``start`` is accepted in the cycle ``busy`` is low, so walks can
    run back to back with a 2-cycle gap.

    Hardware: one down-counter per level, a priority select of the innermost level that has
    not wrapped, and one adder per coordinate (no multipliers).

    Parameters
    ----------
    pad_check : bool, keyword-only
        Build the ``y``/``x`` coordinates and the in-bounds check (default). With ``False``
        they are left out (Yosys, ECP5: 2,121 -> 1,506 LUT4 + 2 per CCU2C, 29%): the
        descriptor's ``jump_y``, ``jump_x``, ``base_y``, ``base_x``, ``H``, ``W`` and
        ``pad_check`` are ignored and every step has ``inb = 1``. The pass engine builds its
        filter and psum AGUs this way; only the ifmap walk pads.
    """

    def __init__(self, *, pad_check: bool = True):
        self._pad_check = bool(pad_check)
        super().__init__({
            "desc": In(agu_layout()),
            "start": In(1),
            "busy": Out(1),
            "o": Out(stream.Signature(agu_step_layout())),
        })

    @property
    def pad_check(self) -> bool:
        return self._pad_check

    def elaborate(self, platform):
        m = Module()
        L = AGU_LEVELS
        coords = AGU_COORDS if self._pad_check else ("addr", "tag")
        d = Signal(agu_layout())                       # latched descriptor
        rem = [Signal(COUNT_BITS, name=f"rem{lvl}") for lvl in range(L)]
        # count - 1 per level, latched once: it loads ``rem`` at the start and reloads it
        # when an outer level advances (one subtractor per level instead of two).
        count_m1 = [Signal(COUNT_BITS, name=f"count_m1_{lvl}") for lvl in range(L)]
        cur = {c: Signal(Shape(_COORD_BITS[c], _COORD_SIGNED[c]), name=f"cur_{c}")
               for c in coords}
        pending = Signal()                             # ``cur``/``rem`` hold a step to emit

        m.d.comb += self.busy.eq(pending | self.o.valid)

        with m.If(self.start & ~self.busy):
            m.d.sync += d.eq(self.desc)
            nonzero = 1
            for lvl in range(L):
                first_m1 = self.desc.count[lvl] - 1
                m.d.sync += [rem[lvl].eq(first_m1), count_m1[lvl].eq(first_m1)]
                nonzero = nonzero & (self.desc.count[lvl] != 0)
            m.d.sync += pending.eq(nonzero)
            for c in coords:
                m.d.sync += cur[c].eq(getattr(self.desc, f"base_{c}"))

        # Step emission: the output register loads when empty or being drained.
        at_end = [Signal(name=f"at_end{lvl}") for lvl in range(L)]
        for lvl in range(L):
            m.d.comb += at_end[lvl].eq(rem[lvl] == 0)
        is_last = Signal()
        m.d.comb += is_last.eq(Cat(*at_end).all())
        inb = Signal()
        if self._pad_check:
            y, x = cur["y"], cur["x"]
            m.d.comb += inb.eq(~d.pad_check | ((y >= 0) & (y.as_unsigned() < d.H)
                                               & (x >= 0) & (x.as_unsigned() < d.W)))
        else:
            m.d.comb += inb.eq(1)
        load = Signal()
        m.d.comb += load.eq(pending & (~self.o.valid | self.o.ready))

        with m.If(load):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.addr.eq(cur["addr"]),
                self.o.payload.tag.eq(cur["tag"]),
                self.o.payload.inb.eq(inb),
                self.o.payload.last.eq(is_last),
            ]
            with m.If(is_last):
                m.d.sync += pending.eq(0)
            # Advance: the innermost level that has not reached its end increments, the
            # levels inside it reload, and every coordinate adds that level's jump.
            for lvl in reversed(range(L)):
                with m.Elif(~at_end[lvl]):
                    m.d.sync += rem[lvl].eq(rem[lvl] - 1)
                    for k in range(lvl + 1, L):
                        m.d.sync += rem[k].eq(count_m1[k])
                    for c in coords:
                        m.d.sync += cur[c].eq(cur[c] + getattr(d, f"jump_{c}")[lvl])
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def _check_elem(elem_bits, data_shape, addr_width):
    if elem_bits not in (16, 32, 64):
        raise ValueError(f"elem_bits must be 16, 32 or 64, got {elem_bits}")
    shape = Shape.cast(data_shape)
    if not shape.signed:
        raise ValueError(f"data_shape must be signed, got {shape!r}")
    if addr_width < 1:
        raise ValueError(f"addr_width must be >= 1, got {addr_width}")
    return shape


def element_out_layout(data_shape) -> data.StructLayout:
    """Payload of :class:`ElementReader` ``o``: ``data`` (``data_shape``), ``tag``
    (TAG_BITS) and ``last``."""
    return data.StructLayout({"data": data_shape, "tag": unsigned(TAG_BITS), "last": 1})


class ElementReader(wiring.Component):
    """Reads one GLB element per AGU step.

    Parameters
    ----------
    elem_bits : int
        Element size in the GLB: 16, 32 or 64 (:func:`~hw.layouts.lanes` per 64-bit word).
    data_shape : signed Shape
        Shape of ``o.payload.data`` (e.g. ``signed(data_width)``); the element is read as a
        signed ``elem_bits`` value and sign-extended or truncated to it.
    addr_width : int
        Width of the GLB word address.

    Ports
    -----
    i : In(stream.Signature(agu_step_layout()))
        Steps. For ``inb=1``: word ``addr // lanes`` (truncated to ``addr_width`` bits; a
        word address beyond the GLB is the GLB's error), lane ``addr % lanes``. For
        ``inb=0`` nothing is read and the data is 0.
    glb : Out(glb_read_signature(addr_width))
        GLB read port (``req`` word address, ``resp`` 64-bit word, in order).
    o : Out(stream.Signature(element_out_layout(data_shape)))
        ``{data, tag, last}`` in step order (registered).
    busy : Out(1)
        Some accepted step has not left ``o`` yet.

    Timing
    ------
    With a GLB that answers 1 cycle after the request, the element of the step accepted in
    cycle ``t`` is valid on ``o`` in cycle ``t + 2``; one element per cycle is sustained.
    In-flight steps (tag, lane, inb, last) wait in a 4-entry FIFO, so any backpressure on
    ``o`` or stall of ``glb.resp``/``glb.req`` loses and duplicates nothing.
    """

    def __init__(self, elem_bits: int, data_shape, addr_width: int):
        self._shape = _check_elem(elem_bits, data_shape, addr_width)
        self._elem_bits = elem_bits
        self._aw = addr_width
        super().__init__({
            "i": In(stream.Signature(agu_step_layout())),
            "glb": Out(glb_read_signature(addr_width)),
            "o": Out(stream.Signature(element_out_layout(self._shape))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        eb = self._elem_bits
        nl = lanes(eb)
        lb = (nl - 1).bit_length()
        meta_layout = data.StructLayout({"tag": unsigned(TAG_BITS), "lane": unsigned(max(lb, 1)),
                                         "inb": 1, "last": 1})
        m.submodules.meta = meta = SyncFIFO(width=meta_layout.size, depth=4)

        # Request side: a step enters when its metadata fits and, if it reads, the GLB
        # accepts the request in the same cycle.
        step = self.i.payload
        m.d.comb += [
            self.glb.req.valid.eq(self.i.valid & meta.w_rdy & step.inb),
            self.glb.req.payload.eq(step.addr[lb:]),
            self.i.ready.eq(meta.w_rdy & (~step.inb | self.glb.req.ready)),
            meta.w_en.eq(self.i.valid & self.i.ready),
        ]
        w_meta = data.View(meta_layout, meta.w_data)
        m.d.comb += [w_meta.tag.eq(step.tag), w_meta.inb.eq(step.inb),
                     w_meta.last.eq(step.last)]
        if lb:
            m.d.comb += w_meta.lane.eq(step.addr[:lb])

        # Response side: pop the oldest step when its word (if any) is there and the output
        # register is free or being drained.
        head = data.View(meta_layout, meta.r_data)
        load = Signal()
        pop = Signal()
        m.d.comb += [
            load.eq(~self.o.valid | self.o.ready),
            self.glb.resp.ready.eq(meta.r_rdy & head.inb & load),
            pop.eq(meta.r_rdy & load & (~head.inb | self.glb.resp.valid)),
            meta.r_en.eq(pop),
        ]
        word = self.glb.resp.payload
        elem = Signal(eb)
        if lb:
            m.d.comb += elem.eq(word.word_select(head.lane[:lb], eb))
        else:
            m.d.comb += elem.eq(word)
        value = Signal(self._shape)
        with m.If(head.inb):
            m.d.comb += value.eq(elem.as_signed())

        with m.If(pop):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.data.eq(value),
                self.o.payload.tag.eq(head.tag),
                self.o.payload.last.eq(head.last),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += self.busy.eq(meta.r_rdy | self.o.valid)
        return m


class ElementWriter(wiring.Component):
    """Writes one GLB element per AGU step: a stream join of steps and data.

    Parameters
    ----------
    elem_bits : int
        Element size in the GLB: 16, 32 or 64.
    data_shape : signed Shape
        Shape of the data stream; each value is written as ``elem_bits`` two's complement
        (sign-extended or truncated).
    addr_width : int
        Width of the GLB word address.

    Ports
    -----
    addr_i : In(stream.Signature(agu_step_layout()))
        Steps; one is consumed together with one ``data_i`` value.
    data_i : In(stream.Signature(data_shape))
        Values, in step order. A value paired with an ``inb=0`` step is dropped.
    glb : Out(stream.Signature(glb_write_layout(addr_width)))
        Registered writes ``{addr = step.addr // lanes (truncated to addr_width), data with the
        element at bits [lane*elem_bits +: elem_bits] (other bits 0), mask = the
        elem_bits // GRANULE_BITS granule bits of that lane}``.
    last_written : Out(1)
        High for one cycle when the write of the ``last`` step is accepted by the GLB (the
        element is in the SRAM from the next cycle), or when a ``last`` step with ``inb=0``
        retires (after every earlier write has been accepted).

    Timing
    ------
    A step/value pair joined in cycle ``t`` is offered on ``glb`` in cycle ``t + 1``; one
    write per cycle is sustained. No combinational path from ``glb.ready`` to ``glb.valid``.
    """

    def __init__(self, elem_bits: int, data_shape, addr_width: int):
        self._shape = _check_elem(elem_bits, data_shape, addr_width)
        self._elem_bits = elem_bits
        self._aw = addr_width
        super().__init__({
            "addr_i": In(stream.Signature(agu_step_layout())),
            "data_i": In(stream.Signature(self._shape)),
            "glb": Out(stream.Signature(glb_write_layout(addr_width))),
            "last_written": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        eb = self._elem_bits
        nl = lanes(eb)
        lb = (nl - 1).bit_length()
        gpe = eb // GRANULE_BITS                       # granules per element
        assert nl * gpe == GLB_MASK_BITS and GLB_WORD_BITS == 64

        ent_valid = Signal()        # the register holds a step (a write when ent_inb)
        ent_inb = Signal()
        ent_last = Signal()
        retire = Signal()
        take = Signal()
        m.d.comb += [
            self.glb.valid.eq(ent_valid & ent_inb),
            retire.eq(ent_valid & (~ent_inb | self.glb.ready)),
            take.eq(self.addr_i.valid & self.data_i.valid & (~ent_valid | retire)),
            self.addr_i.ready.eq(self.data_i.valid & (~ent_valid | retire)),
            self.data_i.ready.eq(self.addr_i.valid & (~ent_valid | retire)),
            self.last_written.eq(retire & ent_last),
        ]

        step = self.addr_i.payload
        elem = Signal(eb)
        m.d.comb += elem.eq(self.data_i.payload.as_signed())   # sign-extend / truncate
        lane = step.addr[:lb] if lb else 0
        out = self.glb.payload
        with m.If(take):
            m.d.sync += [ent_valid.eq(1), ent_inb.eq(step.inb), ent_last.eq(step.last),
                         out.addr.eq(step.addr[lb:])]
            if lb:
                m.d.sync += [out.data.eq(0), out.data.word_select(lane, eb).eq(elem),
                             out.mask.eq(0),
                             out.mask.word_select(lane, gpe).eq((1 << gpe) - 1)]
            else:
                m.d.sync += [out.data.eq(elem), out.mask.eq((1 << gpe) - 1)]
        with m.Elif(retire):
            m.d.sync += ent_valid.eq(0)
        return m
