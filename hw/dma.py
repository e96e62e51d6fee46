"""DMA engines between DRAM and the global buffer: LOAD (DRAM -> GLB) and STORE (GLB -> DRAM).

Eyeriss (Chen et al., IEEE JSSC 52(1), 2017, section IV-B and Fig. 4) keeps ifmaps and
ofmaps run-length coded in DRAM to save off-chip bandwidth: the RLC decoder sits on the
DRAM -> GLB path and "ReLU -> RLC encoder" on the ofmap path (DESIGN.md section 5). Here:

* :class:`LoadEngine` copies raw words, or decodes RLC planes (DESIGN.md section 3) into
  activation elements of the GLB;
* :class:`StoreEngine` reads psums from the GLB, adds the bias, requantises (DESIGN.md
  section 2), applies ReLU and writes the ofmap planes to DRAM, RLC-coded or raw.

Both engines are started by the controller with a descriptor from :mod:`hw.layouts`
(``load_desc_layout`` / ``store_desc_layout``) and report ``busy`` and a sticky ``error``.

Element addressing (:func:`hw.layouts.lanes`): element ``e`` of ``bits`` bits lives in the
64-bit word ``e // lanes(bits)`` at lane ``e % lanes(bits)``, lane 0 in the least
significant bits. GLB element addresses are :data:`hw.layouts.ELEM_ADDR_BITS` wide; word
addresses on the GLB ports are truncated to ``glb_addr_width`` bits, so the GLB's
out-of-range check only sees addresses that fit that width.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.glb import GLB_MASK_BITS, glb_read_signature, glb_write_layout
from hw.layouts import (DRAM_ADDR_BITS, ELEM_ADDR_BITS, GLB_WORD_BITS, GRANULE_BITS,
                        RLC_LAST_BIT, RLC_LEVEL_BITS, LoadMode, act_bits, dram_read_signature,
                        dram_write_layout, lanes, load_desc_layout, psum_bits,
                        store_desc_layout)
from hw.postproc import ReLU, Requantize
from hw.rlc import RLCDecoder, RLCEncoder

__all__ = ["LoadEngine", "StoreEngine"]


def _log2(n: int) -> int:
    assert n & (n - 1) == 0
    return n.bit_length() - 1


def _sext(value, width: int):
    """``value`` (a signed or unsigned Value) sign-extended / truncated to ``width`` bits,
    as an unsigned Value (the raw bits of a lane)."""
    if len(value) >= width:
        return value.as_unsigned()[:width]
    return Cat(value, value[-1].replicate(width - len(value)))


class LoadEngine(wiring.Component):
    """DRAM -> GLB copy engine with an RLC decoder (Eyeriss JSSC section IV-B).

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``data_width`` (act elements are :func:`~hw.layouts.act_bits` wide) and ``rlc``
        (the RLC decoder is built when ``rlc`` and ``data_width <= 16``).
    glb_addr_width : int
        Bits of the GLB word address on ``glb_wr``.
    raw_outstanding : int
        Most DRAM reads in flight in RAW mode (default 16: hides up to ~15 cycles of DRAM
        latency at one word per cycle).
    rlc_outstanding : int
        Most DRAM reads in flight in RLC mode (default 8). Bounds the over-read past the
        last word of each plane (those responses are discarded).

    Ports
    -----
    desc : In(load_desc_layout())
        Descriptor, latched on ``start`` while idle (see :func:`hw.layouts.load_desc_layout`).
    start : In(1)
        Starts a command when idle (ignored while ``busy``); clears ``error``.
    busy : Out(1)
        High from the cycle after ``start`` until the last GLB write was accepted and every
        DRAM response of the command was received.
    error, rlc_error : Out(1)
        Sticky until the next ``start``: the command was malformed and stopped (both are the
        same signal; ``rlc_error`` names the cause for the controller's ``ErrorCode``).
    dram : Out(dram_read_signature())
        ``req``: DRAM word addresses (32 bits); ``resp``: 64-bit words in request order.
    glb_wr : Out(stream.Signature(glb_write_layout(glb_addr_width)))
        GLB writes ``{addr, data, mask}``.

    Modes
    -----
    RAW
        ``n_words`` words from DRAM ``dram_addr`` onward to GLB words ``glb_word`` onward,
        full mask. Up to ``raw_outstanding`` reads in flight; DRAM responses go straight to
        the GLB write register. One word per cycle when the DRAM and the GLB allow:
        measured ``n + latency + 4`` cycles from ``start`` to ``busy`` low for ``n`` words
        and a fixed DRAM latency of ``latency`` cycles beyond the minimum one.
    RLC
        For plane ``k`` of ``n_planes``: DRAM reads from ``dram_addr + k * dram_pitch``
        onward feed an :class:`~hw.rlc.RLCDecoder` with count ``plane_count``; value ``i``
        is written to GLB element ``glb_elem + k * glb_pitch + i`` (one masked element write
        per value, the value replicated in every lane of ``data``).

        Responses enter an ``rlc_outstanding``-word buffer in front of the decoder; reads
        in flight plus buffered words never exceed ``rlc_outstanding``. A plane's reads stop
        when its last word (bit 63) enters the buffer, and never exceed ``plane_count``
        words; the reads already in flight then (at most ``rlc_outstanding - 1`` words
        past the last word; these may lie beyond the plane's slot) are discarded on
        arrival, and the next plane's reads start at once, so the DRAM latency is hidden
        across planes. Throughput: one value per cycle while the DRAM keeps up, plus two
        idle cycles per plane (the decoder takes a new count only when idle); measured 617
        cycles for 4 dense planes of 150 values at a DRAM latency of 4.
        ``plane_count == 0`` or ``n_planes == 0``: nothing is read or written.

    Errors
    ------
    Malformed RLC (decoder error: the last word ends before ``plane_count`` values, or
    ``plane_count`` is reached in a word without bit 63): the values decoded so far are
    written, no further plane is started, every outstanding DRAM response is drained, the
    decoder is left idle, ``error`` is set and ``busy`` falls. An RLC command on an engine
    built without a decoder sets ``error`` at once (``busy`` never rises). The engine never
    hangs as long as the DRAM answers every request.
    """

    def __init__(self, config: AcceleratorConfig, glb_addr_width: int, *,
                 raw_outstanding: int = 16, rlc_outstanding: int = 8):
        if raw_outstanding < 1 or rlc_outstanding < 1:
            raise ValueError("raw_outstanding and rlc_outstanding must be >= 1")
        self.config = config
        self.glb_addr_width = glb_addr_width
        self.raw_outstanding = raw_outstanding
        self.rlc_outstanding = rlc_outstanding
        self.elem_bits = act_bits(config.data_width)
        self.has_rlc = config.rlc and config.data_width <= RLC_LEVEL_BITS
        super().__init__({
            "desc": In(load_desc_layout()),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
            "rlc_error": Out(1),
            "dram": Out(dram_read_signature()),
            "glb_wr": Out(stream.Signature(glb_write_layout(glb_addr_width))),
        })

    def elaborate(self, platform):
        m = Module()
        eb = self.elem_bits
        n_lanes = lanes(eb)
        lane_bits = _log2(n_lanes)
        gran = eb // GRANULE_BITS                     # mask bits per element
        max_out = max(self.raw_outstanding, self.rlc_outstanding)

        d = Signal(load_desc_layout())
        req, resp, wr = self.dram.req, self.dram.resp, self.glb_wr

        # -- DRAM request side -----------------------------------------------------------
        iss_active = Signal()
        iss_addr = Signal(DRAM_ADDR_BITS)
        iss_base = Signal(DRAM_ADDR_BITS)
        iss_left = Signal(DRAM_ADDR_BITS)           # reads still allowed for this plane
        iss_planes = Signal(16)                     # planes after the one being issued
        inflight = Signal(range(max_out + 1))       # requested, response not yet taken
        used = Signal(range(2 * max_out + 1))       # inflight + words held in the buffer
        limit = Signal(range(max_out + 1))
        issuing = Signal()                          # the FSM allows new reads

        req_fire = Signal()
        resp_fire = Signal()
        m.d.comb += [
            req.payload.eq(iss_addr),
            req.valid.eq(issuing & iss_active & (iss_left != 0) & (used < limit)),
            req_fire.eq(req.valid & req.ready),
            resp_fire.eq(resp.valid & resp.ready),
        ]
        m.d.sync += inflight.eq(inflight + req_fire - resp_fire)
        with m.If(req_fire):
            m.d.sync += [iss_addr.eq(iss_addr + 1), iss_left.eq(iss_left - 1)]

        # -- GLB write stage (output register) -------------------------------------------
        wr_take = Signal()                          # the stage takes a new write this cycle
        wr_can = Signal()
        m.d.comb += wr_can.eq(~wr.valid | wr.ready)
        with m.If(wr.ready):
            m.d.sync += wr.valid.eq(0)
        with m.If(wr_take):
            m.d.sync += wr.valid.eq(1)

        raw_word = Signal(ELEM_ADDR_BITS)           # RAW: next GLB word address
        raw_left = Signal(DRAM_ADDR_BITS)           # RAW: responses still expected
        m.d.comb += used.eq(inflight)

        m.d.comb += [self.busy.eq(0), self.rlc_error.eq(self.error)]

        if self.has_rlc:
            # Word buffer in front of the decoder. Words past a plane's last word are
            # dropped on the way in (``discard``), so the buffer holds the current plane's
            # words followed by the next plane's, and the next plane's reads can be issued
            # as soon as the last word arrives. ``used`` counts buffer slots as well, so
            # the buffer never overflows and the DRAM response is never back-pressured
            # while a plane is being decoded.
            buf = m.submodules.word_buffer = SyncFIFO(width=GLB_WORD_BITS,
                                                      depth=self.rlc_outstanding)
            dec = m.submodules.decoder = RLCDecoder(self.config.data_width)
            feeding = Signal()                      # responses go to the buffer
            draining = Signal()                     # responses and buffer are dropped
            discard = Signal(range(max_out + 1))    # responses to drop (past a last word)
            given = Signal()                        # a plane's count went to the decoder
            planes_left = Signal(16)                # planes whose count is still to give
            wr_elem = Signal(ELEM_ADDR_BITS)        # next GLB element address
            wr_base = Signal(ELEM_ADDR_BITS)        # element address of the plane
            value = Signal(eb)
            lane = Signal(max(1, lane_bits))

            with m.If(d.mode == LoadMode.RLC):
                m.d.comb += used.eq(inflight + buf.level)
            m.d.comb += [
                buf.w_data.eq(resp.payload),
                buf.w_en.eq(feeding & (discard == 0) & resp.valid),
                dec.i.payload.eq(buf.r_data),
                dec.i.valid.eq(buf.r_rdy & ~draining),
                buf.r_en.eq(dec.i.ready | draining),
                dec.count.payload.eq(d.plane_count),
                dec.o.ready.eq(wr_can),
                value.eq(_sext(dec.o.payload.data, eb)),
                lane.eq(wr_elem[:lane_bits] if lane_bits else 0),
            ]

            # A plane's last word enters the buffer: every read still in flight belongs
            # to that plane and is dropped; the next plane's reads start at once.
            last_word = Signal()
            m.d.comb += last_word.eq(buf.w_en & buf.w_rdy & resp.payload[RLC_LAST_BIT])
            with m.If((discard != 0) & resp_fire):
                m.d.sync += discard.eq(discard - 1)
            with m.If(last_word):
                m.d.sync += discard.eq(inflight + req_fire - 1)
                with m.If(iss_planes != 0):
                    m.d.sync += [
                        iss_planes.eq(iss_planes - 1),
                        iss_base.eq(iss_base + d.dram_pitch),
                        iss_addr.eq(iss_base + d.dram_pitch),
                        iss_left.eq(d.plane_count),
                    ]
                with m.Else():
                    m.d.sync += iss_active.eq(0)

            # Decoded value -> masked element write (data replicated in every lane).
            with m.If(dec.o.valid & dec.o.ready):
                m.d.sync += [
                    wr.payload.addr.eq(wr_elem[lane_bits:]),
                    wr.payload.data.eq(value.replicate(n_lanes)),
                    wr.payload.mask.eq(((1 << gran) - 1) << (lane * gran)),
                ]
                with m.If(dec.o.payload.last):
                    m.d.sync += [wr_base.eq(wr_base + d.glb_pitch),
                                 wr_elem.eq(wr_base + d.glb_pitch)]
                with m.Else():
                    m.d.sync += wr_elem.eq(wr_elem + 1)

        # -- control -----------------------------------------------------------------------
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        d.eq(self.desc),
                        self.error.eq(0),
                        iss_addr.eq(self.desc.dram_addr),
                        iss_base.eq(self.desc.dram_addr),
                        raw_word.eq(self.desc.glb_word),
                        raw_left.eq(self.desc.n_words),
                    ]
                    with m.If(self.desc.mode == LoadMode.RAW):
                        m.d.sync += [iss_active.eq(1), iss_left.eq(self.desc.n_words),
                                     limit.eq(self.raw_outstanding)]
                        m.next = "RAW"
                    if self.has_rlc:
                        with m.Else():
                            empty = (self.desc.n_planes == 0) | (self.desc.plane_count == 0)
                            m.d.sync += [
                                iss_active.eq(~empty),
                                iss_left.eq(self.desc.plane_count),
                                iss_planes.eq(self.desc.n_planes - 1),
                                limit.eq(self.rlc_outstanding),
                                discard.eq(0),
                                given.eq(0),
                                planes_left.eq(Mux(empty, 0, self.desc.n_planes)),
                                wr_elem.eq(self.desc.glb_elem),
                                wr_base.eq(self.desc.glb_elem),
                            ]
                            m.next = "DECODE"
                    else:
                        with m.Else():
                            # RLC command on an engine without a decoder: rejected.
                            m.d.sync += self.error.eq(1)

            with m.State("RAW"):
                m.d.comb += [
                    self.busy.eq(1),
                    issuing.eq(1),
                    resp.ready.eq(wr_can),
                    wr_take.eq(resp.valid),
                ]
                with m.If(resp_fire):
                    m.d.sync += [
                        wr.payload.addr.eq(raw_word),
                        wr.payload.data.eq(resp.payload),
                        wr.payload.mask.eq((1 << GLB_MASK_BITS) - 1),
                        raw_word.eq(raw_word + 1),
                        raw_left.eq(raw_left - 1),
                    ]
                with m.If((raw_left == 0) & ~wr.valid):
                    m.d.sync += iss_active.eq(0)
                    m.next = "IDLE"

            if self.has_rlc:
                with m.State("DECODE"):
                    m.d.comb += [
                        self.busy.eq(1), issuing.eq(1), feeding.eq(1),
                        resp.ready.eq((discard != 0) | buf.w_rdy),
                        wr_take.eq(dec.o.valid),
                    ]
                    with m.If(dec.count.ready):         # the decoder is idle
                        with m.If(given & dec.error):
                            m.d.sync += [self.error.eq(1), iss_active.eq(0)]
                            m.next = "DRAIN"
                        with m.Elif(planes_left == 0):
                            m.next = "DRAIN"
                        with m.Else():
                            m.d.comb += dec.count.valid.eq(1)
                            m.d.sync += [planes_left.eq(planes_left - 1), given.eq(1)]

                with m.State("DRAIN"):
                    # No more reads: drop what is in flight or buffered (only words past
                    # the last plane, or any word after an error), let the last value be
                    # written.
                    m.d.comb += [
                        self.busy.eq(1), draining.eq(1),
                        resp.ready.eq(1),
                        wr_take.eq(dec.o.valid),
                    ]
                    with m.If((inflight == 0) & ~buf.r_rdy & ~dec.o.valid & ~wr.valid):
                        m.d.sync += [iss_active.eq(0), discard.eq(0)]
                        m.next = "IDLE"

        return m


class StoreEngine(wiring.Component):
    """GLB psums -> post-processing -> DRAM ofmap engine (Eyeriss JSSC section IV-B,
    DESIGN.md sections 2, 3 and 5: "ReLU -> RLC encoder").

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``psum_width`` (psum elements are :func:`~hw.layouts.psum_bits` wide),
        ``data_width`` (ofmap values; raw act elements are :func:`~hw.layouts.act_bits`
        wide), ``rlc`` (the encoder is built when ``rlc`` and ``data_width <= 16``),
        ``relu`` (the ReLU unit is built when ``relu``) and ``psum_lanes`` (``L``: the GLB
        psum layout the plane walk follows; the lane counter and row base are built only
        when ``L > 1``).
    glb_addr_width : int
        Bits of the GLB word address on ``glb_rd``.
    outstanding : int
        Most GLB reads in flight (default 4; 2 sustain one read per cycle on the GLB).

    Ports
    -----
    desc : In(store_desc_layout())
        Descriptor, latched on ``start`` while idle (see :func:`hw.layouts.store_desc_layout`).
    start : In(1)
        Starts a command when idle (ignored while ``busy``); clears ``error``.
    busy : Out(1)
        High from the cycle after ``start`` until the last DRAM write was accepted.
    error : Out(1)
        Sticky until the next ``start``: the descriptor asked for a unit that was not built
        (``rlc`` without an encoder, ``relu`` without a ReLU unit), or has
        ``plane_count > 0`` with ``cols == 0`` or ``fold_rows == 0``; nothing is done and
        ``busy`` never rises.
    glb_rd : Out(glb_read_signature(glb_addr_width))
        One read per psum element (and one per plane for the bias word), in order.
    dram_wr : Out(stream.Signature(dram_write_layout()))
        ``{addr, data}`` DRAM word writes.

    Datapath
    --------
    Per plane ``k``: the bias word ``bias_word + k`` (when ``bias_en``; its low
    ``psum_width`` bits), then for each ``i < plane_count`` (``y = i // cols``,
    ``x = i % cols``, ``fold = y // fold_rows``, ``j = y % fold_rows``, ``L = psum_lanes``)
    psum element ``glb_elem + k * glb_pitch + fold * fold_pitch + (j // L) * (L * cols) +
    x * L + j % L`` (the ``[fold][j // L][f][j % L]`` layout; contiguous
    ``glb_elem + k * glb_pitch + i`` when ``L == 1`` and ``fold_pitch == fold_rows * cols``):
    ``acc = (psum + bias) mod 2**psum_width`` (signed) ->
    :class:`~hw.postproc.Requantize` (``output_shift``, must be < ``psum_width``) ->
    :class:`~hw.postproc.ReLU` (``relu``) -> :class:`~hw.rlc.RLCEncoder` (``rlc``; one
    stream per plane) or raw packing (``lanes(act_bits)`` values per word, lane 0 first, the
    last word of a plane zero-filled) -> DRAM words ``dram_addr + k * dram_pitch + j``.

    Throughput: one value per cycle plus one cycle per plane for the bias read, when the
    GLB and DRAM do not stall: measured ``n + 7`` cycles from ``start`` to ``busy`` low
    for ``n`` values in one plane (``n + 8`` with the bias), raw or RLC, 16- or 32-bit
    psums. Pipeline: GLB read (1 cycle), Requantize (1), ReLU (1), encoder/packer (1),
    DRAM write register (1). Each psum element is read with its own GLB read.
    ``plane_count == 0`` or ``n_planes == 0``: nothing is read or written.

    Address walk: counters and adders only (no multiplier), one element address per cycle
    whatever the layout (so the cycle counts above hold for ``L > 1`` too): a down-counter
    of the elements left in the row (``cols``), one of the rows left in the fold
    (``fold_rows``) and, when ``L > 1``, a lane counter (``j % L``). Within a row the
    address steps by ``L``. At a row end: the next fold starts at
    ``fold base + fold_pitch`` (fold base register) when the fold ends; with ``L == 1``
    the next row starts at the next element; with ``L > 1`` the next row of the same lane
    group starts at ``row base + 1`` (row base register = group base + lane), and after
    lane ``L - 1`` the next group starts at the next element (the group's last element
    is ``group base + L * cols - 1``).
    """

    def __init__(self, config: AcceleratorConfig, glb_addr_width: int, *, outstanding: int = 4):
        if outstanding < 1:
            raise ValueError(f"outstanding must be >= 1, got {outstanding}")
        self.config = config
        self.glb_addr_width = glb_addr_width
        self.outstanding = outstanding
        self.psum_elem_bits = psum_bits(config.psum_width)
        self.act_elem_bits = act_bits(config.data_width)
        self.has_rlc = config.rlc and config.data_width <= RLC_LEVEL_BITS
        self.has_relu = config.relu
        super().__init__({
            "desc": In(store_desc_layout()),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
            "glb_rd": Out(glb_read_signature(glb_addr_width)),
            "dram_wr": Out(stream.Signature(dram_write_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        pw, dw = cfg.psum_width, cfg.data_width
        pb, ab = self.psum_elem_bits, self.act_elem_bits
        p_lanes, a_lanes = lanes(pb), lanes(ab)
        p_lane_bits = _log2(p_lanes)

        d = Signal(store_desc_layout())
        rd, wr = self.glb_rd, self.dram_wr
        running = Signal()

        # -- GLB read requests ---------------------------------------------------------------
        tag_layout = data.StructLayout({"bias": 1, "lane": range(p_lanes), "last": 1})
        tags = m.submodules.tags = SyncFIFO(width=tag_layout.size, depth=self.outstanding)
        rq_active = Signal()
        rq_planes = Signal(16)                      # planes after the current one
        rq_base = Signal(ELEM_ADDR_BITS)
        rq_elem = Signal(ELEM_ADDR_BITS)
        rq_left = Signal(24)                        # elements of this plane still to read
        rq_bias = Signal()                          # bias word of this plane not read yet
        rq_bias_addr = Signal(ELEM_ADDR_BITS)
        # plane walk over the [fold][j // L][f][j % L] layout (see the class docstring)
        n_pl = cfg.psum_lanes                       # L
        rq_x = Signal(16)                           # elements left in this row
        rq_j = Signal(16)                           # rows left in this fold
        rq_fold = Signal(ELEM_ADDR_BITS)            # fold base
        if n_pl > 1:
            rq_lane = Signal(range(n_pl))           # j % L
            rq_row = Signal(ELEM_ADDR_BITS)         # row base = group base + lane
        tag_in = Signal(tag_layout)
        rq_fire = Signal()
        m.d.comb += [
            rd.req.valid.eq(rq_active & tags.w_rdy),
            rd.req.payload.eq(rq_elem[p_lane_bits:]),
            tag_in.bias.eq(rq_bias),
            tag_in.last.eq(rq_left == 1),
            rq_fire.eq(rd.req.valid & rd.req.ready),
            tags.w_data.eq(tag_in),
            tags.w_en.eq(rq_fire),
        ]
        if p_lane_bits:
            m.d.comb += tag_in.lane.eq(rq_elem[:p_lane_bits])
        with m.If(rq_bias):
            m.d.comb += rd.req.payload.eq(rq_bias_addr)
        with m.If(rq_fire):
            with m.If(rq_bias):
                m.d.sync += [rq_bias.eq(0), rq_bias_addr.eq(rq_bias_addr + 1)]
            with m.Elif(rq_left == 1):               # plane end
                next_plane = rq_base + d.glb_pitch
                m.d.sync += [
                    rq_planes.eq(rq_planes - 1),
                    rq_base.eq(next_plane),
                    rq_elem.eq(next_plane),
                    rq_fold.eq(next_plane),
                    rq_left.eq(d.plane_count),
                    rq_bias.eq(d.bias_en),
                    rq_x.eq(d.cols),
                    rq_j.eq(d.fold_rows),
                ]
                if n_pl > 1:
                    m.d.sync += [rq_row.eq(next_plane), rq_lane.eq(0)]
                with m.If(rq_planes == 0):
                    m.d.sync += rq_active.eq(0)
            with m.Else():
                m.d.sync += [rq_left.eq(rq_left - 1), rq_x.eq(rq_x - 1)]
                with m.If(rq_x == 1):                   # row end
                    m.d.sync += [rq_x.eq(d.cols), rq_j.eq(rq_j - 1)]
                    with m.If(rq_j == 1):               # fold end
                        next_fold = rq_fold + d.fold_pitch
                        m.d.sync += [rq_j.eq(d.fold_rows), rq_fold.eq(next_fold),
                                     rq_elem.eq(next_fold)]
                        if n_pl > 1:
                            m.d.sync += [rq_row.eq(next_fold), rq_lane.eq(0)]
                    if n_pl > 1:
                        with m.Elif(rq_lane == n_pl - 1):   # next lane group
                            m.d.sync += [rq_elem.eq(rq_elem + 1), rq_row.eq(rq_elem + 1),
                                         rq_lane.eq(0)]
                        with m.Else():                  # next row of the group
                            m.d.sync += [rq_elem.eq(rq_row + 1), rq_row.eq(rq_row + 1),
                                         rq_lane.eq(rq_lane + 1)]
                    else:
                        with m.Else():                  # next row
                            m.d.sync += rq_elem.eq(rq_elem + 1)
                with m.Else():
                    m.d.sync += rq_elem.eq(rq_elem + n_pl)

        # -- responses: bias register, psum + bias -> Requantize -------------------------------
        rq = m.submodules.requantize = Requantize(pw, dw)
        tag_out = Signal(tag_layout)
        bias = Signal(pw)
        psum = Signal(pb)
        m.d.comb += [
            tag_out.eq(tags.r_data),
            psum.eq(rd.resp.payload.word_select(tag_out.lane, pb) if p_lanes > 1
                    else rd.resp.payload),
            rq.output_shift.eq(d.output_shift),
            rq.i.payload.data.eq(psum[:pw] + bias),         # wraps to psum_width bits
            rq.i.payload.last.eq(tag_out.last),
            rq.i.valid.eq(rd.resp.valid & tags.r_rdy & ~tag_out.bias),
            rd.resp.ready.eq(tags.r_rdy & (tag_out.bias | rq.i.ready)),
            tags.r_en.eq(rd.resp.valid & rd.resp.ready),
        ]
        with m.If(rd.resp.valid & rd.resp.ready & tag_out.bias):
            m.d.sync += bias.eq(rd.resp.payload[:pw])

        # -- ReLU ---------------------------------------------------------------------------
        if self.has_relu:
            relu = m.submodules.relu = ReLU(dw)
            m.d.comb += relu.enable.eq(d.relu)
            wiring.connect(m, rq.o, relu.i)
            values = relu.o
        else:
            values = rq.o

        # -- word sources: RLC encoder or raw packer -----------------------------------------
        st_can = Signal()                           # the DRAM write stage can take a word
        m.d.comb += st_can.eq(~wr.valid | wr.ready)
        src_valid = Signal()
        src_word = Signal(GLB_WORD_BITS)
        src_end = Signal()                          # last word of a plane
        src_take = Signal()

        pk_valid = Signal()
        pk_word = Signal(GLB_WORD_BITS)
        pk_end = Signal()
        pk_acc = Signal(GLB_WORD_BITS)
        pk_lane = Signal(range(a_lanes))
        pk_take = Signal()
        pk_in_ready = Signal()
        m.d.comb += pk_in_ready.eq(~pk_valid | pk_take)
        v_bits = Signal(ab)
        m.d.comb += v_bits.eq(_sext(values.payload.data, ab))
        pk_next = Signal(GLB_WORD_BITS)
        with m.Switch(pk_lane):
            for l in range(a_lanes):
                with m.Case(l):
                    m.d.comb += pk_next.eq(pk_acc | (v_bits << (l * ab)))
        with m.If(pk_take):
            m.d.sync += pk_valid.eq(0)

        if self.has_rlc:
            enc = m.submodules.encoder = RLCEncoder(dw)
            m.d.comb += [
                enc.i.payload.data.eq(values.payload.data),
                enc.i.payload.last.eq(values.payload.last),
                enc.i.valid.eq(values.valid & d.rlc),
                enc.o.ready.eq(d.rlc & st_can),
            ]
            with m.If(d.rlc):
                m.d.comb += [
                    values.ready.eq(enc.i.ready),
                    src_valid.eq(enc.o.valid),
                    src_word.eq(enc.o.payload),
                    src_end.eq(enc.o.payload[RLC_LAST_BIT]),
                ]
        with m.If(~d.rlc):
            m.d.comb += [
                values.ready.eq(pk_in_ready),
                src_valid.eq(pk_valid),
                src_word.eq(pk_word),
                src_end.eq(pk_end),
                pk_take.eq(st_can),
            ]
            with m.If(values.valid & pk_in_ready):
                with m.If(values.payload.last | (pk_lane == a_lanes - 1)):
                    m.d.sync += [pk_valid.eq(1), pk_word.eq(pk_next),
                                 pk_end.eq(values.payload.last), pk_acc.eq(0), pk_lane.eq(0)]
                with m.Else():
                    m.d.sync += [pk_acc.eq(pk_next), pk_lane.eq(pk_lane + 1)]
        m.d.comb += src_take.eq(src_valid & st_can)

        # -- DRAM write stage ------------------------------------------------------------------
        wr_addr = Signal(DRAM_ADDR_BITS)
        wr_base = Signal(DRAM_ADDR_BITS)
        planes_left = Signal(16)                    # planes whose last word is not staged
        with m.If(wr.ready):
            m.d.sync += wr.valid.eq(0)
        with m.If(src_take):
            m.d.sync += [wr.valid.eq(1), wr.payload.addr.eq(wr_addr),
                         wr.payload.data.eq(src_word)]
            with m.If(src_end):
                m.d.sync += [wr_base.eq(wr_base + d.dram_pitch),
                             wr_addr.eq(wr_base + d.dram_pitch),
                             planes_left.eq(planes_left - 1)]
            with m.Else():
                m.d.sync += wr_addr.eq(wr_addr + 1)

        # -- control ---------------------------------------------------------------------------
        m.d.comb += self.busy.eq(running)
        unsupported = Const(0)
        if not self.has_rlc:
            unsupported = unsupported | self.desc.rlc
        if not self.has_relu:
            unsupported = unsupported | self.desc.relu
        # a plane walk without rows or folds would never end a row: rejected
        unsupported = unsupported | ((self.desc.plane_count != 0) &
                                     ((self.desc.cols == 0) | (self.desc.fold_rows == 0)))
        with m.If(~running & self.start):
            m.d.sync += [d.eq(self.desc), self.error.eq(unsupported)]
            with m.If(~unsupported):
                empty = (self.desc.n_planes == 0) | (self.desc.plane_count == 0)
                m.d.sync += [
                    running.eq(~empty),
                    rq_active.eq(~empty),
                    rq_planes.eq(self.desc.n_planes - 1),
                    rq_base.eq(self.desc.glb_elem),
                    rq_elem.eq(self.desc.glb_elem),
                    rq_fold.eq(self.desc.glb_elem),
                    rq_x.eq(self.desc.cols),
                    rq_j.eq(self.desc.fold_rows),
                    rq_left.eq(self.desc.plane_count),
                    rq_bias.eq(self.desc.bias_en),
                    rq_bias_addr.eq(self.desc.bias_word),
                    bias.eq(0),
                    wr_addr.eq(self.desc.dram_addr),
                    wr_base.eq(self.desc.dram_addr),
                    planes_left.eq(self.desc.n_planes),
                ]
                if n_pl > 1:
                    m.d.sync += [rq_row.eq(self.desc.glb_elem), rq_lane.eq(0)]
        with m.If(running & (planes_left == 0) & ~wr.valid):
            m.d.sync += running.eq(0)

        return m
