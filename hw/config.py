"""Generator parameters of the accelerator and its named presets.

Every hardware block takes an :class:`AcceleratorConfig`; nothing else parameterises the
hardware. Parameter names and the ``eyeriss`` values follow DESIGN.md section 4, which takes
them from Chen et al., "Eyeriss", IEEE JSSC 52(1), 2017, Table I and section IV.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

__all__ = ["AcceleratorConfig", "PRESETS", "preset", "parse_overrides"]


# (min, max) inclusive, per integer parameter. Bounds are what the hardware can build and
# the driver can map, not what fits on a given FPGA.
_RANGES = {
    "pe_rows": (1, 64),
    "pe_cols": (1, 64),
    "data_width": (4, 32),
    "psum_width": (8, 64),
    "filter_spad_depth": (1, 4096),
    "ifmap_spad_depth": (1, 1024),
    "psum_spad_depth": (1, 1024),
    "glb_bank_words": (16, 1 << 20),
    "glb_banks": (1, 256),
    "dram_width": (64, 64),
    "filter_lanes": (1, 4),
    "psum_lanes": (1, 4),
    "psum_fifo_depth": (2, 256),
}


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every generator parameter of the accelerator (DESIGN.md section 4).

    Attributes
    ----------
    pe_rows, pe_cols : int
        Physical PE array (Eyeriss: 12 x 14, JSSC section IV).
    data_width : int
        Bits of ifmap, filter and ofmap values (two's complement).
    psum_width : int
        Bits of the accumulator and of psums spilled to the GLB; accumulation wraps modulo
        ``2**psum_width`` (DESIGN.md section 2). Must be at least ``data_width``.
    filter_spad_depth, ifmap_spad_depth, psum_spad_depth : int
        Words per PE scratchpad (Eyeriss: 224, 12, 24 words).
    glb_bank_words, glb_banks : int
        Global buffer geometry: ``glb_banks`` banks of ``glb_bank_words`` 64-bit words
        (Eyeriss: 27 banks of 512 words, 108 KB).
    dram_width : int
        Bits of the DRAM port (64; the RLC word is 64 bits, DESIGN.md section 3).
    rlc, relu : bool
        Include the RLC codec on the DRAM path and the ReLU unit on the ofmap path.
    zero_gating : bool
        Skip spad reads and MACs whose ifmap value is zero (Eyeriss JSSC section IV-C).
    filter_lanes : int
        Filter values per filter-GIN transfer: 1, or a whole 64-bit GLB word
        (``64 // act_bits(data_width)``: 4 for data up to 16 bits, 2 above). With more than
        one lane each PE's filter spad is split into that many banks written in parallel,
        so loading a pass's filters takes a quarter of the cycles (the analytical model put
        this at 31.50 -> 28.2 M cycles for AlexNet CONV1-5 at batch 4 on ``eyeriss``).
        ``filter_spad_depth`` must be a multiple of it.
    psum_lanes : int
        Psums per psum-GIN and GON transfer: 1, or a whole 64-bit GLB word
        (``64 // psum_bits(psum_width)``: 4 for psums up to 16 bits, 2 up to 32, 1 above).
        With ``L`` lanes the chains of a pass are numbered in groups of ``L`` (psum tag
        ``t*e4 + j``, ``e4`` = ``e`` rounded up to a multiple of ``L``); one GON transfer
        takes the next psum of every tail of a group and one psum-GIN transfer feeds every
        head of a group, and the GLB holds psums ``[n][m][fold][j // L][f][j % L]``.
        The default, 2, is a whole word of the default 32-bit psums; the analytical model
        put the GON and psum GIN at 4 psums per cycle at 28.20 -> 21.65 M cycles for AlexNet
        CONV1-5 at batch 4 on ``eyeriss``.
    psum_fifo_depth : int
        Entries (``psum_width`` bits each) of every PE's output FIFO, which holds the PE's
        finished psums of a window until the psum from its chain neighbour (or the psum
        GIN) arrives to be added; ``psum_fifo_depth - 1`` are usable. It decouples the PEs
        of a psum chain, whose windows cost different cycles when zero skipping
        (``zero_gating``) skips different ifmap zeros in each PE, and the chain's tail from
        the GON: with ``p`` filters per PE a PE can run about ``(psum_fifo_depth - 1) / p``
        windows ahead of its neighbours. 7 keeps a chain nearly in lock step, each window
        as slow as its slowest PE. The ``eyeriss`` preset uses 49 (three windows of
        ``p = 16``): AlexNet CONV2 at batch 4 (40% ifmap zeros) went from 6,588,512 to
        5,693,128 cycles in RTL, 80.9% -> 93.7% of ideal. The ifmap multicast still ties a
        PE to the PEs of its diagonal (a ``q*S``-slot ifmap spad), so layers with little
        spad slack gain less.
    lockstep_rows : bool
        Run the PEs of each array row in lock step with one shared sequencer
        (:class:`hw.pe_row.LockstepPERow`) instead of one per PE: the same results, about a
        third less logic per PE, but a row steps at the pace of its slowest PE and never
        skips zero iterations (zero gating still holds the operands and counts the gated
        MACs). The mapper then keeps ``p`` to at most
        ``(psum_fifo_depth - 1) // 2`` (``sw_driver.mapper.p_limit``), so
        ``psum_fifo_depth`` must be at least 3. For FPGAs (README, FPGA section).
    psum_spad_bram : bool
        Ask the FPGA tools to put every PE's psum spad in block RAM (Yosys attribute
        ``ram_style = "block"``) instead of distributed LUT RAM: on the ECP5 one more DP16KD
        per PE and about 60 fewer LUT4s per PE (README, FPGA section). No effect on results
        or cycles, nor on other flows.

    Raises
    ------
    ValueError
        On construction, if a parameter is out of range; the message names the parameter
        and its allowed range.
    """

    pe_rows: int = 12
    pe_cols: int = 14
    data_width: int = 16
    psum_width: int = 32
    filter_spad_depth: int = 224
    ifmap_spad_depth: int = 12
    psum_spad_depth: int = 24
    glb_bank_words: int = 512
    glb_banks: int = 27
    dram_width: int = 64
    rlc: bool = True
    relu: bool = True
    zero_gating: bool = True
    filter_lanes: int = 4
    psum_lanes: int = 2
    psum_fifo_depth: int = 7
    lockstep_rows: bool = False
    psum_spad_bram: bool = False

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a bool (true/false), got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
            lo, hi = _RANGES[f.name]
            if not lo <= value <= hi:
                raise ValueError(f"{f.name} must be in the range {lo}..{hi}, got {value}")
        if self.psum_width < self.data_width:
            raise ValueError(
                f"psum_width must be in the range {self.data_width}..{_RANGES['psum_width'][1]} "
                f"(at least data_width={self.data_width}), got {self.psum_width}")
        word_lanes = 64 // (16 if self.data_width <= 16 else 32)
        if self.filter_lanes not in (1, word_lanes):
            raise ValueError(f"filter_lanes must be 1 or {word_lanes} (values of "
                             f"{self.data_width}-bit data per 64-bit GLB word), "
                             f"got {self.filter_lanes}")
        if self.filter_spad_depth % self.filter_lanes:
            raise ValueError(f"filter_spad_depth must be a multiple of filter_lanes="
                             f"{self.filter_lanes}, got {self.filter_spad_depth}")
        psum_word_lanes = 64 // (16 if self.psum_width <= 16 else 32 if self.psum_width <= 32
                                 else 64)
        if self.psum_lanes not in (1, psum_word_lanes):
            raise ValueError(f"psum_lanes must be 1 or {psum_word_lanes} (psums of "
                             f"{self.psum_width} bits per 64-bit GLB word), "
                             f"got {self.psum_lanes}; set psum_lanes with psum_width")
        if self.lockstep_rows and self.psum_fifo_depth < 3:
            raise ValueError(f"psum_fifo_depth must be at least 3 with lockstep_rows "
                             f"(a lock-step PE holds two windows of p >= 1 psums), "
                             f"got {self.psum_fifo_depth}")
        if self.glb_bank_words & (self.glb_bank_words - 1):
            raise ValueError(
                f"glb_bank_words must be a power of two in the range "
                f"{_RANGES['glb_bank_words'][0]}..{_RANGES['glb_bank_words'][1]}, "
                f"got {self.glb_bank_words}")

    # -- derived quantities -------------------------------------------------------------
    @property
    def num_pes(self) -> int:
        """Number of PEs, ``pe_rows * pe_cols``."""
        return self.pe_rows * self.pe_cols

    @property
    def glb_words(self) -> int:
        """Global buffer capacity in 64-bit words."""
        return self.glb_bank_words * self.glb_banks

    @property
    def glb_bytes(self) -> int:
        """Global buffer capacity in bytes."""
        return self.glb_words * 8

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "AcceleratorConfig":
        """Return a copy with ``changes`` applied (validated like the constructor)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(
                f"unknown configuration parameter(s) {sorted(unknown)}; "
                f"known: {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **changes)

    def config_hash(self) -> str:
        """Short, stable hash of all parameters (names Verilator build directories)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


PRESETS: dict[str, AcceleratorConfig] = {
    # Fast unit and cocotb tests: a 3 x 4 array with small spads and a small GLB.
    "tiny": AcceleratorConfig(pe_rows=3, pe_cols=4, filter_spad_depth=64, ifmap_spad_depth=12,
                              psum_spad_depth=16, glb_bank_words=256, glb_banks=8),
    # Small simulation preset (8 x 8) for CI-sized end-to-end runs.
    "small": AcceleratorConfig(pe_rows=8, pe_cols=8, filter_spad_depth=224,
                               ifmap_spad_depth=12, psum_spad_depth=24,
                               glb_bank_words=512, glb_banks=16),
    # ULX3S ECP5-85F target: 8 x 8 PEs, Eyeriss-sized spads, GLB in block RAM, and 16-bit
    # psums as on the Eyeriss chip: with 32-bit psums the board top needs 88,099 LUT4s of
    # the 85F's 83,640; with 16-bit psums 70,320 (84%) (accelgen fpga, README). The 64 KB
    # GLB is 4 banks of 2048 words (each 8 DP16KD of 2048 x 9 bits; the same 32 DP16KD as
    # 8 x 1024 or 16 x 512): every bank's 64-bit read word goes to all 4 read ports, and
    # with 8 banks that crossbar was the one hot spot of router2's congestion map, and 1 of
    # 12 runs of the 8 x 8 (five netlists, several seeds) routed. With 4 banks seeds 1 and
    # 2 both route at 52.1 MHz (README, FPGA, session 18). The cost: the mapper's regions
    # start on bank boundaries, so fewer of them fit twice, and AlexNet's CONV layers take
    # 47% more cycles (the analytical model: 31.7 M against 21.6 M with 8 banks).
    # One filter value per GIN transfer (filter_lanes=1): one spad bank per PE, no lane mux;
    # one psum per psum-GIN / GON transfer (psum_lanes=1): no lane muxes in the array.
    # Lock-step PE rows (hw.pe_row: one sequencer per row, 8 x 8 from 82% to 62-69% of the
    # LUT4s) with 17-entry output FIFOs, which allow p <= 8 (sw_driver.mapper.p_limit): so
    # the psum spad has 8 entries, not Eyeriss's 24 (no mapping could use more; the 16 idle
    # entries were LUT RAM). The first 8 x 8 board top that routed (session 16) had them.
    "fpga": AcceleratorConfig(pe_rows=8, pe_cols=8, psum_width=16, filter_spad_depth=224,
                              ifmap_spad_depth=12, psum_spad_depth=8, glb_bank_words=2048,
                              glb_banks=4, filter_lanes=1, psum_lanes=1,
                              lockstep_rows=True, psum_fifo_depth=17),
    # The Eyeriss chip (JSSC 2017): 12 x 14 PEs, 108 KB GLB, 16-bit psums.
    # psum_fifo_depth=49: PE output FIFOs that let a PE run three windows of p = 16 ahead of
    # its chain neighbours, so zero skipping saves cycles (see AcceleratorConfig).
    "eyeriss": AcceleratorConfig(psum_width=16, psum_lanes=4, psum_fifo_depth=49),
    # Eyeriss geometry with the more accurate 32-bit psums (DESIGN.md section 2).
    "default": AcceleratorConfig(),
}


def preset(name: str) -> AcceleratorConfig:
    """Return the named preset.

    Raises
    ------
    ValueError
        If ``name`` is not a preset; the message lists the presets.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def parse_overrides(config: AcceleratorConfig, items: list[str]) -> AcceleratorConfig:
    """Apply ``key=value`` strings (as given to ``--set``) to ``config``.

    Integers accept any Python int literal; booleans accept true/false/on/off/1/0/yes/no.

    Raises
    ------
    ValueError
        On a malformed item, an unknown key, or a value out of range.
    """
    types = {f.name: f.type for f in fields(config)}
    changes = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, _, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if key not in types:
            raise ValueError(f"unknown configuration parameter {key!r}; known: {sorted(types)}")
        if types[key] in ("bool", bool):
            low = text.lower()
            if low in ("1", "true", "on", "yes"):
                changes[key] = True
            elif low in ("0", "false", "off", "no"):
                changes[key] = False
            else:
                raise ValueError(f"{key} must be a bool (true/false), got {text!r}")
        else:
            try:
                changes[key] = int(text, 0)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {text!r}") from None
    return config.replace(**changes)
