"""Row-stationary processing element (PE).

One PE computes ``p`` interleaved 1-D row convolutions of ``q`` interleaved channels: the
filter rows stay in the filter scratchpad ("spad"), ifmap rows stream through a sliding-window
ifmap spad and the ``p`` running partial sums live in the psum spad. This is the PE of the
row-stationary (RS) dataflow: Chen et al., "Eyeriss", IEEE JSSC 52(1), 2017, section IV and
Table II (the p/q interleaving inside a PE), and Sze et al., "Efficient Processing of Deep
Neural Networks", Proc. IEEE 2017, section V-B (Fig. 27 and Fig. 29).

Numerics follow DESIGN.md section 2 (the contract)::

    psum_out[f][pi] = (psum_in[f][pi] if psum_in_en else 0)
                      + sum_{qi, s} ((w[pi][qi][s] * x[qi][f*U + s]) >> product_shift)
                      (mod 2**psum_width, signed)

with ``>>`` an arithmetic (floor) shift of the full ``2*data_width``-bit product.
"""

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .layouts import act_bits

__all__ = ["PEConfig", "ProcessingElement", "U_BITS", "F_BITS", "N_ROWS_BITS",
           "filter_lane_bits", "filter_in_shape", "psum_spad_attrs", "psum_join"]

#: Bits of the stride field: ``U`` in 1..15.
U_BITS = 4
#: Bits of the outputs-per-row field: ``F`` in 1..1023 (AlexNet's widest row is 55, VGG's 224).
F_BITS = 10
#: Bits of the rows-per-run field: ``n_rows`` in 1..4095 (rows of several images may be
#: concatenated through one PE, JSSC section IV / survey Fig. 29, hence wider than ``F``).
N_ROWS_BITS = 12


def filter_lane_bits(config: AcceleratorConfig) -> int:
    """Bits of one lane of a filter-GIN transfer: the GLB element size of an activation
    (:func:`hw.layouts.act_bits`, 16 or 32)."""
    return act_bits(config.data_width)


def filter_in_shape(config: AcceleratorConfig) -> Shape:
    """Payload shape of the PE's ``filter_in`` and of the filter GIN: ``signed(data_width)``
    with one filter lane, else ``signed(64)``: a whole GLB word of ``filter_lanes`` lanes of
    :func:`filter_lane_bits` bits, lane ``i`` (least significant first) holding the value in
    its low ``data_width`` bits."""
    if config.filter_lanes == 1:
        return signed(config.data_width)
    return signed(config.filter_lanes * filter_lane_bits(config))


def psum_spad_attrs(config: AcceleratorConfig) -> dict:
    """Synthesis attributes of a PE's psum spad: ``ram_style = "block"`` (Yosys: map to
    block RAM, on the ECP5 one DP16KD) with ``config.psum_spad_bram``, else none (Yosys
    then picks distributed LUT RAM for the small spad)."""
    return {"ram_style": "block"} if config.psum_spad_bram else {}


class PEConfig(data.StructLayout):
    """Per-run configuration of a :class:`ProcessingElement` (latched on ``start``).

    Fields (widths in bits, derived from the :class:`~hw.config.AcceleratorConfig`):

    ``p``
        Filters interleaved in the PE, 1..``psum_spad_depth``
        (width of ``range(psum_spad_depth + 1)``).
    ``q``
        Channels interleaved in the PE, 1..``ifmap_spad_depth``
        (width of ``range(ifmap_spad_depth + 1)``).
    ``S``
        Filter row width, 1..``ifmap_spad_depth`` (same width as ``q``).
    ``U``
        Stride, 1..15 (:data:`U_BITS` = 4 bits).
    ``F``
        Outputs per row, 1..1023 (:data:`F_BITS` = 10 bits).
    ``n_rows``
        Ifmap rows processed with the same filters in this run, 1..4095
        (:data:`N_ROWS_BITS` = 12 bits).
    ``product_shift``
        Arithmetic right shift of each ``2*data_width``-bit product, 0..``2*data_width-1``.
    ``load_filter``
        1: read ``p*q*S`` weights from ``filter_in`` first; 0: reuse the spad contents
        of the previous run.
    ``psum_in_en``
        1: add the psums arriving on ``psum_in``; 0: start from zero (``psum_in`` unused).

    Constraints (guaranteed by the driver, assumed and not checked by the PE):
    ``p*q*S <= filter_spad_depth``, ``q*S <= ifmap_spad_depth``, ``p <= psum_spad_depth``,
    every field at least 1 where a range starting at 1 is given above.
    """

    def __init__(self, config: AcceleratorConfig):
        super().__init__({
            "p": range(config.psum_spad_depth + 1),
            "q": range(config.ifmap_spad_depth + 1),
            "S": range(config.ifmap_spad_depth + 1),
            "U": unsigned(U_BITS),
            "F": unsigned(F_BITS),
            "n_rows": unsigned(N_ROWS_BITS),
            "product_shift": range(2 * config.data_width),
            "load_filter": 1,
            "psum_in_en": 1,
        })


_IDLE, _LOAD, _RUN = 0, 1, 2


def psum_join(m, ofifo, psum_in, psum_out, psum_en, pw: int, suffix: str = ""):
    """The join stage of a PE (also used by :class:`hw.pe_row.LockstepPERow`): each
    ``psum_out`` word is the head of the output FIFO ``ofifo`` plus, when ``psum_en``,
    the head of ``psum_in`` (mod ``2**pw``), through a 2-entry registered output (output
    register and skid register), so ``psum_out.valid`` does not depend on
    ``psum_out.ready`` and ``psum_in.ready`` depends on registered state only. Adds the
    logic to ``m`` (signal names end in ``suffix``) and returns a 1-bit value: the FIFO,
    the skid register and the output register are empty (or the output leaves in this
    cycle)."""
    out_valid = Signal(name=f"out_valid{suffix}")
    out_data = Signal(signed(pw), name=f"out_data{suffix}")
    sk_valid = Signal(name=f"skid_valid{suffix}")
    sk_data = Signal(signed(pw), name=f"skid_data{suffix}")
    join_ok = Signal(name=f"join_ok{suffix}")
    join = Signal(name=f"join{suffix}")
    jval = Signal(signed(pw), name=f"join_value{suffix}")
    m.d.comb += [
        join_ok.eq(ofifo.r_rdy & ~sk_valid),
        psum_in.ready.eq(join_ok & psum_en),
        join.eq(join_ok & (psum_in.valid | ~psum_en)),
        jval.eq(ofifo.r_data.as_signed() + Mux(psum_en, psum_in.payload, 0)),
        ofifo.r_en.eq(join),
        psum_out.valid.eq(out_valid),
        psum_out.payload.eq(out_data),
    ]
    with m.If(~out_valid | psum_out.ready):
        with m.If(sk_valid):
            m.d.sync += [out_data.eq(sk_data), out_valid.eq(1), sk_valid.eq(0)]
        with m.Elif(join):
            m.d.sync += [out_data.eq(jval), out_valid.eq(1)]
        with m.Else():
            m.d.sync += out_valid.eq(0)
    with m.Elif(join):
        m.d.sync += [sk_data.eq(jval), sk_valid.eq(1)]
    return (ofifo.level == 0) & ~sk_valid & (~out_valid | psum_out.ready)


class ProcessingElement(wiring.Component):
    """Row-stationary PE: ``p`` filters x ``q`` channels of 1-D row convolution.

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``data_width``, ``psum_width``, ``filter_spad_depth``, ``ifmap_spad_depth``,
        ``psum_spad_depth``, ``zero_gating`` and ``psum_fifo_depth``: the depth of the
        ``SyncFIFOBuffered`` that holds finished (not yet joined) psums, >= 2;
        ``psum_fifo_depth - 1`` entries are usable (one is kept as a credit margin). It
        decouples compute from the arrival of ``psum_in`` so that PEs chained vertically run
        concurrently, and PEs whose windows cost different cycles (zero skipping) can run
        up to ``(psum_fifo_depth - 1) / p`` windows apart.

    Ports
    -----
    cfg : In(PEConfig(config))
        Run configuration, sampled in the cycle ``start`` is high while idle.
    start : In(1)
        Pulse while ``busy`` is low to begin a run (ignored while busy).
    busy : Out(1)
        High from the cycle after ``start`` until the cycle after the last ``psum_out``
        transfer of the run.
    filter_in : In(stream.Signature(filter_in_shape(config)))
        ``p*q*S`` weights when ``load_filter``; spad order, index ``(s*q + qi)*p + pi``
        (``pi`` fastest, then ``qi``, then ``s``). Accepted at 1 transfer/cycle. A transfer
        is one weight, or with ``config.filter_lanes = L > 1`` the next ``L`` weights (lane
        ``i`` = index ``L*k + i`` of transfer ``k``): ``ceil(p*q*S / L)`` transfers, the
        lanes past ``p*q*S`` in the last one ignored.
    ifmap_in : In(stream.Signature(signed(data_width)))
        Per row ``W = (F-1)*U + S`` columns of ``q`` channels, index ``w*q + qi``;
        ``n_rows`` rows back to back.
    psum_in : In(stream.Signature(signed(psum_width)))
        Per row ``F*p`` psums, index ``f*p + pi``; consumed only when ``psum_in_en``.
        ``psum_in.ready`` depends on registered state only.
    psum_out : Out(stream.Signature(signed(psum_width)))
        Per row ``F*p`` psums, index ``f*p + pi``. Registered (2-entry skid buffer):
        ``psum_out.valid`` does not depend on ``psum_out.ready``.
    mac_fire : Out(1)
        A MAC was computed (a filter weight read and a product accumulated) this cycle.
    mac_gated : Out(range(psum_spad_depth + 1))
        NUMBER of MACs gated or skipped this cycle because the ifmap value was zero: 1 for a
        gated MAC (first/last iteration of a window, product forced to 0), ``p`` when a whole
        (s, qi) iteration was skipped in one cycle, else 0. Add it to a counter (do not OR it);
        summed over a run, ``mac_fire + mac_gated == p*q*S*F*n_rows``. Always 0 without
        ``config.zero_gating``.
    stall : Out(1)
        In a run, no MAC issued nor skipped this cycle although work remains (starved of
        ``filter_in``/``ifmap_in`` data, or the output FIFO is full).

    Micro-architecture
    ------------------
    Three single-write/single-read ``Memory`` spads: filter (``filter_spad_depth`` words,
    weight of (pi, qi, s) at ``a = (s*q + qi)*p + pi``; with ``filter_lanes = L > 1`` it is
    ``L`` banks written together, weight ``a`` in bank ``a % L`` at ``a // L``, and the bank
    is chosen after the read by the registered lane ``a % L``), ifmap (a circular buffer of ``q*S`` words,
    ifmap value ``v = w*q + qi`` of the row at slot ``v mod (q*S)``) and psum (``p`` accumulators).
    Within an output window ``f`` the loop order is that of Eyeriss: ``for s: for qi:`` read
    ``x`` once, then ``for pi:`` ``acc[pi] (+)= (w*x) >> product_shift`` - so the filter address
    just counts ``0..p*q*S-1`` per window. Pipeline: fetch (ifmap spad read) -> issue (filter
    spad read) -> E1 (multiply into a product register; psum spad read) -> E2 (shift, add;
    write back to the psum spad, or on the last (s, qi) iteration push into the output FIFO)
    -> join (FIFO head + psum_in head) -> 2-entry output register. The psum read port is
    transparent for its write port and reads one cycle before E2, so ``p = 1`` sustains one
    MAC per cycle. Multiply and accumulate are separate stages so that neither the filter
    spad's block-RAM output nor the multiplier is on the adder's path (one PE on an ECP5-85F,
    speed 6: 44.8 MHz with one execute stage, see the README's FPGA section).

    The ifmap spad is refilled while computing: with ``k = s*q + qi`` the position of the next
    read in window ``f``, value ``v`` may be written iff ``v < (f*U + S)*q + min(k', U*q)``,
    where ``k'`` counts the read issued in the same cycle (the read port is read-before-write,
    so a slot may be overwritten in the cycle its old value is read); a read needs its value
    written. During the last window of a row only that row's values are accepted, so the next
    row starts loading once the current row has been read (about 2 cycles per row when ``p = 1``,
    hidden for larger ``p``). Only counters and wrap comparisons are used (no division).

    Zero gating (``config.zero_gating``, JSSC section IV-C): a zero ``x`` on an (s, qi)
    iteration that is neither the first nor the last of its window skips its ``p`` MACs in one
    cycle (saves ``p - 1`` cycles); on the first/last iteration the ``p`` MACs still take ``p``
    cycles (they initialise / emit the accumulators) but the filter spad read is suppressed,
    the multiplier operands are held and the product is forced to 0.

    Latency / throughput (cycles)
    -----------------------------
    One MAC per cycle sustained for any ``p >= 1`` with dense data and no stalls. A run takes
    ``p*q*S*F*n_rows`` MAC cycles, plus ``ceil(p*q*S / filter_lanes)`` filter-load cycles
    when ``load_filter``
    (ifmap loading overlaps it), plus 2 fill cycles (start -> ifmap write -> spad read; hidden
    behind a filter load) and 5 drain cycles (last MAC -> E1 -> E2 -> output FIFO (2) -> output
    register; ``busy`` falls after its transfer), plus at most about 2 cycles per row when
    ``p`` is small (measured: 6-7 cycles in total without a filter load, 4 with one). With ``U > S`` the ``U*q`` input values per window
    (1/cycle) may exceed the ``p*q*S`` compute cycles and become the bound.

    Constraints: see :class:`PEConfig` (assumed, not checked).
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        dw, pw = config.data_width, config.psum_width
        super().__init__({
            "cfg": In(PEConfig(config)),
            "start": In(1),
            "busy": Out(1),
            "filter_in": In(stream.Signature(filter_in_shape(config))),
            "ifmap_in": In(stream.Signature(signed(dw))),
            "psum_in": In(stream.Signature(signed(pw))),
            "psum_out": Out(stream.Signature(signed(pw))),
            "mac_fire": Out(1),
            "mac_gated": Out(range(config.psum_spad_depth + 1)),
            "stall": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        dw, pw = c.data_width, c.psum_width
        fdepth, idepth, pdepth = c.filter_spad_depth, c.ifmap_spad_depth, c.psum_spad_depth
        odepth = c.psum_fifo_depth

        # ---- storage -------------------------------------------------------------------
        # Filter spad: ``fl`` banks (``config.filter_lanes``); weight ``a`` in bank ``a % fl``
        # at ``a // fl``, so one filter-GIN transfer of ``fl`` values writes every bank.
        fl = c.filter_lanes
        flb = (fl - 1).bit_length()
        f_banks = []
        for b in range(fl):
            mem = Memory(shape=signed(dw), depth=fdepth // fl, init=[])
            m.submodules[f"filter_spad{b}" if fl > 1 else "filter_spad"] = mem
            f_banks.append((mem.write_port(), mem.read_port(domain="sync")))
        f_wr, f_rd = f_banks[0]
        m.submodules.ifmap_spad = ifm = Memory(shape=signed(dw), depth=idepth, init=[])
        i_wr = ifm.write_port()
        i_rd = ifm.read_port(domain="sync")  # read-before-write: a slot may be refilled
        m.submodules.psum_spad = psp = Memory(shape=signed(pw), depth=pdepth, init=[],
                                               attrs=psum_spad_attrs(c))
        p_wr = psp.write_port()
        p_rd = psp.read_port(domain="sync", transparent_for=(p_wr,))  # p = 1 forwarding
        m.submodules.out_fifo = ofifo = SyncFIFOBuffered(width=pw, depth=odepth)

        # ---- run configuration (latched on start) -------------------------------------
        uq_max = 15 * idepth
        p_m1 = Signal(range(pdepth), name="p_m1")
        qs = Signal(range(idepth + 1), name="qs")          # q*S
        qs_m1 = Signal(range(idepth), name="qs_m1")
        uq = Signal(range(uq_max + 1), name="uq")          # U*q
        f_m1 = Signal(F_BITS, name="f_m1")
        rows_m1 = Signal(N_ROWS_BITS, name="rows_m1")
        shift = Signal(range(2 * dw), name="shift")
        psum_en = Signal(name="psum_en")

        state = Signal(2, name="state")
        running = Signal()
        m.d.comb += [running.eq(state == _RUN), self.busy.eq(state != _IDLE)]

        # ---- fetch stage: ifmap sliding window ----------------------------------------
        fa = Signal(name="fetch_active")
        f = Signal(F_BITS, name="f")
        row = Signal(N_ROWS_BITS, name="row")
        k = Signal(range(idepth), name="k")                 # position s*q + qi in window
        # d = (values written in this row) - f*U*q; range -U*q .. q*S + U*q
        d = Signal(signed(Shape.cast(range(idepth + uq_max + 1)).width + 1), name="d")
        ld_slot = Signal(range(idepth), name="ld_slot")     # slot of the next written value
        xv = Signal(name="x_valid")                         # i_rd.data holds an unused x
        x_first = Signal(name="x_first")
        x_last = Signal(name="x_last")
        x = i_rd.data

        # ---- issue stage --------------------------------------------------------------
        pi = Signal(range(pdepth), name="pi")
        faddr = Signal(range(fdepth), name="faddr")
        lk = Signal(range(idepth), name="load_k")
        skip = Signal()
        issue = Signal()
        gate = Signal()
        x_consume = Signal()
        last_pi = Signal()

        # ---- multiply stage (E1) registers -----------------------------------------------
        e_valid = Signal(name="e_valid")
        e_pi = Signal(range(pdepth), name="e_pi")
        e_first = Signal(name="e_first")
        e_last = Signal(name="e_last")
        e_gate = Signal(name="e_gate")
        e_x = Signal(signed(dw), name="e_x")
        # ---- accumulate stage (E2) registers ---------------------------------------------
        a_valid = Signal(name="a_valid")
        a_pi = Signal(range(pdepth), name="a_pi")
        a_first = Signal(name="a_first")
        a_last = Signal(name="a_last")
        a_gate = Signal(name="a_gate")
        a_prod = Signal(signed(2 * dw), name="a_product")

        # ---- start ----------------------------------------------------------------------
        fab = filter_lane_bits(c)
        fwords_m1 = Signal(range(fdepth // fl), name="filter_words_m1")
        with m.If((state == _IDLE) & self.start):
            cfg = self.cfg
            if fl > 1:
                m.d.sync += fwords_m1.eq(((cfg.p * cfg.q * cfg.S + fl - 1) >> flb) - 1)
            m.d.sync += [
                p_m1.eq(cfg.p - 1),
                qs.eq(cfg.q * cfg.S),
                qs_m1.eq(cfg.q * cfg.S - 1),
                uq.eq(cfg.U * cfg.q),
                f_m1.eq(cfg.F - 1),
                rows_m1.eq(cfg.n_rows - 1),
                shift.eq(cfg.product_shift),
                psum_en.eq(cfg.psum_in_en),
                state.eq(Mux(cfg.load_filter, _LOAD, _RUN)),
                fa.eq(1), f.eq(0), row.eq(0), k.eq(0), d.eq(0), ld_slot.eq(0),
                xv.eq(0), pi.eq(0), faddr.eq(0), lk.eq(0),
            ]

        # ---- filter load ------------------------------------------------------------------
        m.d.comb += last_pi.eq(pi == p_m1)
        if fl == 1:
            m.d.comb += [f_wr.addr.eq(faddr), f_wr.data.eq(self.filter_in.payload)]
            with m.If(state == _LOAD):
                m.d.comb += [self.filter_in.ready.eq(1), f_wr.en.eq(self.filter_in.valid)]
                with m.If(self.filter_in.valid):
                    m.d.sync += [pi.eq(Mux(last_pi, 0, pi + 1)), faddr.eq(faddr + 1)]
                    with m.If(last_pi):
                        m.d.sync += lk.eq(Mux(lk == qs_m1, 0, lk + 1))
                        with m.If(lk == qs_m1):
                            m.d.sync += [state.eq(_RUN), faddr.eq(0)]
        else:
            # ceil(p*q*S / fl) transfers; faddr counts them (bank index), then restarts at
            # 0 for the run. Lanes past p*q*S in the last transfer are padding.
            with m.If(state == _LOAD):
                m.d.comb += self.filter_in.ready.eq(1)
                with m.If(self.filter_in.valid):
                    m.d.sync += faddr.eq(faddr + 1)
                    with m.If(faddr == fwords_m1):
                        m.d.sync += [state.eq(_RUN), faddr.eq(0)]
            for b, (wp, _) in enumerate(f_banks):
                m.d.comb += [
                    wp.addr.eq(faddr),
                    wp.data.eq(self.filter_in.payload[b * fab:b * fab + dw]),
                    wp.en.eq((state == _LOAD) & self.filter_in.valid),
                ]

        # ---- fetch: read x = ifmap[(f*U + s)*q + qi] once per (s, qi) ------------------------
        k_last = Signal()
        f_last = Signal()
        fetch = Signal()
        m.d.comb += [
            k_last.eq(k == qs_m1),
            f_last.eq(f == f_m1),
            fetch.eq(fa & (k < d) & (~xv | x_consume)),
        ]
        # Slot of value (f*U*q + k): it is d - k (1..q*S) values behind the write pointer.
        diff = Signal(d.shape(), name="rd_behind")
        rtmp = Signal(signed(len(d) + 1), name="rd_slot_raw")
        rslot = Signal(range(idepth), name="rd_slot")
        m.d.comb += [
            diff.eq(d - k),
            rtmp.eq(ld_slot - diff),
            rslot.eq(Mux(rtmp < 0, rtmp + qs, rtmp)),
            i_rd.addr.eq(rslot),
            i_rd.en.eq(fetch),
        ]
        with m.If(fetch):
            m.d.sync += [xv.eq(1), x_first.eq(k == 0), x_last.eq(k_last)]
            with m.If(k_last):
                m.d.sync += k.eq(0)
                with m.If(f_last):
                    m.d.sync += [f.eq(0), row.eq(row + 1)]
                    with m.If(row == rows_m1):
                        m.d.sync += fa.eq(0)
                with m.Else():
                    m.d.sync += f.eq(f + 1)
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.Elif(x_consume):
            m.d.sync += xv.eq(0)

        # ---- ifmap writer: a slot is refilled as soon as its value is dead ------------------
        # write_ok = d < q*S + lim, lim = 0 in the last window of a row, U*q when the window
        # advances this cycle, else min(k + fetch, U*q). Evaluated as comparisons of the
        # dq = d - q*S (from registers) against k, k + 1 and U*q in parallel, with this cycle's
        # fetch only selecting among them: the issue -> fetch path meets one multiplexer here
        # instead of an adder and two comparators (ECP5 timing, README's FPGA section).
        dq = Signal(d.shape(), name="d_minus_qs")
        m.d.comb += dq.eq(d - qs)
        write_ok = Signal()
        wfire = Signal()
        below_k = dq < k
        below_k1 = dq <= k
        below_uq = dq < uq
        with m.If(f_last):
            m.d.comb += write_ok.eq(fa & (dq < 0))      # only this row's values
        with m.Elif(fetch & k_last):
            m.d.comb += write_ok.eq(fa & below_uq)      # window advances this cycle
        with m.Else():
            m.d.comb += write_ok.eq(fa & below_uq & Mux(fetch, below_k1, below_k))
        m.d.comb += [
            self.ifmap_in.ready.eq(write_ok),
            wfire.eq(write_ok & self.ifmap_in.valid),
            i_wr.addr.eq(ld_slot),
            i_wr.data.eq(self.ifmap_in.payload),
            i_wr.en.eq(wfire),
        ]
        d_base = Signal(d.shape(), name="d_base")
        m.d.comb += [
            d_base.eq(Mux(fetch & k_last, d - uq, d)),
        ]
        with m.If(fetch & k_last & f_last):
            # Next row: no write can happen in this cycle (d == q*S in the last window).
            m.d.sync += [d.eq(0), ld_slot.eq(0)]
        with m.Else():
            m.d.sync += d.eq(d_base + wfire)
            with m.If(wfire):
                m.d.sync += ld_slot.eq(Mux(ld_slot == qs_m1, 0, ld_slot + 1))

        # ---- issue: p MACs per x, or one skip cycle -----------------------------------------
        is_zero = x == 0
        e_push = e_valid & e_last
        a_push = a_valid & a_last
        # Output-FIFO credit, registered: a last-iteration MAC may issue when the FIFO level
        # plus the pushes in flight (E1, E2, and the one issued in the previous cycle) leave a
        # free entry. Computed one cycle early, it ignores that cycle's FIFO read, so it is
        # conservative by at most one entry.
        credit = Signal(name="credit")
        credit_ok = ~x_last | credit
        m.d.sync += credit.eq(ofifo.level + e_push + a_push + (issue & x_last) < odepth - 1)
        if c.zero_gating:
            m.d.comb += [
                skip.eq(running & xv & is_zero & ~x_first & ~x_last),
                gate.eq(is_zero),
            ]
        m.d.comb += [
            issue.eq(running & xv & ~skip & credit_ok),
            x_consume.eq(skip | (issue & last_pi)),
            f_rd.addr.eq(faddr >> flb),
            f_rd.en.eq(issue & ~gate),
            self.mac_fire.eq(issue & ~gate),
            self.mac_gated.eq(Mux(skip, p_m1 + 1, issue & gate)),
            self.stall.eq(((state == _LOAD) & ~self.filter_in.valid)
                          | (running & (fa | xv) & ~issue & ~skip)),
        ]
        m.d.sync += e_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                e_pi.eq(pi), e_first.eq(x_first), e_last.eq(x_last), e_gate.eq(gate),
                pi.eq(Mux(last_pi, 0, pi + 1)),
                faddr.eq(Mux(last_pi & x_last, 0, faddr + 1)),
            ]
            with m.If(~gate):
                m.d.sync += e_x.eq(x)                    # held (not toggled) when gated
        with m.If(skip):
            m.d.sync += faddr.eq(faddr + p_m1 + 1)

        # ---- E1 (multiply): product register; the psum spad is read here, one cycle before
        # its use, so that a p = 1 run reads the value E2 writes in the same cycle through
        # the transparent read port. Splitting multiply and accumulate takes the filter-spad
        # block RAM's clock-to-output and the MULT18X18D off the adder's path (ECP5: the
        # unsplit path closed at 44.8 MHz for one PE, the FPGA target is 50 MHz).
        prod = Signal(signed(2 * dw), name="product")
        w = Signal(signed(dw), name="weight")
        if fl == 1:
            m.d.comb += w.eq(f_rd.data)
        else:
            # Every bank reads the same index; the lane of the issued address picks one.
            e_lane = Signal(flb, name="e_lane")
            with m.If(issue & ~gate):
                m.d.sync += e_lane.eq(faddr[:flb])
            for b, (_, rp) in enumerate(f_banks[1:], start=1):
                m.d.comb += [rp.addr.eq(faddr >> flb), rp.en.eq(issue & ~gate)]
            with m.Switch(e_lane):
                for b, (_, rp) in enumerate(f_banks):
                    with m.Case(b):
                        m.d.comb += w.eq(rp.data)
        m.d.comb += [
            prod.eq(w * e_x),
            p_rd.addr.eq(e_pi),
            p_rd.en.eq(e_valid & ~e_first),
        ]
        m.d.sync += a_valid.eq(e_valid)
        with m.If(e_valid):
            m.d.sync += [a_pi.eq(e_pi), a_first.eq(e_first), a_last.eq(e_last),
                         a_gate.eq(e_gate)]
            with m.If(~e_gate):
                m.d.sync += a_prod.eq(prod)              # held (not toggled) when gated

        # ---- E2 (accumulate): acc (+)= (w * x) >> product_shift, wrapping at psum_width ----
        term = Signal(signed(2 * dw), name="term")
        acc = Signal(signed(pw), name="acc_in")
        total = Signal(signed(pw), name="acc_out")
        m.d.comb += [
            term.eq(Mux(a_gate, 0, a_prod >> shift)),
            acc.eq(Mux(a_first, 0, p_rd.data)),
            total.eq(acc + term),                        # truncation = mod 2**psum_width
            p_wr.addr.eq(a_pi),
            p_wr.data.eq(total),
            p_wr.en.eq(a_valid & ~a_last),
            ofifo.w_data.eq(total),
            ofifo.w_en.eq(a_push),
        ]

        # ---- join: psum_out = fifo head + psum_in head, 2-entry registered output ----------
        out_drained = psum_join(m, ofifo, self.psum_in, self.psum_out, psum_en, pw)

        # ---- end of run -------------------------------------------------------------------
        drained = ~fa & ~xv & ~e_valid & ~a_valid & out_drained
        with m.If(running & drained):
            m.d.sync += state.eq(_IDLE)

        return m
