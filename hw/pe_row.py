"""A row of row-stationary PEs run in lock step: one sequencer, ``n`` datapaths.

Every PE of :class:`~hw.pe.ProcessingElement` repeats the same sequencing: the window, row,
channel and filter counters, the spad addresses and the issue logic. In a pass all PEs run
the same configuration (``p``, ``q``, ``S``, ``U``, ``F``, ``n_rows``), so the counters of
different PEs differ only in *when* they advance. :class:`LockstepPERow` keeps one copy of
them for a whole array row and advances it when every active PE of the row can go on; each
PE keeps only what differs: its spads, its ifmap write pointer, its multiplier, product
shifter and accumulator, and its output FIFO and psum join. On the ECP5 (Yosys
``synth_ecp5``, ``fpga`` preset) one PE is 787 LUT4 equivalents and a row of 8 is 4,220,
527 per PE: the sequencing was a third of a PE (README, FPGA section).

The numerics are exactly those of :class:`~hw.pe.ProcessingElement` (DESIGN.md section 2)
and so are the ports of each PE, so :class:`~hw.array.PEArray` wires a row like ``n``
separate PEs. What changes is timing:

- a row computes when all its active PEs have the ifmap value (and output-FIFO space) for
  the next step, so a row runs at the pace of its slowest PE;
- a row leaves the filter load when all its active PEs have their weights;
- a row pushes a window's psums only when every active PE has output-FIFO room, and the
  psum GIN and GON serve a row's chains one after another, so a PE must hold two windows
  of psums (``p <= (psum_fifo_depth - 1) // 2``, kept by ``sw_driver.mapper.p_limit``) or
  the pass can deadlock;
- zero gating (``config.zero_gating``, Eyeriss JSSC section IV-C) holds the operands and
  forces the product to 0 for a zero ifmap value, as in a PE, but never skips cycles: a
  row could skip an (s, qi) iteration only where the value is zero in all its PEs (rare:
  their ifmap rows differ), and the test for it would be on the row's longest path.

Timing (ECP5): the row-wide decisions come from flops. Each PE keeps a registered flag "the
value of the next read is in my spad", updated from comparisons of its own counters
computed in parallel; the row fetches when all flags of its active PEs are set (an AND of
``n`` flops), and that fetch only selects among precomputed values in each PE.

Row-stationary dataflow and the PE's loop order: Chen et al., "Eyeriss", IEEE JSSC 52(1),
2017, section IV; Sze et al., Proc. IEEE 2017, section V-B.
"""

from amaranth import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .mult import RegisteredMultiplier
from .pe import (F_BITS, N_ROWS_BITS, PEConfig, filter_in_shape, filter_lane_bits,
                 psum_join, psum_spad_attrs)

__all__ = ["LockstepPERow"]

_IDLE, _LOAD, _RUN = 0, 1, 2


class LockstepPERow(wiring.Component):
    """``n`` row-stationary PEs sharing one sequencer (lock step).

    Parameters
    ----------
    config : AcceleratorConfig
        As for :class:`~hw.pe.ProcessingElement` (``data_width``, ``psum_width``, the three
        spad depths, ``filter_lanes``, ``zero_gating``, ``psum_fifo_depth``).
    n : int
        PEs in the row, >= 1.

    Ports
    -----
    Per PE ``i`` (lists of ``n``), with the meaning of the same ports of
    :class:`~hw.pe.ProcessingElement`: ``filter_in[i]``, ``ifmap_in[i]``, ``psum_in[i]``,
    ``psum_out[i]``, ``mac_fire[i]`` (bit ``i``), ``mac_gated[i]``, ``busy[i]`` (bit ``i``).

    cfg : In(PEConfig(config))
        Run configuration, shared by the row, sampled in the cycle of ``start``; its
        ``psum_in_en`` is not used.
    psum_in_en : In(n)
        Bit ``i``: ``psum_in_en`` of PE ``i``.
    start : In(n)
        Bit ``i`` starts PE ``i``. All PEs of a run start in the same cycle, while the row is
        idle (``busy == 0``); PEs not started take no part (never ready, never valid, no MACs
        counted) until the next start.
    busy : Out(n)
        Bit ``i``: PE ``i`` was started and the row has not finished (all started PEs'
        psums out). Starts while any bit is high are ignored.

    Cycles: as for one PE (one MAC per cycle per PE, ``ceil(p*q*S / filter_lanes)`` load
    cycles), with each step taken when the slowest active PE can take it; no zero skipping.
    Measured on ``tiny`` layers: 1.7-3.4% more PASS cycles than per-PE sequencing without
    zero skipping; the analytical model (``sw_driver.perfmodel``) leaves the row coupling
    out and is 1.9% low on average (40 random layers, largest 5.4%).

    Constraints: those of :class:`~hw.pe.PEConfig` (assumed, not checked), and
    ``p <= (psum_fifo_depth - 1) // 2`` (see above).
    """

    def __init__(self, config: AcceleratorConfig, n: int):
        if n < 1:
            raise ValueError(f"a lock-step PE row needs at least 1 PE, got {n}")
        self._config = config
        self._n = n
        dw, pw = config.data_width, config.psum_width
        super().__init__({
            "cfg": In(PEConfig(config)),
            "psum_in_en": In(n),
            "start": In(n),
            "busy": Out(n),
            "filter_in": In(stream.Signature(filter_in_shape(config))).array(n),
            "ifmap_in": In(stream.Signature(signed(dw))).array(n),
            "psum_in": In(stream.Signature(signed(pw))).array(n),
            "psum_out": Out(stream.Signature(signed(pw))).array(n),
            "mac_fire": Out(n),
            "mac_gated": Out(range(config.psum_spad_depth + 1)).array(n),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    @property
    def n(self) -> int:
        return self._n

    def elaborate(self, platform):
        m = Module()
        c, n = self._config, self._n
        dw, pw = c.data_width, c.psum_width
        fdepth, idepth, pdepth = c.filter_spad_depth, c.ifmap_spad_depth, c.psum_spad_depth
        odepth = c.psum_fifo_depth
        fl = c.filter_lanes
        flb = (fl - 1).bit_length()
        fab = filter_lane_bits(c)

        # ---- per-PE storage (as in hw.pe) ------------------------------------------------
        f_banks, i_wr, i_rd, p_wr, p_rd, ofifo = [], [], [], [], [], []
        for i in range(n):
            banks = []
            for b in range(fl):
                mem = Memory(shape=signed(dw), depth=fdepth // fl, init=[])
                m.submodules[f"filter_spad{i}_{b}" if fl > 1 else f"filter_spad{i}"] = mem
                banks.append((mem.write_port(), mem.read_port(domain="sync")))
            f_banks.append(banks)
            ifm = Memory(shape=signed(dw), depth=idepth, init=[])
            m.submodules[f"ifmap_spad{i}"] = ifm
            i_wr.append(ifm.write_port())
            i_rd.append(ifm.read_port(domain="sync"))     # read-before-write
            psp = Memory(shape=signed(pw), depth=pdepth, init=[], attrs=psum_spad_attrs(c))
            m.submodules[f"psum_spad{i}"] = psp
            p_wr.append(psp.write_port())
            p_rd.append(psp.read_port(domain="sync", transparent_for=(p_wr[i],)))
            m.submodules[f"out_fifo{i}"] = fifo = SyncFIFOBuffered(width=pw, depth=odepth)
            ofifo.append(fifo)

        # ---- shared run configuration (latched on start) ---------------------------------
        uq_max = 15 * idepth
        p_m1 = Signal(range(pdepth), name="p_m1")
        qs = Signal(range(idepth + 1), name="qs")
        qs_m1 = Signal(range(idepth), name="qs_m1")
        uq = Signal(range(uq_max + 1), name="uq")
        qs_uq = Signal(range(idepth + uq_max + 1), name="qs_plus_uq")
        uq_mod = Signal(range(idepth), name="uq_mod")      # U*q mod q*S = q*(U mod S)
        u_mod_s = Signal(range(idepth), name="u_mod_s")    # U mod S
        q_r = Signal(range(idepth + 1), name="q")
        f_m1 = Signal(F_BITS, name="f_m1")
        rows_m1 = Signal(N_ROWS_BITS, name="rows_m1")
        # product_shift: one copy per PE (each loaded only when that PE starts, so Yosys keeps
        # them apart): each bit drives about 30 LUTs of every PE's shifter, and the row-wide
        # nets were among the most congested of an 8 x 8 board top (router2 heat map).
        shift = [Signal(range(2 * dw), name=f"shift{i}") for i in range(n)]
        fwords_m1 = Signal(range(fdepth // fl), name="filter_words_m1")
        psum_en = Signal(n, name="psum_en")
        act = Signal(n, name="active")

        state = Signal(2, name="state")
        running = Signal()
        m.d.comb += running.eq(state == _RUN)
        # The start pulse is registered in the row first (a cycle of latency per pass), so
        # that the row's start decision fans out from one flop to all its PEs.
        start_q = Signal(n, name="start_q")
        m.d.sync += start_q.eq(self.start)
        for i in range(n):
            m.d.comb += self.busy[i].eq(((state != _IDLE) & act[i]) | start_q[i])

        # ---- shared sequencer state --------------------------------------------------------
        fa = Signal(name="fetch_active")
        f = Signal(F_BITS, name="f")
        row = Signal(N_ROWS_BITS, name="row")
        k = Signal(range(idepth), name="k")
        k_qs = Signal(range(2 * idepth + 1), name="k_plus_qs")     # k + q*S
        rbase = Signal(range(idepth), name="rd_base")      # slot of value f*U*q of the row
        rslot = Signal(range(idepth), name="rd_slot")      # slot of value f*U*q + k
        xv = Signal(name="x_valid")
        x_first = Signal(name="x_first")
        x_last = Signal(name="x_last")
        pi = Signal(range(pdepth), name="pi")
        last_pi = Signal(name="last_pi")                    # pi == p - 1 (a flop)
        faddr = Signal(range(fdepth), name="faddr")
        e_valid = Signal(name="e_valid")
        e_pi = Signal(range(pdepth), name="e_pi")
        e_first = Signal(name="e_first")
        e_last = Signal(name="e_last")
        m_valid = Signal(name="m_valid")
        m_pi = Signal(range(pdepth), name="m_pi")
        m_first = Signal(name="m_first")
        m_last = Signal(name="m_last")
        a_valid = Signal(name="a_valid")
        a_pi = Signal(range(pdepth), name="a_pi")
        a_first = Signal(name="a_first")
        a_last = Signal(name="a_last")

        # ---- per-PE state ------------------------------------------------------------------
        d_shape = signed(Shape.cast(range(idepth + uq_max + 1)).width + 1)
        d = [Signal(d_shape, name=f"d{i}") for i in range(n)]
        ld_slot = [Signal(range(idepth), name=f"ld_slot{i}") for i in range(n)]
        fw = [Signal(range(fdepth // fl), name=f"load_addr{i}") for i in range(n)]
        fdone = Signal(n, name="loaded")

        # ---- start -----------------------------------------------------------------------
        starting = Signal()
        m.d.comb += starting.eq((state == _IDLE) & start_q.any())
        # The filter word count p*q*S is computed the cycle after start, from the latched p
        # and q*S (a three-way product from cfg was a long path); the filter load waits for
        # it (``settled``).
        settled = Signal(name="settled")
        m.d.sync += [settled.eq(~starting),
                     fwords_m1.eq(((((p_m1 + 1) * qs) + fl - 1) >> flb) - 1)]
        # The refill bounds q*S + U*q and k + q*S (k = 0) likewise, from the latched q*S and
        # U*q (loaded from cfg they put a multiply on the start cycle: 24.5 ns on an 8 x 8
        # top). In that first cycle d = 0 and a stale bound is either right (any bound of a
        # run is >= 1) or 0 after reset (no refill for a cycle); no fetch is possible then.
        with m.If(~settled):
            m.d.sync += [qs_uq.eq(qs + uq), k_qs.eq(qs)]
        # The row's own copy of ``cfg``, registered with the start (``cfg_row``: kept apart
        # from the other rows' copies in the FPGA build, ``hw.array.REPLICA_KEEP_SCRIPT``).
        # From the array's one ``cfg`` register, the start-time products (q*S, U*q) of every
        # row crossed the die (18.2 ns on an 8 x 8 board top).
        cfg = Signal(PEConfig(c), name="cfg_row")
        m.d.sync += cfg.eq(self.cfg)
        with m.If(starting):
            m.d.sync += [
                act.eq(start_q),
                psum_en.eq(self.psum_in_en),
                p_m1.eq(cfg.p - 1),
                qs.eq(cfg.q * cfg.S),
                qs_m1.eq(cfg.q * cfg.S - 1),
                uq.eq(cfg.U * cfg.q),
                q_r.eq(cfg.q),
                f_m1.eq(cfg.F - 1),
                rows_m1.eq(cfg.n_rows - 1),
                state.eq(Mux(cfg.load_filter, _LOAD, _RUN)),
                fdone.eq(0),
                fa.eq(1), f.eq(0), row.eq(0), k.eq(0), rbase.eq(0), rslot.eq(0),
                xv.eq(0), pi.eq(0), last_pi.eq(cfg.p == 1), faddr.eq(0),
            ]
            for i in range(n):
                m.d.sync += [d[i].eq(0), ld_slot[i].eq(0), fw[i].eq(0)]
                with m.If(start_q[i]):
                    m.d.sync += shift[i].eq(cfg.product_shift)
            # U mod S from a table (a divider here was the critical path of a 4 x 6 board
            # top: 20.2 ns, cfg -> modulo -> multiplier -> uq_mod), and q*(U mod S) one cycle
            # later: uq_mod is first used by a window advance, at least two cycles after
            # start (an ifmap value must be written and seen first).
            with m.Switch(Cat(cfg.U, cfg.S)):
                for u in range(1 << len(cfg.U)):
                    for s_ in range(1, idepth + 1):
                        with m.Case(u | (s_ << len(cfg.U))):
                            m.d.sync += u_mod_s.eq(u % s_)
        m.d.sync += uq_mod.eq(q_r * u_mod_s)

        # ---- filter load: each PE takes its own words; the row runs when all have them ----
        for i in range(n):
            fin = self.filter_in[i]
            take = Signal(name=f"filter_take{i}")
            m.d.comb += [fin.ready.eq((state == _LOAD) & settled & act[i] & ~fdone[i]),
                         take.eq(fin.ready & fin.valid)]
            with m.If(take):
                m.d.sync += fw[i].eq(fw[i] + 1)
                with m.If(fw[i] == fwords_m1):
                    m.d.sync += fdone[i].eq(1)
            for b, (wp, _) in enumerate(f_banks[i]):
                data = fin.payload if fl == 1 else fin.payload[b * fab:b * fab + dw]
                m.d.comb += [wp.addr.eq(fw[i]), wp.data.eq(data), wp.en.eq(take)]
        with m.If((state == _LOAD) & (fdone | ~act).all()):
            m.d.sync += state.eq(_RUN)

        # ---- fetch: one (s, qi) step of the row when every active PE has its value -------
        k_last = Signal()
        f_last = Signal()
        fetch = Signal()
        # have[i] (a flop): the value at read position k is in PE i's spad (k < d[i]), or
        # PE i is not active. Its next value is k' < d' for the next k' and d', evaluated
        # for each case of (fetch, window end, row end, write) from comparisons of this
        # cycle's registers, so that fetch and the write only select one of them.
        have = Signal(n, name="have")
        x_consume = Signal()
        m.d.comb += [
            k_last.eq(k == qs_m1),
            f_last.eq(f == f_m1),
            fetch.eq(fa & have.all() & (~xv | x_consume)),
        ]
        for i in range(n):
            m.d.comb += [i_rd[i].addr.eq(rslot), i_rd[i].en.eq(fetch)]
        base_next = Signal(range(2 * idepth), name="rd_base_next")
        slot_next = Signal(range(idepth + 1), name="rd_slot_next")
        m.d.comb += [base_next.eq(rbase + uq_mod), slot_next.eq(rslot + 1)]
        with m.If(fetch):
            m.d.sync += [xv.eq(1), x_first.eq(k == 0), x_last.eq(k_last)]
            with m.If(k_last):
                m.d.sync += [k.eq(0), k_qs.eq(qs)]
                with m.If(f_last):
                    m.d.sync += [f.eq(0), row.eq(row + 1), rbase.eq(0), rslot.eq(0)]
                    with m.If(row == rows_m1):
                        m.d.sync += fa.eq(0)
                with m.Else():
                    nb = Mux(base_next >= qs, base_next - qs, base_next)
                    m.d.sync += [f.eq(f + 1), rbase.eq(nb), rslot.eq(nb)]
            with m.Else():
                m.d.sync += [k.eq(k + 1), k_qs.eq(k_qs + 1),
                             rslot.eq(Mux(slot_next == qs, 0, slot_next))]
        with m.Elif(x_consume):
            m.d.sync += xv.eq(0)

        # ---- per-PE ifmap writer (hw.pe's refill rule with the shared k and f) -------------
        # Unlike hw.pe, a slot that this cycle's fetch frees is written from the next cycle
        # on: ``write_ok`` depends on registers only, not on ``fetch``, which is decided by
        # the row from all its PEs' flags. With it, the path row flags -> fetch -> every
        # PE's ifmap ready -> GIN skid buffer -> d and have was the longest of an 8 x 8
        # lock-step board top (29.7 ns after placement, nextpnr's estimate).
        for i in range(n):
            # d - q*S < bound, as d < bound + q*S against row registers (no subtraction in
            # the PE: d -> d - q*S -> compare was the critical path of the first 8 x 8 top
            # that routed, 21.0 ns)
            write_ok = Signal(name=f"write_ok{i}")
            with m.If(f_last):
                m.d.comb += write_ok.eq(fa & (d[i] < qs))
            with m.Else():
                m.d.comb += write_ok.eq(fa & (d[i] < qs_uq) & (d[i] < k_qs))
            wfire = Signal(name=f"wfire{i}")
            iin = self.ifmap_in[i]
            m.d.comb += [
                iin.ready.eq(write_ok & act[i]),
                wfire.eq(iin.ready & iin.valid),
                i_wr[i].addr.eq(ld_slot[i]),
                i_wr[i].data.eq(iin.payload),
                i_wr[i].en.eq(wfire),
            ]
            d_base = Signal(d_shape, name=f"d_base{i}")
            m.d.comb += d_base.eq(Mux(fetch & k_last, d[i] - uq, d[i]))
            # have[i] next: k' < d' = d_base + wfire, i.e. k' < d_base or (wfire and
            # k' == d_base), for k' = k (no fetch), k + 1 (fetch in a window), 0 (window end).
            stay_lt, stay_eq = k < d[i], k == d[i]
            next_lt, next_eq = k + 1 < d[i], k + 1 == d[i]
            win_lt, win_eq = d[i] > uq, d[i] == uq
            with m.If(starting):
                m.d.sync += have[i].eq(~start_q[i])         # d[i] is 0 between runs
            with m.Elif(fetch & k_last & f_last):
                m.d.sync += [d[i].eq(0), ld_slot[i].eq(0), have[i].eq(~act[i])]
            with m.Else():
                m.d.sync += d[i].eq(d_base + wfire)
                with m.If(wfire):
                    m.d.sync += ld_slot[i].eq(Mux(ld_slot[i] == qs_m1, 0, ld_slot[i] + 1))
                with m.If(~act[i]):
                    m.d.sync += have[i].eq(1)
                with m.Elif(fetch & k_last):
                    m.d.sync += have[i].eq(win_lt | (wfire & win_eq))
                with m.Elif(fetch):
                    m.d.sync += have[i].eq(next_lt | (wfire & next_eq))
                with m.Else():
                    m.d.sync += have[i].eq(stay_lt | (wfire & stay_eq))

        # ---- issue: p MACs per step (zero values gate MACs in their PE, never skip) -------
        issue = Signal()
        credit = Signal(name="credit")                      # every active PE has FIFO room
        zero = Signal(n, name="x_zero")
        for i in range(n):
            m.d.comb += zero[i].eq(i_rd[i].data == 0)
        e_push = e_valid & e_last
        m_push = m_valid & m_last
        a_push = a_valid & a_last
        in_flight = e_push + m_push + a_push + (issue & x_last)
        m.d.sync += credit.eq(Cat(~act[i] | (ofifo[i].level + in_flight < odepth - 1)
                                  for i in range(n)).all())
        m.d.comb += [
            issue.eq(running & xv & (~x_last | credit)),
            x_consume.eq(issue & last_pi),
        ]
        m.d.sync += e_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                e_pi.eq(pi), e_first.eq(x_first), e_last.eq(x_last),
                pi.eq(Mux(last_pi, 0, pi + 1)),
                last_pi.eq(Mux(last_pi, p_m1 == 0, pi + 1 == p_m1)),
                faddr.eq(Mux(last_pi & x_last, 0, faddr + 1)),
            ]
        e_lane = Signal(max(flb, 1), name="e_lane")
        if fl > 1:
            with m.If(issue):
                m.d.sync += e_lane.eq(faddr[:flb])
        m.d.sync += m_valid.eq(e_valid)
        with m.If(e_valid):
            m.d.sync += [m_pi.eq(e_pi), m_first.eq(e_first), m_last.eq(e_last)]
        m.d.sync += a_valid.eq(m_valid)
        with m.If(m_valid):
            m.d.sync += [a_pi.eq(m_pi), a_first.eq(m_first), a_last.eq(m_last)]

        # ---- per-PE datapath: E (spad reads), M (multiply), A (shift, accumulate), join ----
        # The operands are registered between the filter spad and the multiplier: without
        # that register, filter-spad BRAM -> MULT18X18D -> product register was the critical
        # path of a lock-step 4 x 6 board top (19.25 ns, 51.96 MHz).
        drained = []
        for i in range(n):
            gate = Signal(name=f"gate{i}")
            if c.zero_gating:
                m.d.comb += gate.eq(zero[i])
            for _, rp in f_banks[i]:
                m.d.comb += [rp.addr.eq(faddr >> flb), rp.en.eq(issue & ~gate)]
            m.d.comb += [
                self.mac_fire[i].eq(issue & ~gate & act[i]),
                self.mac_gated[i].eq(issue & gate & act[i]),
            ]
            e_gate = Signal(name=f"e_gate{i}")
            e_x = Signal(signed(dw), name=f"e_x{i}")
            with m.If(issue):
                m.d.sync += e_gate.eq(gate)
                with m.If(~gate):
                    m.d.sync += e_x.eq(i_rd[i].data)        # held (not toggled) when gated
            w = Signal(signed(dw), name=f"weight{i}")
            if fl == 1:
                m.d.comb += w.eq(f_banks[i][0][1].data)
            else:
                with m.Switch(e_lane):
                    for b, (_, rp) in enumerate(f_banks[i]):
                        with m.Case(b):
                            m.d.comb += w.eq(rp.data)
            # M: operand registers; A: product register (both inside the ECP5 MULT18X18D)
            m.submodules[f"mult{i}"] = mul = RegisteredMultiplier(dw)
            m_gate = Signal(name=f"m_gate{i}")
            with m.If(e_valid):
                m.d.sync += m_gate.eq(e_gate)
            a_gate = Signal(name=f"a_gate{i}")
            with m.If(m_valid):
                m.d.sync += a_gate.eq(m_gate)
            a_prod = mul.p
            m.d.comb += [
                mul.a.eq(w), mul.b.eq(e_x),
                mul.en.eq(e_valid & ~e_gate),               # held when gated
                p_rd[i].addr.eq(m_pi),
                p_rd[i].en.eq(m_valid & ~m_first),
            ]
            term = Signal(signed(2 * dw), name=f"term{i}")
            acc = Signal(signed(pw), name=f"acc_in{i}")
            total = Signal(signed(pw), name=f"acc_out{i}")
            m.d.comb += [
                term.eq(Mux(a_gate, 0, a_prod >> shift[i])),
                acc.eq(Mux(a_first, 0, p_rd[i].data)),
                total.eq(acc + term),                       # mod 2**psum_width
                p_wr[i].addr.eq(a_pi),
                p_wr[i].data.eq(total),
                p_wr[i].en.eq(a_valid & ~a_last),
                ofifo[i].w_data.eq(total),
                ofifo[i].w_en.eq(a_push & act[i]),
            ]

            # join: psum_out = FIFO head + psum_in head, 2-entry registered output
            drained.append(psum_join(m, ofifo[i], self.psum_in[i], self.psum_out[i],
                                     psum_en[i], pw, suffix=str(i)))

        # ---- end of run ----------------------------------------------------------------------
        # Registered: the FIFOs and joins of the PEs are far from the row's state machine.
        # Once nothing is left to fetch, in the pipeline or in any PE, nothing new can come.
        quiet = Signal(name="quiet")
        with m.If(starting):
            m.d.sync += quiet.eq(0)
        with m.Else():
            m.d.sync += quiet.eq(~fa & ~xv & ~e_valid & ~m_valid & ~a_valid
                                 & Cat(drained).all())
        with m.If(running & quiet):
            m.d.sync += state.eq(_IDLE)

        return m
