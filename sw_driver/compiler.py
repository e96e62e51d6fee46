"""Compiler: a mapped layer (or network) to a DRAM image and a command list.

DRAM layout (64-bit words), allocated by :class:`DramAllocator`:

- ifmaps/ofmaps: one *slot* per 2-D plane (image n, channel c), slot ``n*C + c``. An RLC
  plane is one stream (DESIGN.md section 3) in a slot of ``ceil(H*W/3)`` words, its worst
  case; a raw plane is packed ``lanes`` elements per word, LSB first.
- filters: pre-arranged per pass in the order the filter GIN streams them (tag, then
  ``(s, qi, pi)`` spad order, ``hw.pe``), so the LOAD is one raw copy.
- bias: one sign-extended 64-bit word per output channel.
- the command list (``hw.layouts`` headers and descriptors).

Single-buffered mappings serialise load, compute and store (every command waits for every
engine). Double-buffered mappings (``Mapping.buffers == 2``) overlap DRAM loads and stores
with the passes; see :func:`_emit_overlapped` for the hazards and why they cannot occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hw.agu import agu_desc
from hw.layouts import (CMD_HEADER, Engine, LoadMode, Opcode, WaitMask, act_bits, lanes,
                        load_desc_layout, pass_desc_layout, pe_role_layout,
                        store_desc_layout)
from sw_driver.golden import rlc_decode, rlc_encode
from sw_driver.mapper import Mapping

__all__ = ["DramAllocator", "PlaneStore", "LayerProgram", "compile_layer", "compile_strips",
           "strips_chain", "pack_values",
           "unpack_values", "finish_program", "cmd_words"]

ALL_ENGINES = WaitMask.LOAD | WaitMask.STORE | WaitMask.PASS


def pack_values(values, bits=16) -> np.ndarray:
    """Pack signed ints ``bits`` wide into 64-bit words, lane 0 in the LSBs; the last word
    is zero-filled."""
    la = 64 // bits
    v = np.asarray(values, dtype=np.int64).ravel()
    n = math.ceil(len(v) / la) * la
    buf = np.zeros(n, dtype=np.uint64)
    buf[:len(v)] = (v & ((1 << bits) - 1)).astype(np.uint64)
    buf = buf.reshape(-1, la)
    out = np.zeros(len(buf), dtype=np.uint64)
    for k in range(la):
        out |= buf[:, k] << np.uint64(k * bits)
    return out


def unpack_values(words, count, bits=16) -> np.ndarray:
    la = 64 // bits
    w = np.asarray(words, dtype=np.uint64)
    lanes_ = [(w >> np.uint64(k * bits)) & np.uint64((1 << bits) - 1) for k in range(la)]
    v = np.stack(lanes_, axis=1).ravel()[:count].astype(np.int64)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


def _const_words(layout, value: dict) -> list[int]:
    bits = layout.const(value).as_value().value
    n = (layout.size + 63) // 64
    return [(bits >> (64 * i)) & ((1 << 64) - 1) for i in range(n)]


def cmd_words(opcode, engine=Engine.LOAD, payload=(), wait=ALL_ENGINES) -> list[int]:
    head = CMD_HEADER.const({"opcode": opcode, "engine": engine, "wait": wait,
                             "n_words": len(payload)}).as_value().value
    return [head, *payload]


class DramAllocator:
    """Bump allocator of DRAM word ranges; keeps the data segments to preload."""

    def __init__(self, base: int = 0):
        self.next = base
        self.segments: list[tuple[int, np.ndarray]] = []

    def alloc(self, words: int) -> int:
        addr = self.next
        self.next += max(1, int(words))
        return addr

    def put(self, words) -> int:
        words = np.asarray(words, dtype=np.uint64)
        addr = self.alloc(len(words))
        self.segments.append((addr, words))
        return addr


@dataclass
class PlaneStore:
    """Where a tensor's planes live in DRAM: slot ``n*C + c`` at ``base + slot*slot_words``."""

    base: int
    N: int
    C: int
    H: int
    W: int
    rlc: bool
    slot_words: int

    @classmethod
    def allocate(cls, dram: DramAllocator, N, C, H, W, rlc, data_width=16):
        if rlc:
            slot = math.ceil(H * W / 3)
        else:
            slot = math.ceil(H * W / lanes(act_bits(data_width)))
        return cls(dram.alloc(N * C * slot), N, C, H, W, rlc, slot)

    @property
    def words(self):
        return self.N * self.C * self.slot_words

    def slot_addr(self, n, c):
        return self.base + (n * self.C + c) * self.slot_words

    def encode(self, x: np.ndarray, data_width=16) -> np.ndarray:
        """DRAM words of tensor ``x`` (N, C, H, W) in this store's format."""
        out = np.zeros(self.words, dtype=np.uint64)
        for n in range(self.N):
            for c in range(self.C):
                plane = x[n, c].ravel()
                w = rlc_encode(plane) if self.rlc else pack_values(plane, act_bits(data_width))
                off = (n * self.C + c) * self.slot_words
                out[off:off + len(w)] = w
        return out

    def decode(self, words: np.ndarray, data_width=16) -> np.ndarray:
        """Tensor (N, C, H, W) int16 from this store's DRAM words (``self.words`` of them).

        Raises ValueError if an RLC plane is malformed."""
        x = np.zeros((self.N, self.C, self.H, self.W), dtype=np.int16)
        count = self.H * self.W
        for n in range(self.N):
            for c in range(self.C):
                off = (n * self.C + c) * self.slot_words
                w = words[off:off + self.slot_words]
                if self.rlc:
                    # Only the words up to the last-word bit belong to the stream.
                    last = np.nonzero(w >> np.uint64(63))[0]
                    w = w[:last[0] + 1] if len(last) else w
                    plane = rlc_decode(w, count)
                else:
                    plane = unpack_values(w, count, act_bits(data_width))
                x[n, c] = plane.reshape(self.H, self.W)
        return x


@dataclass
class LayerProgram:
    """One compiled layer: commands (without END) and where its tensors live."""

    mapping: Mapping
    commands: list = field(default_factory=list)
    ifmap: PlaneStore = None
    ofmap: PlaneStore = None


def _roles(mp: Mapping) -> list[int]:
    c, L = mp.config, mp.layer
    words, used = [], set()
    # Filter group t's chain of each column runs from its channel set r_sets-1 (head, top
    # row) down to set 0 (tail); stacked filter groups (t_rows > 1) are separate chains of
    # one column, each fed by the psum GIN and drained by the GON (Mapping.set_origin).
    for v in range(mp.r_sets):
        for i in range(mp.Rc):
            for t in range(mp.t_sets):
                row0, col0 = mp.set_origin(v, t)
                for j in range(mp.e):
                    pe = (row0 + i) * c.pe_cols + col0 + j
                    used.add(pe)
                    words += _const_words(pe_role_layout(), {
                        "pe": pe, "active": 1,
                        "head": int(v == mp.r_sets - 1 and i == mp.Rc - 1),
                        "tail": int(v == 0 and i == 0),
                        "filter_tag": (v * mp.t_sets + t) * mp.Rc + i,
                        "ifmap_tag": v * mp.n_h + i + L.U * j,
                        "psum_tag": t * mp.e_pad + j,
                    })
    # Every other PE inactive (roles persist across layers otherwise).
    for pe in range(c.num_pes):
        if pe not in used:
            words += _const_words(pe_role_layout(), {"pe": pe, "active": 0})
    return words


def _filter_block(w, mp: Mapping, g, m0, c0, r0) -> np.ndarray:
    """Filter values of one pass in filter-GIN order: tag (v, t, i), then (s, qi, pi); each
    tag's ``p*q*S`` values padded with zeros to :attr:`Mapping.filter_tag_values` (whole
    filter-GIN transfers of ``config.filter_lanes`` values)."""
    L = mp.layer
    p, q, Rc, S = mp.p, mp.q, mp.Rc, L.S
    blk = np.zeros((mp.r_sets, mp.t_sets, Rc, S, q, p), dtype=np.int64)
    wg = w[g * L.Mg:(g + 1) * L.Mg]
    for v in range(mp.r_sets):
        for t in range(mp.t_sets):
            ms = slice(m0 + t * p, min(m0 + (t + 1) * p, L.Mg))
            cs = slice(c0 + v * q, min(c0 + (v + 1) * q, L.Cg))
            rs = slice(r0, min(r0 + Rc, L.R))
            sub = wg[ms, cs, rs, :]                        # (pm, qc, rr, S)
            pm, qc, rr = sub.shape[:3]
            if pm and qc and rr:
                blk[v, t, :rr, :, :qc, :pm] = sub.transpose(2, 3, 1, 0)
    per_tag = blk.reshape(mp.r_sets * mp.t_sets * Rc, S * q * p)
    pad = mp.filter_tag_values - per_tag.shape[1]
    return np.pad(per_tag, ((0, 0), (0, pad))).ravel()


def compile_layer(mp: Mapping, dram: DramAllocator, *, weights, bias, ifmap: PlaneStore,
                  ofmap: PlaneStore, product_shift=0, output_shift=0, relu=False,
                  set_roles=True) -> LayerProgram:
    """Commands for one layer reading ``ifmap`` and writing ``ofmap`` (both in DRAM).

    ``weights``: (M, C/groups, R, S) ints; ``bias``: (M,) ints or None.

    With ``mp.buffers == 1`` every command waits for every engine (serial). With
    ``mp.buffers == 2`` the GLB regions are double-buffered and the list is software
    pipelined (:func:`_emit_overlapped`): the loads of pass k+1 run under pass k, and the
    stores of a filter block run under the next block's passes.
    """
    prog, units = _layer_units(mp, dram, weights=weights, bias=bias, ifmap=ifmap,
                               ofmap=ofmap, product_shift=product_shift,
                               output_shift=output_shift, relu=relu)
    if set_roles:
        prog.commands += cmd_words(Opcode.ROLES, payload=_roles(mp))
    if mp.buffers == 1:
        _emit_serial(prog.commands, units)
    else:
        _emit_overlapped(prog.commands, units)
    return prog


def strips_chain(mappings) -> bool:
    """True when the row strips with these mappings (``sw_driver.strips``) can run as one
    software pipeline (:func:`compile_strips`): all double-buffered, with the same GLB
    regions at the same word addresses and the same copies of each, so that a strip's
    units use the buffers in the same alternation as further units of one layer would.
    A resident ifmap (``Mapping.ifmap_resident``) double-buffers itself plane by plane, so
    there the planes must also lie at the same places (same plane pitch, channels and
    images per block); the ifmap copies of other mappings are whole regions."""
    mps = list(mappings)
    if len(mps) < 2 or any(mp.buffers != 2 for mp in mps):
        return False
    first = mps[0]
    bases = {k: a for k, (a, _) in first.glb.items()}

    def planes(mp):
        return (mp.ifmap_resident, mp.plane_pitch, mp.if_channels, mp.nb)

    return all({k: a for k, (a, _) in mp.glb.items()} == bases
               and mp.if_copies == first.if_copies and mp.config == first.config
               and mp.psum_copies == first.psum_copies
               and mp.ifmap_resident == first.ifmap_resident
               and (not mp.ifmap_resident or planes(mp) == planes(first))
               for mp in mps[1:])


def compile_strips(mappings, dram: DramAllocator, *, weights, bias, ifmaps, ofmaps,
                   product_shift=0, output_shift=0, relu=False) -> list[LayerProgram]:
    """The row strips of one layer (``sw_driver.strips``: one mapping, ifmap store and
    ofmap store per strip) as one command list. Returns one :class:`LayerProgram` per
    strip; run their ``commands`` in order.

    Consecutive strips for which :func:`strips_chain` holds form ONE software pipeline
    (:func:`_emit_overlapped`): the loads of a strip's first pass run under the last pass
    of the strip before and its stores under the next strip's passes, instead of every
    strip starting with a load that waits for every engine (AlexNet CONV1 on ``eyeriss``,
    batch 4, in the model: 3.81 -> 3.69 M cycles). The commands of such a run are in its
    first strip's program. A strip whose PE roles differ from the strip before (another
    ``e``: CONV1 runs 7 strips of 7 ofmap rows, then one of 6) gets a ROLES command that
    waits for the PASS engine, just before its first pass. Other strips are compiled on
    their own (:func:`compile_layer`).
    """
    mappings = list(mappings)
    kw = dict(weights=weights, bias=bias, product_shift=product_shift,
              output_shift=output_shift, relu=relu)
    runs = []                   # consecutive strips that chain: lists of indices
    for k, mp in enumerate(mappings):
        if runs and strips_chain([mappings[runs[-1][0]], mp]):
            runs[-1].append(k)
        else:
            runs.append([k])
    progs = []
    for run in runs:
        if len(run) == 1:
            k = run[0]
            progs.append(compile_layer(mappings[k], dram, ifmap=ifmaps[k], ofmap=ofmaps[k],
                                       **kw))
            continue
        counters, units, roles_before, first = {}, [], None, len(progs)
        for k in run:
            prog, us = _layer_units(mappings[k], dram, ifmap=ifmaps[k], ofmap=ofmaps[k],
                                    counters=counters, **kw)
            roles = _roles(mappings[k])
            if roles_before is not None and roles != roles_before and us:
                us[0]["roles"] = roles
            roles_before = roles
            progs.append(prog)
            units += us
        cmds = progs[first].commands
        cmds += cmd_words(Opcode.ROLES, payload=_roles(mappings[run[0]]))
        _emit_overlapped(cmds, units)
    return progs


def _layer_units(mp: Mapping, dram: DramAllocator, *, weights, bias, ifmap: PlaneStore,
                 ofmap: PlaneStore, product_shift=0, output_shift=0, relu=False,
                 counters=None):
    """The layer's :class:`LayerProgram` (no commands yet) and its units, one per (group,
    image block, filter block): ``{"bias": words, "cblocks": [(loads, [(filter load,
    pass descriptor)])], "stores": [descriptors]}``. ``counters`` (a dict, updated) carries
    the buffer alternation (units, ifmap loads, passes) over from the layer before when
    several layers share one pipeline (:func:`compile_strips`)."""
    L, c = mp.layer, mp.config
    la = lanes(act_bits(c.data_width))
    from hw.layouts import psum_bits
    lp = lanes(psum_bits(c.psum_width))
    nbuf = mp.buffers

    def region(name, k):
        copies = {"ifmap": mp.if_copies, "psum": mp.psum_copies,
                  "bias": mp.psum_copies}.get(name, nbuf)
        return mp.glb[name if k % copies == 0 else f"{name}.{k % copies}"][0]

    pitch = mp.plane_pitch
    F, e, U, P = L.F, mp.e, L.U, L.padding
    PP = mp.E_alloc * F             # GLB psum elements per plane (a multiple of Lp)
    Lp = c.psum_lanes
    prog = LayerProgram(mp, ifmap=ifmap, ofmap=ofmap)
    weights = np.asarray(weights, dtype=np.int64)
    bias_addr = None
    if bias is not None:
        bias_addr = dram.put(np.asarray(bias, dtype=np.int64).astype(np.uint64))
    n_tags = mp.r_sets * mp.t_sets * mp.Rc
    pqs = mp.p * mp.q * L.S
    # Units: one per (group, image block, filter block); each has its bias load, channel
    # blocks (ifmap loads + passes (filter load, pass)) and stores. Buffers alternate by
    # unit (bias, psum), by ifmap load (ifmap) and by pass (filter). A resident ifmap
    # (Mapping.ifmap_resident) holds all channels of the image block: the first filter
    # block loads them, one channel block before each of its passes, and the later filter
    # blocks read them again.
    CA = mp.if_channels             # channel planes per image in the ifmap region
    units = []
    counters = {} if counters is None else counters
    n_unit = counters.get("unit", 0)
    n_cblk = counters.get("cblk", 0)
    n_pass = counters.get("pass", 0)
    for g in range(L.groups):
        for nbk in range(mp.n_nblocks):
            n0 = nbk * mp.nb
            nbn = min(mp.nb, L.N - n0)
            for mb in range(mp.n_mblocks):
                m0 = mb * mp.PT
                m_real = min(mp.PT, L.Mg - m0)
                bias_base = region("bias", n_unit)
                ps_base = region("psum", n_unit) * lp
                unit = {"bias": [], "cblocks": [], "stores": [],
                        "single_psum": mp.single_psum}
                if bias_addr is not None:
                    unit["bias"] = cmd_words(Opcode.RUN, Engine.LOAD, _const_words(
                        load_desc_layout(), {"mode": LoadMode.RAW,
                                             "dram_addr": bias_addr + g * L.Mg + m0,
                                             "n_words": m_real, "glb_word": bias_base}),
                        wait=0)
                for cb in range(mp.n_cblocks):
                    c0 = cb * mp.CB
                    c_real = min(mp.CB, L.Cg - c0)
                    # A resident ifmap is loaded by the first filter block, each channel
                    # block into its own planes; one copy serves as two buffers then (the
                    # load of a channel block overwrites planes that the image block before
                    # read in an earlier pass), except with one channel block (two copies,
                    # alternating by image block).
                    load = not mp.ifmap_resident or mb == 0
                    if load and (not mp.ifmap_resident or cb == 0):
                        if_buf = n_cblk
                        n_cblk += 1
                    if_base = region("ifmap", if_buf) * la
                    plane0 = c0 if mp.ifmap_resident else 0     # this block's first plane
                    loads, passes = [], []
                    for n in range(nbn if load else 0):
                        glb_elem = if_base + (n * CA + plane0) * pitch
                        src = ifmap.slot_addr(n0 + n, g * L.Cg + c0)
                        if ifmap.rlc:
                            d = {"mode": LoadMode.RLC, "dram_addr": src,
                                 "dram_pitch": ifmap.slot_words, "glb_elem": glb_elem,
                                 "glb_pitch": pitch, "n_planes": c_real,
                                 "plane_count": L.H * L.W}
                        else:
                            d = {"mode": LoadMode.RAW, "dram_addr": src,
                                 "n_words": c_real * ifmap.slot_words,
                                 "glb_word": glb_elem // la}
                            assert ifmap.slot_words * la == pitch
                        loads.append(cmd_words(Opcode.RUN, Engine.LOAD,
                                               _const_words(load_desc_layout(), d), wait=0))
                    for rc in range(mp.n_rchunks):
                        r0 = rc * mp.Rc
                        fil_base = region("filter", n_pass)
                        n_pass += 1
                        fvals = _filter_block(weights, mp, g, m0, c0, r0)
                        faddr = dram.put(pack_values(fvals, act_bits(c.data_width)))
                        fload = cmd_words(Opcode.RUN, Engine.LOAD, _const_words(
                            load_desc_layout(), {"mode": LoadMode.RAW, "dram_addr": faddr,
                                                 "n_words": math.ceil(len(fvals) / la),
                                                 "glb_word": fil_base}), wait=0)
                        first = cb == 0 and rc == 0
                        if c.filter_lanes == 1:
                            filt = agu_desc([n_tags, pqs],
                                            {"addr": [pqs, 1], "tag": [1, 0]},
                                            base={"addr": fil_base * la})
                        else:       # whole GLB words: each tag's block is word-aligned
                            tw = mp.filter_tag_values // la
                            filt = agu_desc([n_tags, tw], {"addr": [tw, 1], "tag": [1, 0]},
                                            base={"addr": fil_base})
                        ifm = agu_desc(
                            [nbn, mp.n_fold, mp.W_cols, mp.r_sets, mp.n_h, mp.q],
                            {"addr": [CA * pitch, e * U * L.W, 1, mp.q * pitch, L.W,
                                      pitch],
                             "tag": [0, 0, 0, mp.n_h, 1, 0],
                             "y": [0, e * U, 0, 0, 1, 0],
                             "x": [0, 0, 1, 0, 0, 0]},
                            base={"addr": if_base + plane0 * pitch + (r0 - P) * L.W - P,
                                  "y": r0 - P,
                                  "x": -P},
                            H=L.H, W=L.W, pad_check=True)
                        # GLB psums [n][m][fold][j // Lp][f][j % Lp] (elements); the psum
                        # walks step over units of Lp elements (whole words when Lp > 1),
                        # one GON / psum-GIN transfer per (f, t, chain group, pi).
                        psum_counts = [nbn, mp.n_fold, F, mp.t_sets, mp.psum_groups, mp.p]
                        psum_strides = {"addr": [mp.PT * PP // Lp, mp.e_pad * F // Lp, 1,
                                                 mp.p * PP // Lp, F, PP // Lp],
                                        "tag": [0, 0, 0, mp.psum_groups, 1, 0]}
                        ps = agu_desc(psum_counts, psum_strides, base={"addr": ps_base // Lp})
                        empty = agu_desc([0])
                        pas = {"p": mp.p, "q": mp.q, "S": L.S, "U": U, "F": F,
                               "n_rows": nbn * mp.n_fold, "product_shift": product_shift,
                               "load_filter": 1, "psum_in_en": int(not first),
                               "filter": filt, "ifmap": ifm,
                               "psum_in": empty if first else ps, "psum_out": ps}
                        passes.append((fload, _const_words(pass_desc_layout(), pas)))
                    unit["cblocks"].append((loads, passes))
                for n in range(nbn):
                    unit["stores"].append(_const_words(store_desc_layout(), {
                        "glb_elem": ps_base + n * mp.PT * PP, "glb_pitch": PP,
                        "n_planes": m_real, "plane_count": L.E * F, "cols": F,
                        "fold_rows": e, "fold_pitch": mp.e_pad * F,
                        "dram_addr": ofmap.slot_addr(n0 + n, g * L.Mg + m0),
                        "dram_pitch": ofmap.slot_words,
                        "bias_word": bias_base, "bias_en": int(bias_addr is not None),
                        "output_shift": output_shift, "relu": int(relu),
                        "rlc": int(ofmap.rlc)}))
                units.append(unit)
                n_unit += 1
    counters.update({"unit": n_unit, "cblk": n_cblk, "pass": n_pass})
    return prog, units


def _with_wait(words, wait):
    """The same command with another wait mask in its header."""
    head = CMD_HEADER.from_bits(words[0])
    return cmd_words(head.opcode, head.engine, words[1:], wait=wait)


def _emit_serial(cmds, units):
    """Every command waits for every engine: load, compute and store in turn."""
    for u in units:
        if u["bias"]:
            cmds += _with_wait(u["bias"], ALL_ENGINES)
        for loads, passes in u["cblocks"]:
            for ld in loads:
                cmds += _with_wait(ld, ALL_ENGINES)
            for fload, pas in passes:
                cmds += _with_wait(fload, ALL_ENGINES)
                cmds += cmd_words(Opcode.RUN, Engine.PASS, pas)
        for st in u["stores"]:
            cmds += cmd_words(Opcode.RUN, Engine.STORE, st)


def _emit_overlapped(cmds, units):
    """Software-pipelined command list for double-buffered GLB regions.

    The controller issues in order, and a command waits only for the engines in its mask
    (and, for RUN, for its own engine). Order per pass k: ``PASS k`` (waits LOAD), the loads
    of pass k+1 (filter, and ifmap for a new channel block), one pending STORE. At the end
    of a unit (filter block): the previous unit's remaining STOREs, the unit's bias load
    (waits STORE), its first STORE (waits PASS and LOAD); its other STOREs follow one per
    later pass. Why no hazard can occur:

    - A PASS waits for LOAD, so its filter and ifmap loads, issued before it, are done.
    - The loads of pass k+1 write the other filter buffer (and, for a new channel block,
      the other ifmap buffer), last read by pass k-1 or earlier, which finished before
      PASS k could start (one PASS at a time). A resident ifmap (``Mapping.ifmap_resident``)
      is loaded by an image block's first filter block, channel block by channel block,
      each into planes of its own: with two or more channel blocks the planes written
      for pass k+1 were last read by the image block before in a pass before pass k; with
      one channel block the two copies alternate by image block.
    - A unit's psum buffer was last read by the STOREs of unit u-2. Those are all issued
      before unit u-1's first STORE, which starts only when the STORE engine is idle, and
      that is emitted before unit u's first PASS.
    - With one psum region (``"single_psum"``, :attr:`Mapping.single_psum`) the unit's
      psums were last read by the STOREs of unit u-1: all of them are emitted right after
      unit u-1's last PASS (and its loads for the next pass), none is carried over, and
      unit u's first PASS waits for STORE as well as LOAD. The bias region is single too:
      the unit's bias load waits for STORE, after its own passes.
    - A bias load waits for STORE, so the STOREs of unit u-2 (same bias buffer) are done;
      the unit's first STORE waits for LOAD, so the bias is in the GLB.
    - The first load of the layer waits for every engine: the ifmap may be the previous
      layer's ofmap, written by its STOREs, and the regions may hold its psums.
    - Row strips chained into one list (:func:`compile_strips`) continue the alternation
      of every buffer over the same regions, so the arguments above hold across strips. A
      unit with ``"roles"`` (a strip whose PE roles differ from the strip before) emits its
      ROLES command just before its first PASS, waiting for PASS: the passes before it have
      finished when the roles change, and the passes after it are issued after it.
    """
    flat = []          # (unit index, loads before the pass incl. the filter load, pass)
    for ui, u in enumerate(units):
        for ci, (loads, passes) in enumerate(u["cblocks"]):
            for pi, (fload, pas) in enumerate(passes):
                flat.append((ui, (loads if pi == 0 else []) + [fload], pas))
    if not flat:
        return
    first_loads = flat[0][1]
    cmds += _with_wait(first_loads[0], ALL_ENGINES)
    for ld in first_loads[1:]:
        cmds += ld
    pending = []
    for i, (ui, _, pas) in enumerate(flat):
        u = units[ui]
        wait = WaitMask.LOAD
        if i == 0 or flat[i - 1][0] != ui:          # the unit's first pass
            if u.get("roles"):
                cmds += cmd_words(Opcode.ROLES, payload=u["roles"], wait=WaitMask.PASS)
            if u.get("single_psum"):
                wait |= WaitMask.STORE      # the unit before still stores its psums
        cmds += cmd_words(Opcode.RUN, Engine.PASS, pas, wait=wait)
        if i + 1 < len(flat):
            for ld in flat[i + 1][1]:
                cmds += ld
        if pending:
            cmds += cmd_words(Opcode.RUN, Engine.STORE, pending.pop(0), wait=0)
        if i + 1 == len(flat) or flat[i + 1][0] != ui:
            for st in pending:
                cmds += cmd_words(Opcode.RUN, Engine.STORE, st, wait=0)
            if u["bias"]:
                cmds += _with_wait(u["bias"], WaitMask.STORE)
            cmds += cmd_words(Opcode.RUN, Engine.STORE, u["stores"][0],
                              wait=WaitMask.PASS | WaitMask.LOAD)
            pending = list(u["stores"][1:])
            if u.get("single_psum"):        # all now: the next unit's first pass waits
                for st in pending:
                    cmds += cmd_words(Opcode.RUN, Engine.STORE, st, wait=0)
                pending = []
    for st in pending:
        cmds += cmd_words(Opcode.RUN, Engine.STORE, st, wait=0)


def finish_program(dram: DramAllocator, commands: list[int]) -> int:
    """Append END and place the command list in DRAM; return its address."""
    words = list(commands) + cmd_words(Opcode.END)
    return dram.put(np.array(words, dtype=np.uint64))
