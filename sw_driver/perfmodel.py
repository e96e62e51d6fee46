"""Analytical cycle and access-count model of the generated accelerator.

Predicts, for any :class:`~hw.config.AcceleratorConfig` and CONV layer (or network), what the
RTL's performance counters (``hw.layouts.CSR_COUNTERS``) will read, without simulating the
RTL: total ``cycles`` (start to the last ofmap word written to DRAM, the hardware's own
counter), the busy time of every engine, and the accesses at every level of the memory
hierarchy (DRAM, GLB, NoC, spads, MACs). Sweeps and whole-network estimates use it instead
of hours of Verilator; ``accelgen bench`` prints it beside the RTL figures.

    from sw_driver.perfmodel import predict_layer
    pred = predict_layer(preset("small"), LayerShape(1, 16, 14, 14, 32, 3, 3, padding=1),
                         dram=DramModel.eyeriss(), relu=True)
    print(pred.cycles, pred.utilization, pred.counts["dram_reads"])
    print(pred.explain())

Method
------
The model compiles the layer exactly as the driver does (``sw_driver.compiler``: the real
command list, the real DRAM layout) and *executes the command list* on a transaction-level
model of the hardware. Which command waits for what is read from each command header
(``hw.layouts.WaitMask``), so when the compiler overlaps engines the model follows.

* Controller (``hw.controller``): 16-word command prefetch FIFO fed by DRAM reads with
  priority over the LOAD engine, ``level + outstanding < 16`` credit, 2-cycle FIFO latency,
  one header / payload word per cycle, ``WAIT`` on the header's wait mask and the target
  engine, start pulse after the payload, ``END``/``STOP`` drain (including the up-to-16
  command words fetched past ``END``, which the ``dram_reads`` counter sees).
* DRAM (``sw_driver/sim/sim_dram.v``): one transfer per cycle shared by reads and writes,
  token bucket of ``rate_num/rate_den`` words per cycle (capped at ``4*rate_den`` tokens),
  fixed read latency, read/write alternation when both wait. Simulated word by word, jumping
  over idle time.
* LOAD (``hw.dma.LoadEngine``): RAW with 16 reads in flight; RLC with an 8-word credit
  (reads in flight + buffered words), per-word decode at one value per cycle from the real
  RLC run lengths, 2 idle cycles per plane, reads past a plane's last word (issued before
  that word arrived) discarded but counted.
* STORE (``hw.dma.StoreEngine``): one psum per cycle (+1 cycle per plane for the bias),
  5-stage pipeline, the RLC encoder or raw packer stalls while its output word waits for the
  DRAM write register (word boundaries from the real ofmap values).
* PASS (``hw.pass_engine``, ``hw.array``, ``hw.pe``): a recurrence over *(psum chain, ofmap
  window)*: the filter GIN loads tag after tag at one transfer (``filter_lanes`` values)
  per cycle and a chain head starts
  when its tag is loaded; a window costs ``p`` cycles per (s, qi) iteration, 1 cycle for a
  skipped zero (zero gating: not on the first/last iteration of a window); a chain's window
  is as slow as its slowest PE, up to the ``psum_fifo_depth - 1`` psums each PE's output
  FIFO lets it run ahead (:func:`_chain_cost`); the ifmap GIN is a one-word-per-cycle
  server of columns of ``r_sets*n_h*q`` words whose columns are released when the PEs
  have consumed the slots (spad of ``q*S`` words; a new row only after the row's last
  window); the GON (and the psum
  GIN) serve the chains one transfer per cycle in ``(window, chain group, filter)`` order,
  a transfer taking a psum of every chain of a group of ``psum_lanes`` when the group's
  last chain has it (groups of one chain without psum lanes), a chain's
  last iteration stalls when ``psum_fifo_depth + 1`` of its psums wait for the GON (PE
  output FIFO, output registers: 8 with the 7-entry FIFO); the pass ends 3 cycles after
  the last GON write.

Units: cycles of the accelerator clock; DRAM and GLB quantities in 64-bit words; MACs and
NoC transfers in elements. Sources: Eyeriss (Chen et al., IEEE JSSC 52(1), 2017, section IV),
Sze et al. survey section V-B, and the RTL named above.

Accuracy and limits
-------------------
Measured against Verilator (serialised command lists, as the compiler emits today): 80
random layers on ``tiny`` (random mappings, stride 1/2, R 1/3/5, 0-70% zeros, ReLU/RLC,
bias): cycles mean |error| 1.3%, 64 within 2%, one at +6.6% (a 4x4 ifmap, p=1, 70% zeros,
passes of ~40 cycles); 40 on ``small``: mean 0.8%, max 3.8%; the regression layers of
``sim_tests/test_perfmodel.py`` (incl. ``DramModel.eyeriss()`` and RLC ifmaps) within 1.6%.
In all of them ``macs``, ``macs_gated``, ``dram_reads``, ``dram_writes``, ``glb_reads`` and
``glb_writes`` equalled the RTL's counters. Exact by construction: ``macs + macs_gated``,
``glb_reads``, ``glb_writes``, ``dram_writes`` (given the real ofmap for RLC) and, given the
real ifmap, ``macs_gated``; ``dram_reads`` includes two timing-dependent parts the model
simulates (command words fetched past ``END``, RLC reads past a plane's last word).

Known approximations (where the remaining error comes from):

* Zero skipping: PEs of one chain may drift by about ``ceil(6/p)`` windows
  (:func:`_chain_cost`); the coupling of chains through the ifmap multicast (a GIN word
  waits for every PE of its diagonal) is only approximated by releasing a column when the
  slowest chain frees it. Sparse layers err by up to about +-5%, dense ones by about 1-2%.
* Very short passes with ``p = 1`` (GON and join bubbles of a cycle or two per psum).
* Not modelled: GLB bank conflicts between concurrently running engines (the compiler keeps
  regions in separate banks), random DRAM jitter and backpressure (``jitter_mask``,
  ``stall``: the mean latency is used), arbitration between two DRAM streams of engines
  running at once other than the controller's priority and the read/write alternation, and
  the contents of GLB slots that a pass reads but no LOAD of the same run wrote (taken as
  zeros, as after reset; this only affects zero skipping of padded channel blocks).
* :data:`WHAT_IF` changes the modelled hardware for design-space estimates; those figures
  are extrapolations, not checked against an RTL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hw.config import AcceleratorConfig
from hw.layouts import (CMD_HEADER, Engine, LoadMode, Opcode, act_bits, lanes,
                        load_desc_layout, pass_desc_layout, pe_role_layout,
                        store_desc_layout)
from sw_driver.mapper import WHAT_IF as _MAPPER_WHAT_IF
from sw_driver.mapper import LayerShape, Mapping
from sw_driver.targets import DramModel

__all__ = ["LayerPrediction", "NetworkPrediction", "CommandTiming", "predict_layer",
           "predict_network", "predict_program", "RTL_COUNTERS", "WHAT_IF"]

#: Design-space what-ifs (NOT the RTL): ``{"gon_per_cycle": k}`` lets the GON and psum GIN
#: move ``k`` psums per cycle, ``{"filter_gin_per_cycle": k}`` the filter GIN ``k`` words,
#: ``{"ifmap_gin_per_cycle": k}`` the ifmap GIN ``k`` values. Empty (the RTL) by default;
#: set temporarily to estimate what a hardware change gains. The same dict as
#: ``sw_driver.mapper.WHAT_IF``, so the mapper's cost sees the change too.
WHAT_IF: dict = _MAPPER_WHAT_IF

#: Counters that both the model and the RTL report (``hw.layouts.CSR_COUNTERS``).
RTL_COUNTERS = ("cycles", "busy_cycles", "pass_cycles", "macs", "macs_gated", "dram_reads",
                "dram_writes", "glb_reads", "glb_writes")

_INF = float("inf")

# ---- micro-architectural constants (cycles), each from the RTL named beside it ---------
_FETCH_DEPTH = 16          # hw.controller: prefetch FIFO depth and request credit
_CMDQ_LATENCY = 2          # SyncFIFOBuffered: written at c, readable at c + 2
_RAW_OUTSTANDING = 16      # hw.dma.LoadEngine raw_outstanding
_RLC_OUTSTANDING = 8       # hw.dma.LoadEngine rlc_outstanding (in flight + buffered)
_LOAD_RAW_TAIL = 3         # last response -> GLB write register -> IDLE -> busy low
_LOAD_RLC_TAIL = 3         # last value decoded -> GLB write -> DRAIN -> busy low
_RLC_PLANE_GAP = 2         # decoder idle cycles between planes
_STORE_FIRST = 4           # start -> first value at the encoder (GLB read, requantise, ReLU)
_STORE_TAIL = 2            # last DRAM write -> busy low
_PASS_FIRST_WORD = 3       # launch -> first GIN word in the PEs (AGU 2 + reader 1 ... )
_PASS_HEAD_START = 4       # launch -> a PE whose filters are loaded issues (+ filter words)
_GON_AFTER_LAST_ITER = 7   # head's last iteration starts -> first GON transfer of the chain
# Psums a chain holds before its last iteration stalls (``config.psum_fifo_depth - 1`` usable
# PE output FIFO entries + the 2-entry output register): psum m issues after the GON took
# m - (psum_fifo_depth + 1); 8 with the 7-entry FIFO.
_CHAIN_BUFFER_EXTRA = 2
_PSUM_IN_EXTRA = 0         # extra chain latency when psums come from the psum GIN
_PASS_TAIL = 3             # last GON transfer -> GLB write -> busy low
_GIN_TO_FETCH = 2          # GIN word accepted -> PE may fetch it
# Words of the next row a PE's ifmap input takes before it has read its current row: the
# 2-entry skid buffer in front of every PE (hw.array), which a row's last window leaves empty.
_ROW_SKID = 2


@dataclass
class CommandTiming:
    """One executed command: times are cycles since ``start`` (the counter's zero).

    ``t_header``: header word consumed; ``t_start``: engine start pulse; ``t_idle``: first
    cycle the engine is idle again (``duration = t_idle - t_start - 1`` busy cycles).
    """

    index: int
    opcode: str
    engine: str
    wait: int
    t_header: int = 0
    t_start: int = 0
    t_idle: int = 0
    dram_words: int = 0
    detail: dict = field(default_factory=dict)

    @property
    def duration(self) -> int:
        return max(0, self.t_idle - self.t_start - 1)


@dataclass
class LayerPrediction:
    """Model output for one layer (or one whole command list).

    ``cycles`` is the prediction of the RTL ``cycles`` counter; ``counts`` holds every
    access count (keys below); ``phases`` splits the cycles by what was running (``pass``,
    ``load``, ``store``, overlaps as ``a+b``, ``control`` when no engine is busy: command
    fetch and dispatch); ``commands`` is the per-command timeline.

    ``counts`` keys (64-bit words for DRAM/GLB, elements elsewhere): ``cycles``,
    ``busy_cycles``, ``pass_cycles``, ``load_cycles``, ``store_cycles``, ``macs``,
    ``macs_gated`` (MACs skipped or gated by zero ifmaps), ``dram_reads``, ``dram_writes``,
    ``dram_reads_commands``, ``dram_reads_data``, ``glb_reads``, ``glb_writes``,
    ``noc_filter_gin``, ``noc_ifmap_gin``, ``noc_psum_gin``, ``noc_gon``,
    ``spad_filter_reads``, ``spad_filter_writes``, ``spad_ifmap_reads``,
    ``spad_ifmap_writes``, ``spad_psum_reads``, ``spad_psum_writes``.
    """

    cycles: int
    counts: dict
    phases: dict
    commands: list
    useful_macs: int
    num_pes: int
    mappings: list = field(default_factory=list)

    @property
    def ideal_cycles(self) -> float:
        """Useful MACs / PEs: the cycles of a perfectly used array."""
        return self.useful_macs / self.num_pes

    @property
    def utilization(self) -> float:
        """Useful MACs / (cycles x PEs), as ``RunStats.utilization``."""
        return self.useful_macs / max(1, self.cycles * self.num_pes)

    def compare(self, counters: dict) -> dict:
        """``{name: (model, rtl, relative error)}`` for the counters both report."""
        out = {}
        for k in RTL_COUNTERS:
            if k in counters and k in self.counts:
                m, r = self.counts[k], counters[k]
                out[k] = (m, r, (m - r) / r if r else float(m != 0))
        return out

    def explain(self) -> str:
        c = self.counts
        lines = [f"predicted {self.cycles:,} cycles, ideal {self.ideal_cycles:,.0f} "
                 f"(utilization {self.utilization:.1%})",
                 "phases: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.phases.items())),
                 f"MACs {c['macs']:,} issued + {c['macs_gated']:,} gated/skipped by zeros",
                 f"DRAM {c['dram_reads']:,} words read ({c['dram_reads_commands']:,} commands)"
                 f", {c['dram_writes']:,} written; GLB {c['glb_reads']:,} reads, "
                 f"{c['glb_writes']:,} writes",
                 f"NoC: filter GIN {c['noc_filter_gin']:,}, ifmap GIN {c['noc_ifmap_gin']:,}, "
                 f"psum GIN {c['noc_psum_gin']:,}, GON {c['noc_gon']:,}",
                 f"spads: filter {c['spad_filter_reads']:,} r / {c['spad_filter_writes']:,} w, "
                 f"ifmap {c['spad_ifmap_reads']:,} r / {c['spad_ifmap_writes']:,} w, "
                 f"psum {c['spad_psum_reads']:,} r / {c['spad_psum_writes']:,} w"]
        return "\n".join(lines)


@dataclass
class NetworkPrediction(LayerPrediction):
    """Model output for a network run as one command list; ``layers`` holds each layer's
    share (its commands' phases and counts; cycles from its first to its last command)."""

    layers: list = field(default_factory=list)


# =========================================================================================
# Data attached to a program: what the DRAM holds (for RLC sizes and zero skipping)
# =========================================================================================

def _rlc_word_values(plane: np.ndarray) -> np.ndarray:
    """Values covered by each RLC word of ``plane`` (DESIGN.md section 3): pairs cover
    ``run + 1`` values, three pairs per word. Returns an int array, one entry per word."""
    v = np.asarray(plane).ravel()
    n = v.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    nz = np.flatnonzero(v)
    prev = np.concatenate(([-1], nz[:-1]))
    z = nz - prev - 1
    fillers = z // 32
    cover = []
    # pairs: fillers of 32 values, then (z % 32) + 1 values for each non-zero
    counts = fillers + 1
    pair_vals = np.repeat(np.full(len(nz), 32, dtype=np.int64), counts)
    if len(nz):
        ends = np.cumsum(counts) - 1
        pair_vals[ends] = z % 32 + 1
    trailing = n - 1 - (nz[-1] if len(nz) else -1)
    tail = [32] * (trailing // 32) + ([trailing % 32] if trailing % 32 else [])
    pairs = np.concatenate([pair_vals, np.array(tail, dtype=np.int64)])
    npairs = len(pairs)
    pad = (-npairs) % 3
    pairs = np.concatenate([pairs, np.zeros(pad, dtype=np.int64)])
    cover = pairs.reshape(-1, 3).sum(axis=1)
    return cover


def _rlc_word_ends(plane: np.ndarray) -> np.ndarray:
    """Index (within the plane) of the value that completes each RLC word."""
    return np.cumsum(_rlc_word_values(plane)) - 1


class _Tensor:
    """A tensor in DRAM as a :class:`~sw_driver.compiler.PlaneStore` plus its values (or
    None when unknown: then zero-skipping sees no zeros and RLC words are dense)."""

    def __init__(self, store, values):
        self.store = store
        self.values = values
        self._cover = {}

    def plane(self, n, c):
        if self.values is None:
            return np.ones(self.store.H * self.store.W, dtype=np.int16)
        return self.values[n, c].ravel()

    def rlc_cover(self, n, c):
        key = (n, c)
        if key not in self._cover:
            self._cover[key] = _rlc_word_values(self.plane(n, c))
        return self._cover[key]

    def plane_of(self, dram_addr):
        s = self.store
        k = (dram_addr - s.base) // s.slot_words
        return divmod(k, s.C)

    def contains(self, dram_addr):
        s = self.store
        return s.base <= dram_addr < s.base + s.words


# =========================================================================================
# Command decoding
# =========================================================================================

_LAYOUTS = {}


def _layout(name):
    if name not in _LAYOUTS:
        _LAYOUTS[name] = {"load": load_desc_layout, "store": store_desc_layout,
                          "pass": pass_desc_layout, "role": pe_role_layout}[name]()
    return _LAYOUTS[name]


def _as_dict(const):
    """A data.Const view to plain Python values (nested for structs/arrays)."""
    from amaranth.lib import data
    layout = const.shape()
    if isinstance(layout, data.ArrayLayout):
        return [_as_dict(const[i]) if isinstance(const[i], data.Const) else _val(const[i])
                for i in range(layout.length)]
    out = {}
    for name, _f in layout:
        v = const[name]
        out[name] = _as_dict(v) if isinstance(v, data.Const) else _val(v)
    return out


def _val(v):
    if hasattr(v, "value"):
        return v.value if not isinstance(v.value, int) else int(v.value)
    return int(v)


_DESC_CACHE = {}


def _decode(name, words):
    key = (name, tuple(words))
    d = _DESC_CACHE.get(key)
    if d is None:
        from amaranth.lib import data
        bits = 0
        for i, w in enumerate(words):
            bits |= int(w) << (64 * i)
        layout = _layout(name)
        d = _as_dict(data.Const(layout, bits & ((1 << layout.size) - 1)))
        if len(_DESC_CACHE) > 200_000:
            _DESC_CACHE.clear()
        _DESC_CACHE[key] = d
    return d


@dataclass
class _Cmd:
    index: int
    addr: int            # DRAM word address of the header
    opcode: Opcode
    engine: Engine
    wait: int
    payload: list
    wait_on: tuple = None     # engine values the WAIT state checks (filled lazily)


def _parse_commands(words, base):
    cmds, i = [], 0
    mask = (1 << CMD_HEADER.size) - 1
    from amaranth.lib import data
    while i < len(words):
        h = data.Const(CMD_HEADER, int(words[i]) & mask)
        n = int(h.n_words)
        op = Opcode(h.opcode) if not isinstance(h.opcode, Opcode) else h.opcode
        eng = Engine(h.engine) if not isinstance(h.engine, Engine) else h.engine
        wait = int(h.wait.value) if hasattr(h.wait, "value") else int(h.wait)
        cmds.append(_Cmd(len(cmds), base + i, op, eng, wait,
                         [int(w) for w in words[i + 1:i + 1 + n]]))
        i += 1 + n
    return cmds


# =========================================================================================
# AGU helpers (exact step counts from a descriptor)
# =========================================================================================

def _agu_strides(desc, coord):
    """Per-level strides of ``coord`` reconstructed from the jumps (inverse of agu_desc)."""
    counts = desc["count"]
    jumps = desc[f"jump_{coord}"]
    L = len(counts)
    st = [0] * L
    for lvl in reversed(range(L)):
        if counts[lvl] <= 1:
            st[lvl] = 0
            continue
        st[lvl] = jumps[lvl] + sum(max(counts[k] - 1, 0) * st[k] for k in range(lvl + 1, L))
    return st


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _agu_steps(desc):
    c = desc["count"]
    return int(np.prod(c)) if all(x > 0 for x in c) else 0


def _agu_inbounds(desc):
    """Number of in-bounds steps of a descriptor (all steps when ``pad_check`` is 0)."""
    total = _agu_steps(desc)
    if not total or not desc["pad_check"]:
        return total
    counts = desc["count"]
    sy = [_signed(s, 16) for s in _agu_strides(desc, "y")]
    sx = [_signed(s, 16) for s in _agu_strides(desc, "x")]
    by, bx = _signed(desc["base_y"], 16), _signed(desc["base_x"], 16)
    H, W = desc["H"], desc["W"]

    def coord_ok(strides, base, bound):
        lv = [l for l in range(len(counts)) if strides[l] and counts[l] > 1]
        vals = np.array([base])
        for l in lv:
            vals = (vals[:, None] + np.arange(counts[l])[None, :] * strides[l]).ravel()
        return lv, ((vals >= 0) & (vals < bound))

    ly, oky = coord_ok(sy, by, H)
    lx, okx = coord_ok(sx, bx, W)
    if set(ly) & set(lx):           # not separable: enumerate the joint levels
        lv = sorted(set(ly) | set(lx))
        grids = np.meshgrid(*[np.arange(counts[l]) for l in lv], indexing="ij")
        y = by + sum(g * sy[l] for g, l in zip(grids, lv))
        x = bx + sum(g * sx[l] for g, l in zip(grids, lv))
        ok = int(((y >= 0) & (y < H) & (x >= 0) & (x < W)).sum())
        rest = total // int(np.prod([counts[l] for l in lv]))
        return ok * rest
    rest = total
    for l in set(ly) | set(lx):
        rest //= counts[l]
    return int(oky.sum()) * int(okx.sum()) * rest


# =========================================================================================
# DRAM port (sim_dram.v)
# =========================================================================================

class _DramPort:
    """Token bucket + one transfer per cycle + read/write alternation (sim_dram.v)."""

    def __init__(self, dram: DramModel):
        self.num, self.den = int(dram.rate_num), int(dram.rate_den)
        self.unlimited = self.num >= self.den
        self.latency = int(dram.latency) + int(dram.jitter_mask) // 2   # mean jitter
        cap = 4 * self.den
        # Tokens accumulated before the run (reset, CSR writes): the bucket is full.
        self.tok = 0 if self.unlimited else math.ceil(cap / self.num) * self.num
        self.t_tok = 0
        self.prefer_write = False
        self.reads = 0
        self.writes = 0

    def tokens_at(self, t):
        if self.unlimited:
            return 0
        tok = self.tok
        cap = 4 * self.den
        if tok >= cap:
            return tok
        k = min(t - self.t_tok, math.ceil((cap - tok) / self.num))
        return tok + self.num * max(0, k)

    def token_time(self, t):
        """Earliest cycle >= t at which a transfer has a token."""
        if self.unlimited:
            return t
        tok = self.tokens_at(t)
        if tok >= self.den:
            return t
        return t + math.ceil((self.den - tok) / self.num)

    def fire(self, t, write):
        if not self.unlimited:
            tok = self.tokens_at(t)
            assert tok >= self.den
            self.tok = tok + self.num - self.den
            self.t_tok = t + 1
        self.prefer_write = not write
        if write:
            self.writes += 1
        else:
            self.reads += 1


# =========================================================================================
# Engines
# =========================================================================================

class _LoadEngine:
    """LOAD: DRAM -> GLB, RAW or RLC (hw.dma.LoadEngine)."""

    def __init__(self, sim):
        self.sim = sim
        self.active = False
        self.idle_at = 0
        self.timing = None

    def start(self, s, desc, timing):
        self.s = s
        self.desc = desc
        self.timing = timing
        self.idle_at = _INF
        self.req = []             # request cycles
        self.free = []            # cycle each request's credit slot is free again
        self.active = True
        raw = desc["mode"] in (0, LoadMode.RAW)
        self.mode = "raw" if raw else "rlc"
        if raw:
            self.total = desc["n_words"]
            self.limit = _RAW_OUTSTANDING
            self.glb_writes = self.total
            if self.total == 0:
                self._done(s + 2)
            return
        self.limit = _RLC_OUTSTANDING
        n_planes, count = desc["n_planes"], desc["plane_count"]
        self.glb_writes = n_planes * count if count else 0
        if n_planes == 0 or count == 0:
            self._done(s + 2)
            return
        tensor = self.sim.find_tensor(desc["dram_addr"])
        self.covers = []
        for k in range(n_planes):
            addr = desc["dram_addr"] + k * desc["dram_pitch"]
            if tensor is not None and tensor.contains(addr):
                cov = tensor.rlc_cover(*tensor.plane_of(addr))
            else:
                cov = np.full(math.ceil(count / 3), 3, dtype=np.int64)
            self.covers.append([int(v) for v in cov])
        self.count = count
        self.plane = 0             # plane whose words are being requested
        self.in_plane = 0          # requests issued for it
        self.plane_from = s + 1    # first cycle its requests may fire
        self.switch_at = None      # arrival cycle of the plane's last word
        self.dec_free = s + 2      # decoder may take a word from this cycle
        self.pending = []          # useful requests whose take time is not computed yet
        self.last_value = s + 1

    def _done(self, t):
        self.active = False
        self.idle_at = t
        if self.timing is not None:
            self.timing.t_idle = t

    def _credit(self):
        k = len(self.req) - self.limit
        if k < 0:
            return 0
        while self.free[k] is None:
            self._decode_one()
        return self.free[k]

    def _decode_one(self):
        """Decoder takes the oldest useful word whose take time is unknown."""
        req_i, arr, plane, idx = self.pending.pop(0)
        t = max(arr + 1, self.dec_free)
        cov = self.covers[plane]
        if idx == len(cov) - 1:
            n = self.count - sum(cov[:-1])
            self.dec_free = t + n + _RLC_PLANE_GAP       # final value, then the next count
            self.last_value = t + n
        else:
            self.dec_free = t + cov[idx]
            self.last_value = t + cov[idx]
        self.free[req_i] = t + 1

    def wants_from(self, t):
        """Earliest cycle >= t at which the engine wants to issue a read (inf: none)."""
        if not self.active:
            return _INF
        if self.mode == "raw":
            if len(self.req) >= self.total:
                return _INF
            k = len(self.req) - self.limit
            credit = self.req[k] + self.sim.port.latency + 1 if k >= 0 else 0
            return max(t, self.s + 1, credit)
        while self.switch_at is not None and t > self.switch_at:
            self._switch()
        if self.plane >= len(self.covers):
            return _INF
        if self.in_plane >= self.count:
            return self.switch_at + 1 if self.switch_at is not None else _INF
        c = max(t, self.plane_from, self._credit())
        if self.switch_at is not None and c > self.switch_at:
            return self.switch_at + 1
        return c

    def _switch(self):
        self.plane += 1
        self.in_plane = 0
        self.plane_from = self.switch_at + 1
        self.switch_at = None
        if self.plane >= len(self.covers):
            self._finish()

    def _finish(self):
        while self.pending:
            self._decode_one()
        last_arr = max(self.req) + self.sim.port.latency
        self._done(max(self.last_value + _LOAD_RLC_TAIL, last_arr + 2))

    def next_event(self, t):
        """A time the engine changes state without a DRAM grant (plane switch, end)."""
        if self.active and self.mode == "rlc" and self.switch_at is not None:
            return max(t, self.switch_at + 1)
        return _INF

    def fire(self, t):
        lat = self.sim.port.latency
        arr = t + lat
        self.req.append(t)
        if self.mode == "raw":
            self.free.append(arr + 1)
            if len(self.req) == self.total:
                self._done(arr + _LOAD_RAW_TAIL)
            return
        idx = self.in_plane
        self.in_plane += 1
        ncov = len(self.covers[self.plane])
        if idx < ncov:
            self.free.append(None)
            self.pending.append((len(self.req) - 1, arr, self.plane, idx))
            if idx == ncov - 1:
                self.switch_at = arr
        else:
            self.free.append(arr + 1)      # read past the last word: dropped on arrival


class _StoreEngine:
    """STORE: GLB psums -> bias, requantise, ReLU, RLC/raw -> DRAM (hw.dma.StoreEngine)."""

    def __init__(self, sim):
        self.sim = sim
        self.active = False
        self.idle_at = 0

    def start(self, s, desc, timing):
        self.s = s
        self.desc = desc
        self.timing = timing
        n_planes, count = desc["n_planes"], desc["plane_count"]
        self.glb_reads = n_planes * (count + desc["bias_en"]) if count else 0
        if n_planes == 0 or count == 0:
            self.active = False
            self.idle_at = s + 2
            timing.t_idle = s + 2
            self.words_total = 0
            return
        la = lanes(act_bits(self.sim.config.data_width))
        ends = []
        tensor = self.sim.find_tensor(desc["dram_addr"])
        base = 0
        for k in range(n_planes):
            if desc["rlc"]:
                addr = desc["dram_addr"] + k * desc["dram_pitch"]
                if tensor is not None and tensor.contains(addr) and tensor.values is not None:
                    e = _rlc_word_ends(tensor.plane(*tensor.plane_of(addr)))
                else:
                    e = _rlc_word_ends(np.ones(count, dtype=np.int16))
            else:
                e = np.minimum(np.arange(la - 1, count + la - 1, la), count - 1)
            ends.append(e + base)
            base += count
        self.ends = np.concatenate(ends).astype(np.int64)
        self.plane_first = [k * count for k in range(n_planes)]
        self.count = count
        self.bias = desc["bias_en"]
        self.words_total = len(self.ends)
        self.next_value = 0         # next value to accept at the encoder
        self.a_prev = s + _STORE_FIRST - 1
        self.enc_out = []           # cycle word w is in the encoder/packer output register
        self.take = []              # cycle word w moves into the DRAM write register
        self.w = 0                  # next word to write to DRAM
        self.active = True
        self.idle_at = _INF
        self._produce(block=-_INF)
        self.take.append(self.enc_out[0])
        if self.words_total > 1:
            self._produce(block=self.take[0])

    def _produce(self, block):
        """Accept the values of the next word (1/cycle, not before ``block``: the encoder
        waits while its output word is not taken); note when the word is complete."""
        w = len(self.enc_out)
        end = int(self.ends[w])
        v0 = self.next_value
        base0 = self.s + _STORE_FIRST + v0 + (v0 // self.count + 1) * self.bias
        a0 = max(self.a_prev + 1, base0, block)
        extra = (end // self.count) - (v0 // self.count) if self.bias else 0
        a_end = a0 + (end - v0) + extra
        self.a_prev = a_end
        self.next_value = end + 1
        self.enc_out.append(a_end + 1)

    def wants_from(self, t):
        if not self.active:
            return _INF
        return max(t, self.take[self.w] + 1)

    def fire(self, t):
        """Word ``w`` written to DRAM at cycle t; the write register takes the next word."""
        self.w += 1
        if self.w >= self.words_total:
            self.active = False
            self.idle_at = t + _STORE_TAIL + 1
            self.timing.t_idle = self.idle_at
            return
        self.take.append(max(self.enc_out[self.w], t))
        if len(self.enc_out) < self.words_total:
            self._produce(block=self.take[self.w])


# =========================================================================================
# PASS model
# =========================================================================================

@dataclass
class _PassGeom:
    n_tags: int
    pqs: int
    tag_steps: int           # filter-GIN transfers per tag: ceil(pqs / filter_lanes)
    p: int
    q: int
    S: int
    U: int
    F: int
    n_rows: int
    W_cols: int
    words_per_col: int
    n_chains: int
    chain_order: list        # chain index -> its tail's PE index
    chain_group: list        # chain index -> GON / psum-GIN group (psum_tag // psum_lanes)
    head_tag: list           # per chain: filter tag of its head
    head_pos: list           # per chain: position of its head's diagonal in a column burst
    first_pos: list          # per chain: the smallest ifmap tag of its PEs (first in a burst)
    load_filter: bool
    psum_in_en: bool
    chain_buffer: int        # psums a chain holds before its last iteration stalls


def _pass_time(g: _PassGeom, cost: np.ndarray,
               tag_lead: np.ndarray | None = None) -> tuple[int, dict]:
    """Busy cycles of one PASS (start pulse excluded) from the chain/window recurrence.

    ``cost[c, w]``: cycles chain ``c`` needs for window ``w`` (max over its PEs).
    ``tag_lead[t, w]``: cycles by which every PE with ifmap tag ``t`` finishes window ``w``
    ahead of its chain (:func:`_pe_leads`; None: no PE runs ahead). A row's last window
    releases the next row's first columns: in the RTL each PE takes them once it has
    fetched the last value of its row (``hw.pe``), and the GIN serves a column burst word
    by word (word ``j`` carries tag ``j // q``), so a PE that zero skipping has put ahead
    of its chain (on padding rows, say) takes its words early instead of holding the whole
    burst back until the slowest chain is done; and the first :data:`_ROW_SKID` values of
    every tag wait in the PE's skid buffer, so they go as soon as the GIN is free. (Found
    by tracing the GIN in Amaranth simulation: on a tiny R = 5, pad = 2 layer the model
    over-counted every row change by about 14 cycles, 8.2% of the layer; now 1.5%.)
    Returns (cycles, detail)."""
    NC, NW = cost.shape
    p, q, S, U, F = g.p, g.q, g.S, g.U, g.F
    GW = g.words_per_col
    # --- ifmap GIN: column server -------------------------------------------------------
    # Columns are global: row r, column x -> index r * W_cols + x.
    gin_end = {}              # column -> cycle its burst is complete
    gin_free = [_PASS_FIRST_WORD]   # next free GIN cycle

    gin_rate = WHAT_IF.get("ifmap_gin_per_cycle", 1)
    offsets = np.arange(GW) // gin_rate

    def gin_column(col, release):
        """Serve column ``col``'s burst from ``release`` on; returns the cycle of each of
        its ``GW`` words. ``release``: one cycle for the whole burst, or per word (the
        burst is served in order, ``gin_rate`` words per cycle, each word no earlier than
        its own release)."""
        if np.ndim(release) == 0:
            st = max(gin_free[0], release)
            times = st + offsets
        else:
            # t_j = max(t_{j-1} + 1/rate, release_j), t_0 = max(gin_free, release_0)
            step = np.arange(GW) / gin_rate
            times = step + np.maximum(gin_free[0], np.maximum.accumulate(release - step))
        gin_free[0] = math.floor(times[-1]) + 1
        gin_end[col] = gin_free[0]
        return times


    # --- chains ------------------------------------------------------------------------
    gon_w = WHAT_IF.get("gon_per_cycle", 1)
    fil_w = WHAT_IF.get("filter_gin_per_cycle")
    if g.load_filter:
        head_start = [_PASS_HEAD_START + ((tag + 1) * g.tag_steps if fil_w is None
                                          else math.ceil((tag + 1) * g.pqs / fil_w))
                      for tag in g.head_tag]
    else:
        head_start = [_PASS_HEAD_START for _ in range(NC)]
    A = np.array(head_start, dtype=np.float64)
    head_pos = np.array(g.head_pos)
    first_off = np.array(g.first_pos, dtype=np.float64) * q / WHAT_IF.get(
        "ifmap_gin_per_cycle", 1)
    gon_free = 0.0
    gon_end_last = 0.0
    row_release = float(_PASS_FIRST_WORD)   # first row: one cycle; later rows: per word
    col_start = {}
    A_hist = {}
    extra = _PSUM_IN_EXTRA if g.psum_in_en else 0
    Gs = [[] for _ in range(NC)]                 # GON start of every (chain, window)
    groups = []                                  # chains per GON transfer, in GON order
    for c in range(NC):
        if groups and g.chain_group[groups[-1][0]] == g.chain_group[c]:
            groups[-1].append(c)
        else:
            groups.append([c])
    for w in range(NW):
        row, f = divmod(w, F)
        if f == 0:
            # columns 0..S-1 of this row: a word goes once the PEs of its tag have read
            # their last row (row_release, per word), except the first _ROW_SKID values
            # of every tag, which wait in the PEs' skid buffers (only the GIN bounds them)
            for x in range(min(S, g.W_cols)):
                skid = row > 0 and (x + 1) * q <= _ROW_SKID
                col_start[(row, x)] = gin_column((row, x), -np.inf if skid else row_release)
        # new columns for window f >= 1: f*U + S - U .. f*U + S - 1 (written during f-1)
        if f >= 1:
            prevA = A_hist[w - 1]
            for j in range(U):
                x = (f - 1) * U + S + j
                if x >= g.W_cols:
                    break
                # A burst sends tag k's values at offset k*q; a chain's slots free at
                # prevA + (j*q+1)*p, so the chain whose first value comes earliest
                # relative to its window start bounds the burst's start.
                rel = float(np.max(prevA - first_off)) + (j * q + 1) * p
                col_start[(row, x)] = gin_column((row, x), rel)
        # availability of this window's last value for each chain's head
        last_col = f * U + S - 1
        cs = col_start[(row, last_col)]
        avail_last = cs[(head_pos + 1) * q - 1] + 1 + _GIN_TO_FETCH
        if f == 0:
            avail_first = col_start[(row, 0)][head_pos * q] + 1 + _GIN_TO_FETCH
            A = np.maximum(A, avail_first)
        A_hist[w] = A.copy()
        K = cost[:, w]
        LI = np.maximum(A + K - p, avail_last)
        Uend = LI + p - 1
        E = np.empty(NC)
        m_last = w * p + p - 1 - g.chain_buffer     # psum whose GON take frees a slot
        # One GON transfer takes a psum of every chain of a group (psum lanes), when the
        # last chain of the group has it.
        for grp in groups:
            G = max(gon_free, max(LI[c] for c in grp) + _GON_AFTER_LAST_ITER + extra)
            gon_free = G + math.ceil(p / gon_w)
            gon_end_last = gon_free - 1
            for c in grp:
                Gs[c].append(G)
                if m_last >= 0:
                    take = Gs[c][m_last // p] + (m_last % p) // gon_w
                    E[c] = max(Uend[c], take + 1)
                else:
                    E[c] = Uend[c]
        if f == F - 1:
            row_release = np.full(GW, float(np.max(LI)) + 1)
            if tag_lead is not None:
                row_release -= tag_lead[np.arange(GW) // q, w]
        A = E + 1
    total = int(gon_end_last) + _PASS_TAIL
    return total, {"gin_busy": len(gin_end) * GW}


def _chain_run(K: np.ndarray, p: int, decouple: int) -> tuple[np.ndarray, np.ndarray]:
    """The recurrence behind :func:`_chain_cost` and :func:`_pe_leads`: PEs with costs
    ``K[pe, w]`` that may run at most ``ceil(decouple / p)`` windows ahead of the chain.
    Returns ``(T, lead)``: ``T[w]`` the cycle the chain (its slowest PE) finishes window
    ``w``, ``lead[pe, w]`` how many cycles earlier each PE finishes it."""
    n, NW = K.shape
    lag = max(1, math.ceil(decouple / p))
    D = np.zeros(n)
    T = np.zeros(NW)
    lead = np.zeros((n, NW))
    for w in range(NW):
        floor_ = T[w - lag] if w >= lag else 0.0
        D = np.maximum(D, floor_) + K[:, w]
        T[w] = D.max()
        lead[:, w] = T[w] - D
    return T, lead


def _chain_cost(K: np.ndarray, p: int, decouple: int) -> np.ndarray:
    """Effective per-window cost of a psum chain from its PEs' costs ``K[pe, window]``.

    The PEs of a chain are decoupled by their output FIFOs (``decouple`` usable entries,
    ``config.psum_fifo_depth - 1``): a PE can run about ``ceil(decouple / p)`` windows ahead
    of the slowest PE of its chain, never more (a PE whose psums cannot leave stalls in its
    last iteration). With equal costs (dense data) this is just the cost; with zero
    skipping it lies between the sum of per-window maxima (large ``p``) and the maximum of
    per-PE sums (small ``p``)."""
    if K.shape[0] == 1 or (K == K[0]).all():
        return K[0].copy()
    T, _ = _chain_run(K, p, decouple)
    out = np.diff(np.concatenate(([0.0], T)))
    return np.rint(out).astype(np.int64)


def _pe_leads(K: np.ndarray, p: int, decouple: int, min_cost: float) -> np.ndarray:
    """Cycles by which each PE of a chain finishes window ``w`` ahead of the chain
    (``lead[pe, w] >= 0``), from :func:`_chain_run` with each PE's cost ``K[pe, w]``
    raised to ``min_cost`` (a PE cannot run faster than the ifmap GIN feeds it: ``U``
    columns of a burst per window). All zero for equal costs."""
    if K.shape[0] == 1 or (K == K[0]).all():
        return np.zeros(K.shape)
    return _chain_run(np.maximum(K, min_cost), p, decouple)[1]


# =========================================================================================
# Machine: controller + engines + DRAM
# =========================================================================================

class _Machine:
    def __init__(self, config: AcceleratorConfig, dram: DramModel, words, cmd_addr,
                 tensors=(), mappings=()):
        self.config = config
        self.port = _DramPort(dram)
        self.cmds = _parse_commands(words, cmd_addr)
        self.words = len(words)
        self.cmd_addr = cmd_addr
        self.tensors = list(tensors)
        self.mappings = list(mappings)
        self.load = _LoadEngine(self)
        self.store = _StoreEngine(self)
        self.pass_idle = 0
        self.roles = {}
        self.counts = dict.fromkeys(
            ["macs", "macs_gated", "glb_reads", "glb_writes", "noc_filter_gin",
             "noc_ifmap_gin", "noc_psum_gin", "noc_gon", "spad_filter_reads",
             "spad_filter_writes", "spad_ifmap_reads", "spad_ifmap_writes",
             "spad_psum_reads", "spad_psum_writes", "dram_writes", "dram_reads_data",
             "pass_cycles", "load_cycles", "store_cycles"], 0)
        self.glb_slots = {}        # GLB element address of a plane -> (tensor, n, c)
        self.timeline = []
        self._pass_cache = {}

    def find_tensor(self, addr):
        for t in self.tensors:
            if t.contains(addr):
                return t
        return None

    # ---------------------------------------------------------------------------------
    def run(self):
        port = self.port
        lat = port.latency
        nw = self.words + _FETCH_DEPTH + 64        # words the fetcher may read (past END)
        R = []                                     # request cycle of word j
        A = []                                     # readable cycle of word j
        C = []                                     # consumed cycle of word j
        fetching = True
        t = 1
        # controller state
        k = 0                                      # command index
        j = 0                                      # next word to consume (relative)
        state = "HEADER"
        cmd = None
        remaining = 0
        timings = []
        stop_at = None
        busy_until = [0, 0, 0]                    # by Engine value
        cur = None
        while True:
            # ---------------- engines' idle times -----------------------------------
            l_want = self.load.wants_from(t)       # may finish an RLC load (plane switch)
            busy_until[0] = self.load.idle_at
            busy_until[1] = self.store.idle_at
            busy_until[2] = self.pass_idle
            # ---------------- next candidate cycle ----------------------------------
            cands = []
            # controller
            if state in ("HEADER", "PAYLOAD"):
                if state == "PAYLOAD" and remaining == 0:
                    cands.append(t)
                elif j < len(A):
                    cands.append(max(t, A[j]))
            elif state == "WAIT":
                cands.append(max(t, self._wait_done(cmd, busy_until)))
            elif state == "STOP":
                cands.append(t)
            # fetcher
            f_want = _INF
            if fetching and len(R) < nw:
                jj = len(R)
                if jj < _FETCH_DEPTH:
                    credit = 1
                elif len(C) > jj - _FETCH_DEPTH:
                    credit = C[jj - _FETCH_DEPTH] + 1
                else:
                    credit = _INF
                f_want = max(t, credit)
            l_want = self.load.wants_from(t)
            s_want = self.store.wants_from(t)
            r_want = min(f_want, l_want)
            if r_want < _INF:
                cands.append(port.token_time(r_want))
            if s_want < _INF:
                cands.append(port.token_time(s_want))
            cands.append(self.load.next_event(t))
            if not cands:
                raise RuntimeError("performance model deadlock (malformed command list?)")
            if min(cands) == _INF:
                ld = self.load
                raise RuntimeError(f"model deadlock at {t}: state {state} load {ld.active} "
                                   f"{ld.__dict__.get('mode')} plane {ld.__dict__.get('plane')} "
                                   f"in_plane {ld.__dict__.get('in_plane')} switch "
                                   f"{ld.__dict__.get('switch_at')} req {len(ld.__dict__.get('req', []))}")
            t = int(min(cands))
            # ---------------- DRAM port at cycle t ----------------------------------
            tok_ok = port.token_time(t) == t
            f_now = f_want <= t
            l_want = self.load.wants_from(t)
            l_now = l_want <= t
            s_now = s_want <= t
            read_req = f_now or l_now
            if tok_ok and (read_req or s_now):
                pick_write = s_now and (not read_req or port.prefer_write)
                if pick_write:
                    port.fire(t, True)
                    self.store.fire(t)
                    self.counts["dram_writes"] += 1
                elif f_now:
                    port.fire(t, False)
                    R.append(t)
                    A.append(t + lat + _CMDQ_LATENCY)
                else:
                    port.fire(t, False)
                    self.load.fire(t)
                    self.counts["dram_reads_data"] += 1
            # ---------------- controller at cycle t ---------------------------------
            if state == "HEADER":
                if j < len(A) and A[j] <= t:
                    C.append(t)
                    j += 1
                    cmd = self.cmds[k] if k < len(self.cmds) else None
                    if cmd is None:
                        raise RuntimeError("command list has no END")
                    cur = CommandTiming(k, cmd.opcode.name, cmd.engine.name, cmd.wait,
                                        t_header=t)
                    state = "WAIT"
                    t += 1
                    continue
            elif state == "WAIT":
                if self._wait_done(cmd, busy_until) <= t:
                    if cmd.opcode == Opcode.END:
                        state = "STOP"
                        stop_at = t + 1
                    else:
                        state = "PAYLOAD"
                        remaining = len(cmd.payload)
                    t += 1
                    continue
            elif state == "PAYLOAD":
                if remaining == 0:
                    self._start(cmd, t, cur)
                    timings.append(cur)
                    k += 1
                    state = "HEADER"
                    t += 1
                    continue
                if j < len(A) and A[j] <= t:
                    C.append(t)
                    j += 1
                    remaining -= 1
                    t += 1
                    continue
            elif state == "STOP":
                # fetching drops after the first STOP cycle; drain FIFO and responses
                fetching = False
                td = stop_at - 1
                for jj in range(len(C), len(R)):
                    td = max(td + 1, A[jj])
                end = max(stop_at + 1, td + 1, max(busy_until))
                cur.t_start = stop_at - 1
                cur.t_idle = end
                timings.append(cur)
                self.end = end
                break
            t += 1
        self.timings = timings
        self.fetched = len(R)
        return self

    @staticmethod
    def _wait_done(cmd, busy_until):
        """First cycle at which the engines ``cmd`` waits for are idle (``WAIT`` state:
        the header's wait mask, plus the target engine of a RUN; END waits for all)."""
        eng = cmd.wait_on
        if eng is None:
            if cmd.opcode == Opcode.END:
                eng = (0, 1, 2)
            else:
                eng = tuple(e.value for e in Engine if cmd.wait & (1 << e.value))
                if cmd.opcode == Opcode.RUN and cmd.engine.value not in eng:
                    eng += (cmd.engine.value,)
            cmd.wait_on = eng
        return max([busy_until[e] for e in eng], default=0)

    # ---------------------------------------------------------------------------------
    def _start(self, cmd, s, cur):
        cur.t_start = s
        if cmd.opcode == Opcode.ROLES:
            self._roles(cmd.payload)
            cur.t_idle = s + 1
            return
        if cmd.opcode == Opcode.NOP:
            cur.t_idle = s + 1
            return
        if cmd.engine == Engine.LOAD:
            d = _decode("load", cmd.payload)
            cur.t_idle = -1
            self.load.start(s, d, cur)
            self.counts["glb_writes"] += self.load.glb_writes
            self._note_load(d)
            cur.detail = {"mode": "raw" if d["mode"] in (0, LoadMode.RAW) else "rlc"}
        elif cmd.engine == Engine.STORE:
            d = _decode("store", cmd.payload)
            cur.t_idle = -1
            self.store.start(s, d, cur)
            self.counts["glb_reads"] += self.store.glb_reads
            cur.detail = {"words": self.store.words_total}
        else:
            d = _decode("pass", cmd.payload)
            dur, detail = self._pass(d)
            self.pass_idle = s + dur + 1
            cur.t_idle = s + dur + 1
            cur.detail = detail
            self.counts["pass_cycles"] += dur

    def _roles(self, payload):
        for w in payload:
            r = _decode("role", [w])
            self.roles[r["pe"]] = r

    def _note_load(self, d):
        """Remember which tensor plane lands at which GLB element (for zero skipping)."""
        la = lanes(act_bits(self.config.data_width))
        tensor = self.find_tensor(d["dram_addr"])
        if tensor is None:
            return
        st = tensor.store
        if d["mode"] in (0, LoadMode.RAW):
            n_planes = max(1, (d["n_words"]) // max(1, st.slot_words))
            for k in range(n_planes):
                addr = d["dram_addr"] + k * st.slot_words
                if tensor.contains(addr):
                    self.glb_slots[d["glb_word"] * la + k * st.slot_words * la] = (
                        tensor, *tensor.plane_of(addr))
        else:
            for k in range(d["n_planes"]):
                addr = d["dram_addr"] + k * d["dram_pitch"]
                if tensor.contains(addr):
                    self.glb_slots[d["glb_elem"] + k * d["glb_pitch"]] = (
                        tensor, *tensor.plane_of(addr))

    # ---------------------------------------------------------------------------------
    def _pass(self, d):
        c = self.config
        fil, ifm, pin, pout = d["filter"], d["ifmap"], d["psum_in"], d["psum_out"]
        p, q, S, U, F, n_rows = d["p"], d["q"], d["S"], d["U"], d["F"], d["n_rows"]
        load_filter, psum_in_en = bool(d["load_filter"]), bool(d["psum_in_en"])
        active = [r for r in self.roles.values() if r["active"]]
        n_active = len(active)
        pqs = p * q * S
        # ---- exact counts ----------------------------------------------------------
        f_steps = _agu_steps(fil) if load_filter else 0
        i_steps = _agu_steps(ifm)
        i_inb = _agu_inbounds(ifm)
        p_steps = _agu_steps(pin) if psum_in_en else 0
        o_steps = _agu_steps(pout)
        cnt = self.counts
        cnt["glb_reads"] += f_steps + i_inb + p_steps
        cnt["glb_writes"] += o_steps
        cnt["noc_filter_gin"] += f_steps
        cnt["noc_ifmap_gin"] += i_steps
        cnt["noc_psum_gin"] += p_steps
        cnt["noc_gon"] += o_steps
        W_cols = (F - 1) * U + S
        work = n_active * pqs * F * n_rows
        cnt["spad_filter_writes"] += n_active * pqs if load_filter else 0
        cnt["spad_ifmap_writes"] += n_active * n_rows * W_cols * q
        cnt["spad_ifmap_reads"] += n_active * n_rows * F * q * S
        # ---- geometry ----------------------------------------------------------------
        tails = sorted((r for r in active if r["tail"]), key=lambda r: r["psum_tag"])
        chains = self._chains(active)
        chain_order, chain_group = [], []
        head_tag, head_pos, first_pos = [], [], []
        counts_if = ifm["count"]
        words_per_col = counts_if[3] * counts_if[4] * counts_if[5]
        for tl in tails:
            hd = chains[tl["pe"]][-1]
            chain_order.append(tl["pe"])
            chain_group.append(tl["psum_tag"] // c.psum_lanes)
            head_tag.append(hd["filter_tag"])
            head_pos.append(hd["ifmap_tag"])
            first_pos.append(min(r["ifmap_tag"] for r in chains[tl["pe"]]))
        # ifmap tags are numbered in burst order (set-major, then diagonal)
        tag_steps = math.ceil(pqs / c.filter_lanes)
        geom = _PassGeom(n_tags=f_steps // max(1, tag_steps) if load_filter else 0, pqs=pqs,
                         tag_steps=tag_steps, p=p,
                         q=q, S=S, U=U, F=F, n_rows=n_rows, W_cols=W_cols,
                         words_per_col=words_per_col, n_chains=len(tails),
                         chain_order=chain_order, chain_group=chain_group,
                         head_tag=head_tag, head_pos=head_pos, first_pos=first_pos,
                         load_filter=load_filter, psum_in_en=psum_in_en,
                         chain_buffer=c.psum_fifo_depth - 1 + _CHAIN_BUFFER_EXTRA)
        # ---- per-PE zero statistics -> chain window costs and gated MACs ------------
        cost, gated, skipped_iters, tag_lead = self._window_costs(d, chains, chain_order,
                                                                  geom)
        cnt["macs_gated"] += gated
        cnt["macs"] += work - gated
        cnt["spad_filter_reads"] += work - gated
        iters_total = n_active * n_rows * F * q * S
        # psum spad: issues not on the first iteration read, not on the last write
        issued_iters = iters_total - skipped_iters
        cnt["spad_psum_reads"] += p * (issued_iters - n_active * n_rows * F)
        cnt["spad_psum_writes"] += p * (issued_iters - n_active * n_rows * F)
        cnt["pe_work"] = cnt.get("pe_work", 0) + work
        key = (tuple(cost.ravel().tolist()) if cost.size < 4096 else cost.tobytes(),
               cost.shape, tuple(sorted(geom.__dict__.items(), key=lambda x: x[0]).__repr__()))
        key = key + (tuple(sorted(WHAT_IF.items())),
                     None if tag_lead is None else tag_lead.tobytes())
        res = self._pass_cache.get(key)
        if res is None:
            res = _pass_time(geom, cost, tag_lead)
            self._pass_cache[key] = res
        dur, detail = res
        detail = dict(detail, p=p, q=q, S=S, F=F, n_rows=n_rows, chains=len(tails),
                      work=work)
        return dur, detail

    def _chains(self, active) -> dict:
        """Psum chains: tail PE index -> the chain's active role dicts from the tail up
        its column to the head (several chains may share a column: stacked filter
        groups)."""
        cols = self.config.pe_cols
        by_pe = {r["pe"]: r for r in active}
        chains = {}
        for r in active:
            if not r["tail"]:
                continue
            chain, pe = [r], r["pe"]
            while not by_pe[pe]["head"]:
                pe += cols
                chain.append(by_pe[pe])
            chains[r["pe"]] = chain
        return chains

    def _window_costs(self, d, chains_pe, chain_order, g):
        """Per chain (``chains_pe``: tail PE -> its PEs, :meth:`_chains`) and window: cycles
        (max over the chain's PEs); gated MACs; skipped (s, qi) iterations. Uses the ifmap
        planes that LOAD commands put in the GLB."""
        c = self.config
        p, q, S, U, F, n_rows = g.p, g.q, g.S, g.U, g.F, g.n_rows
        NW = n_rows * F
        NC = len(chain_order)
        pqs = g.pqs
        ifm = d["ifmap"]
        counts = ifm["count"]
        # stride reconstruction: levels (n, fold, col, v, h, qi)
        st_addr = [_signed(s, 23) for s in _agu_strides(ifm, "addr")]
        st_y = [_signed(s, 16) for s in _agu_strides(ifm, "y")]
        base_addr = ifm["base_addr"]
        if base_addr >= 1 << 21:
            base_addr -= 1 << 22
        base_y, base_x = _signed(ifm["base_y"], 16), _signed(ifm["base_x"], 16)
        H, W = ifm["H"], ifm["W"]
        nbn, n_fold, Wc, r_sets, n_h, qq = counts
        # zero mask of each (n, v, qi) stream: plane from the GLB slot at its address
        # plane element address for (n, v, qi) at y = base_y, x = base_x:
        # addr = base + n*s0 + v*s3 + qi*s5 (+ y, x offsets); plane start = addr - (y*W + x)
        zero_planes = {}

        def plane_zero(n, v, qi):
            key = (n, v, qi)
            if key not in zero_planes:
                start = base_addr + n * st_addr[0] + v * st_addr[3] + qi * st_addr[5] \
                    - (base_y * W + base_x)
                ent = self.glb_slots.get(start)
                if ent is None:
                    zero_planes[key] = np.ones((H, W), dtype=bool)   # reset GLB: zeros
                else:
                    tensor, nn, cc = ent
                    if tensor.values is None:
                        zero_planes[key] = np.zeros((H, W), dtype=bool)
                    else:
                        zero_planes[key] = (tensor.values[nn, cc] == 0)
            return zero_planes[key]

        # padded zero rows for a PE: y = base_y + n*0 + fold*st_y[1] + h*st_y[4]
        # x = base_x + col
        xs = base_x + np.arange(Wc)
        xin = (xs >= 0) & (xs < W)
        cost = np.zeros((NC, NW), dtype=np.int64)
        gated_total = 0
        skipped_total = 0
        n_tags = math.ceil(g.words_per_col / q)
        tag_lead = np.full((n_tags, NW), np.inf)
        gin_window = U * g.words_per_col / WHAT_IF.get("ifmap_gin_per_cycle", 1)
        for ci, tail_pe in enumerate(chain_order):
            pes = chains_pe[tail_pe]
            pes_cost = []
            for r in pes:
                tag = r["ifmap_tag"]
                v, h = divmod(tag, n_h)
                zrow = np.zeros((nbn, n_fold, q, Wc), dtype=bool)
                for n in range(nbn):
                    for fo in range(n_fold):
                        y = base_y + fo * st_y[1] + h * st_y[4] + n * st_y[0]
                        for qi in range(q):
                            if 0 <= y < H:
                                pz = plane_zero(n, v, qi)
                                row = np.ones(Wc, dtype=bool)
                                row[xin] = pz[y, xs[xin]]
                                zrow[n, fo, qi] = row
                            else:
                                zrow[n, fo, qi] = True
                # windows: x stream value k = s*q + qi at col f*U + s
                idx = (np.arange(F)[:, None] * U + np.arange(S)[None, :])     # (F, S)
                zw = zrow[:, :, :, idx]              # (n, fold, q, F, S)
                zw = zw.transpose(0, 1, 3, 4, 2).reshape(nbn * n_fold, F, S * q)
                zall = zw.sum(axis=2)
                if q * S > 2:
                    zmid = zall - zw[:, :, 0] - zw[:, :, -1]
                else:
                    zmid = np.zeros_like(zall)
                zall = zall.reshape(-1)
                zmid = zmid.reshape(-1)
                if c.zero_gating:
                    gated_total += int(p * zall.sum())
                if c.zero_gating and not c.lockstep_rows:
                    pe_cost = pqs - (p - 1) * zmid
                    skipped_total += int(zmid.sum())
                else:                # lock-step rows gate zero MACs but never skip them
                    pe_cost = np.full(NW, pqs)
                pes_cost.append(pe_cost)
            K = np.array(pes_cost)
            cost[ci] = _chain_cost(K, p, c.psum_fifo_depth - 1)
            lead = _pe_leads(K, p, c.psum_fifo_depth - 1, gin_window)
            for r, ld in zip(pes, lead):
                if r["ifmap_tag"] < n_tags:
                    tag_lead[r["ifmap_tag"]] = np.minimum(tag_lead[r["ifmap_tag"]], ld)
        tag_lead[np.isinf(tag_lead)] = 0.0
        # every active PE is in exactly one chain, so the gated MACs are complete
        return cost, gated_total, skipped_total, (tag_lead if tag_lead.any() else None)


# =========================================================================================
# Public API
# =========================================================================================

def predict_program(config: AcceleratorConfig, words, cmd_addr, *, dram=DramModel(),
                    tensors=(), mappings=()) -> LayerPrediction:
    """Execute a compiled command list (``words`` at DRAM ``cmd_addr``, END included) on
    the model. ``tensors``: ``(PlaneStore, values or None)`` pairs for the ifmaps/ofmaps in
    DRAM (values give RLC sizes and zero skipping)."""
    m = _Machine(config, dram, list(words), cmd_addr,
                 [_Tensor(s, v) for s, v in tensors], mappings)
    m.run()
    return _result(m, sum(mp.layer.macs for mp in mappings), mappings)


def _result(m: _Machine, useful, mappings):
    # resolve engine idle times for LOAD/STORE timings
    cycles = int(m.end)
    cnt = dict(m.counts)
    # intervals
    ivs = []
    for tm in m.timings:
        if tm.opcode != "RUN":
            continue
        ivs.append((tm.engine, tm.t_start + 1, tm.t_idle))
    cnt["cycles"] = cycles
    cnt["dram_reads_commands"] = m.fetched
    cnt["dram_reads"] = m.fetched + cnt["dram_reads_data"]
    phases = {}
    # sweep
    events = []
    for e, a, b in ivs:
        if b > a:
            events.append((a, 1, e))
            events.append((b, -1, e))
    events.sort(key=lambda x: (x[0], x[1]))
    running = {}
    t_prev = 1
    busy = 0
    per_engine = {"LOAD": 0, "STORE": 0, "PASS": 0}
    for t, kind, e in events:
        if t > t_prev:
            label = "+".join(sorted(k.lower() for k, v in running.items() if v)) or "control"
            phases[label] = phases.get(label, 0) + t - t_prev
            if any(running.values()):
                busy += t - t_prev
            for k, v in running.items():
                if v:
                    per_engine[k] += t - t_prev
            t_prev = t
        running[e] = running.get(e, 0) + kind
    if cycles + 1 > t_prev:
        phases["control"] = phases.get("control", 0) + cycles + 1 - t_prev
    cnt["busy_cycles"] = busy
    cnt["load_cycles"] = per_engine["LOAD"]
    cnt["store_cycles"] = per_engine["STORE"]
    cnt["pass_cycles"] = per_engine["PASS"]
    return LayerPrediction(cycles=cycles, counts=cnt, phases=phases, commands=m.timings,
                           useful_macs=useful, num_pes=m.config.num_pes,
                           mappings=list(mappings))


def _synth(shape, zero_fraction, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 100, size=shape).astype(np.int16)
    if zero_fraction:
        x[rng.random(shape) < zero_fraction] = 0
    return x


def predict_network(config: AcceleratorConfig, x, layers, *, dram=DramModel(),
                    ifmap_rlc=False, ofmap_rlc="auto", ifmap_zero_fraction=0.0,
                    ofmap_zero_fraction=None, activations=None, mappings=None,
                    seed=0) -> NetworkPrediction:
    """Predict a network run as ONE command list (as ``Accelerator.run_network``).

    ``x``: the input (N, C, H, W) array, or its shape (then ``ifmap_zero_fraction`` of its
    values are taken as zeros). ``layers``: ``sw_driver.accelerator.ConvLayer`` objects
    (only shapes, stride, padding, groups, relu matter; weights may be any array of the
    right shape). ``activations``: optional list of every layer's real ofmap (e.g. from
    ``Accelerator.run_network`` or the golden model) for exact RLC sizes and zero skipping;
    otherwise ``ofmap_zero_fraction`` (default: 0.5 after ReLU, 0 otherwise) is used.
    ``mappings``: optional list of :class:`~sw_driver.mapper.Mapping` to use instead of the
    mapper's. A first layer that does not fit the GLB whole is modelled in row strips,
    as the driver runs it (``sw_driver.strips``). Raises ``ValueError`` like the driver for an
    unmappable layer.
    """
    from sw_driver.compiler import DramAllocator, PlaneStore, compile_strips
    cfg = config
    if isinstance(x, tuple):
        shape = x
        xv = _synth(shape, ifmap_zero_fraction, seed)
    else:
        xv = np.asarray(x)
        shape = xv.shape
    from sw_driver.strips import plan_network, strip_inputs
    dram_alloc = DramAllocator(base=16)
    plans = plan_network(cfg, shape, layers, dram_rate=dram.rate_num / dram.rate_den,
                         mappings=mappings)
    tensors, commands, mps = [], [], []
    inputs = None
    for li, (layer, (padded, strips)) in enumerate(zip(layers, plans)):
        if li == 0:
            tensors = strip_inputs(dram_alloc, xv, layer, (padded, strips), rlc=ifmap_rlc,
                                   data_width=cfg.data_width)
            inputs = [store for store, _ in tensors]
        w = np.asarray(layer.weights)
        rlc = bool(layer.relu) if ofmap_rlc == "auto" else bool(ofmap_rlc)
        Lw = strips[0].mapping.layer
        full = (Lw.N, Lw.M, strips[-1].e1, Lw.F)
        if activations is not None:
            yv = np.asarray(activations[li])
        else:
            zf = ofmap_zero_fraction
            if zf is None:
                zf = 0.5 if layer.relu else 0.0
            yv = _synth(full, zf, seed + li + 1)
        outs = [PlaneStore.allocate(dram_alloc, L.N, L.M, L.E, L.F, rlc=rlc,
                                    data_width=cfg.data_width)
                for L in (st.mapping.layer for st in strips)]
        progs = compile_strips([st.mapping for st in strips], dram_alloc,
                               weights=np.zeros(w.shape, dtype=np.int64), bias=layer.bias,
                               ifmaps=inputs, ofmaps=outs,
                               product_shift=layer.product_shift,
                               output_shift=layer.output_shift, relu=layer.relu)
        for st, prog, out in zip(strips, progs, outs):
            mps.append(st.mapping)
            commands += prog.commands
            tensors.append((out, st.ofmap(yv) if len(strips) > 1 else yv))
        inputs = [outs[-1]]
    from sw_driver.compiler import cmd_words
    words = list(commands) + cmd_words(Opcode.END)
    cmd_addr = dram_alloc.alloc(len(words))
    m = _Machine(cfg, dram, words, cmd_addr, [_Tensor(s, v) for s, v in tensors], mps)
    m.run()
    base = _result(m, sum(mp.layer.macs for mp in mps), mps)
    return NetworkPrediction(cycles=base.cycles, counts=base.counts, phases=base.phases,
                             commands=base.commands, useful_macs=base.useful_macs,
                             num_pes=base.num_pes, mappings=mps)


def predict_layer(config: AcceleratorConfig, layer: LayerShape, *, dram=DramModel(),
                  ifmap=None, ifmap_zero_fraction=0.0, ofmap=None, ofmap_zero_fraction=None,
                  ifmap_rlc=False, ofmap_rlc=None, relu=False, bias=False, weights=None,
                  mapping=None, seed=0) -> LayerPrediction:
    """Predict one CONV layer run alone (as ``Accelerator.conv2d``).

    Parameters
    ----------
    layer : LayerShape
    dram : DramModel
        The memory the RTL simulation uses (``DramModel.eyeriss()``: 0.3 words/cycle).
    ifmap : (N, C, H, W) int array or None
        The real input (exact zero skipping, RLC sizes); else a synthetic one with
        ``ifmap_zero_fraction`` zeros (padding zeros are always exact).
    ofmap : (N, M, E, F) int array or None
        The real output (exact RLC store sizes); else ``ofmap_zero_fraction`` zeros
        (default 0.5 with ``relu``, else 0).
    ifmap_rlc, ofmap_rlc : bool
        DRAM formats (``ofmap_rlc=None``: RLC when ``relu``, as the driver's "auto").
    relu, bias : bool
        Whether the layer has ReLU / a bias (bias adds one load and a cycle per plane).
    weights : optional (M, C/groups, R, S) array (only its shape matters).
    mapping : Mapping, list of sw_driver.strips.Strip, or None
        Use this mapping (or this row-strip plan) instead of the driver's.

    Returns
    -------
    LayerPrediction
    """
    from sw_driver.accelerator import ConvLayer
    L = layer
    w = np.zeros((L.M, L.Cg, L.R, L.S), dtype=np.int16) if weights is None else weights
    b = np.zeros(L.M, dtype=np.int64) if bias else None
    x = ifmap if ifmap is not None else (L.N, L.C, L.H, L.W)
    rlc = relu if ofmap_rlc is None else ofmap_rlc
    acts = [ofmap] if ofmap is not None else None
    return predict_network(config, x, [ConvLayer(w, b, L.U, L.padding, L.groups, relu=relu)],
                           dram=dram, ifmap_rlc=ifmap_rlc, ofmap_rlc=rlc,
                           ifmap_zero_fraction=ifmap_zero_fraction,
                           ofmap_zero_fraction=ofmap_zero_fraction, activations=acts,
                           mappings=[mapping] if mapping is not None else None, seed=seed)
