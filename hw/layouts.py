"""Payload layouts shared by the hardware, the driver and the testbenches.

A layout is defined once here and imported everywhere so a word is packed in one place
(STYLE.md).
"""

from amaranth import signed
from amaranth.lib import data

__all__ = ["value_layout", "RLC_WORD_BITS", "RLC_PAIRS_PER_WORD", "RLC_RUN_BITS",
           "RLC_LEVEL_BITS", "RLC_PAIR_BITS", "RLC_LAST_BIT", "RLC_MAX_RUN"]

# RLC word format, DESIGN.md section 3 (Eyeriss JSSC section IV-B).
RLC_WORD_BITS = 64
RLC_PAIRS_PER_WORD = 3
RLC_RUN_BITS = 5
RLC_LEVEL_BITS = 16
RLC_PAIR_BITS = RLC_RUN_BITS + RLC_LEVEL_BITS   # 21
RLC_LAST_BIT = 63
RLC_MAX_RUN = (1 << RLC_RUN_BITS) - 1            # 31


def value_layout(width: int) -> data.StructLayout:
    """One activation on a stream: ``data`` (signed ``width`` bits) and ``last``, which is 1
    on the final value of a 2-D plane (one image, one channel, row-major)."""
    return data.StructLayout({"data": signed(width), "last": 1})


# ---------------------------------------------------------------------------------------
# Top-level contracts (issue 3). Element sizes in the GLB and DRAM, AGU descriptors, engine
# descriptors, the command header and the PE role word. The driver packs these with
# ``layout.const({...}).as_value().value`` and the hardware views the same bits, so every
# word is defined exactly once, here.
# ---------------------------------------------------------------------------------------

from amaranth import unsigned
from amaranth.lib import enum

__all__ += ["act_bits", "psum_bits", "lanes", "GRANULE_BITS", "GLB_WORD_BITS",
            "AGU_LEVELS", "TAG_BITS", "ELEM_ADDR_BITS", "DRAM_ADDR_BITS", "COUNT_BITS",
            "agu_layout", "load_desc_layout", "store_desc_layout", "pass_desc_layout",
            "Opcode", "Engine", "WaitMask", "CMD_HEADER", "pe_role_layout", "desc_words",
            "CSR", "CSR_COUNTERS", "ErrorCode", "HW_MAGIC"]

GLB_WORD_BITS = 64
#: Write granularity of the GLB (bits): a write carries one enable bit per 16-bit granule.
GRANULE_BITS = 16
#: Levels of every address generator (AGU) loop nest.
AGU_LEVELS = 6
#: Bits of a GIN/GON tag (multicast ID, Eyeriss JSSC section IV-B). Tags select PEs.
TAG_BITS = 10
#: Bits of a GLB *element* address (element = one activation or one psum lane).
ELEM_ADDR_BITS = 22
#: Bits of a DRAM word address (64-bit words: 32 GiB).
DRAM_ADDR_BITS = 32
#: Bits of an AGU level count.
COUNT_BITS = 16


def act_bits(data_width: int) -> int:
    """Bits of one activation/filter element in the GLB and in raw DRAM data: 16 for
    ``data_width <= 16``, else 32 (sign-extended)."""
    return 16 if data_width <= 16 else 32


def psum_bits(psum_width: int) -> int:
    """Bits of one psum element in the GLB: 16, 32 or 64 (sign-extended)."""
    return 16 if psum_width <= 16 else 32 if psum_width <= 32 else 64


def lanes(element_bits: int) -> int:
    """Elements per 64-bit GLB/DRAM word. Element ``e`` lives in word ``e // lanes`` at lane
    ``e % lanes`` (lane 0 = least significant bits)."""
    return GLB_WORD_BITS // element_bits


def agu_layout() -> data.StructLayout:
    """Descriptor of one address generator: a loop nest of ``AGU_LEVELS`` levels
    (level 0 outermost) that walks four coordinates at once.

    Each step emits ``addr`` (GLB element address), ``tag`` (GIN/GON tag), and ``inb``
    (1 when ``0 <= y < H and 0 <= x < W`` or when ``pad_check`` is 0; an out-of-bounds
    element is zero padding: nothing is read and the value is 0). Coordinates start at the
    ``*_base`` values; when level ``l`` increments (the levels inside it wrap), every
    coordinate ``c`` adds ``jump_c[l]``. The driver computes
    ``jump[l] = stride[l] - sum_{k > l} (count[k] - 1) * stride[k]``. A level with count 1
    never increments. The total number of steps is ``prod(count)``; ``count[l] == 0`` is an
    empty nest (no steps).
    """
    L = AGU_LEVELS
    return data.StructLayout({
        "count":     data.ArrayLayout(unsigned(COUNT_BITS), L),
        "jump_addr": data.ArrayLayout(signed(ELEM_ADDR_BITS + 1), L),
        "jump_tag":  data.ArrayLayout(signed(TAG_BITS + 1), L),
        "jump_y":    data.ArrayLayout(signed(16), L),
        "jump_x":    data.ArrayLayout(signed(16), L),
        "base_addr": unsigned(ELEM_ADDR_BITS),
        "base_tag":  unsigned(TAG_BITS),
        "base_y":    signed(16),
        "base_x":    signed(16),
        "H":         unsigned(16),
        "W":         unsigned(16),
        "pad_check": 1,
    })


class LoadMode(enum.Enum, shape=1):
    RAW = 0   # copy n_words 64-bit words DRAM -> GLB word address glb_word
    RLC = 1   # decode n_planes RLC streams (DESIGN.md section 3) into GLB act elements


__all__ += ["LoadMode"]


def load_desc_layout() -> data.StructLayout:
    """LOAD engine descriptor (DRAM -> GLB).

    RAW: ``n_words`` words from DRAM ``dram_addr`` to GLB word ``glb_word`` onward.
    RLC: for plane k in 0..n_planes-1, decode the stream that starts at DRAM word
    ``dram_addr + k * dram_pitch`` (fixed-size slots; reading stops at the last-word bit)
    into exactly ``plane_count`` activations written at GLB element addresses
    ``glb_elem + k * glb_pitch + i`` (act elements, :func:`act_bits`).
    """
    return data.StructLayout({
        "mode": LoadMode,
        "dram_addr": unsigned(DRAM_ADDR_BITS),
        "dram_pitch": unsigned(DRAM_ADDR_BITS),
        "n_words": unsigned(DRAM_ADDR_BITS),
        "glb_word": unsigned(ELEM_ADDR_BITS),
        "glb_elem": unsigned(ELEM_ADDR_BITS),
        "glb_pitch": unsigned(ELEM_ADDR_BITS),
        "n_planes": unsigned(16),
        "plane_count": unsigned(24),
    })


def store_desc_layout() -> data.StructLayout:
    """STORE engine descriptor (GLB psums -> ofmap in DRAM).

    For plane k in 0..n_planes-1 and i in 0..plane_count-1 (in this order), with
    ``y = i // cols``, ``x = i % cols``, ``fold = y // fold_rows``, ``j = y % fold_rows`` and
    ``L`` = ``AcceleratorConfig.psum_lanes``: read psum element (:func:`psum_bits`)

        ``glb_elem + k * glb_pitch + fold * fold_pitch + (j // L) * (L * cols) + x * L + j % L``

    i.e. the GLB psum layout ``[fold][j // L][f][j % L]`` of one ofmap plane, output row
    ``y = fold * fold_rows + j``, column ``x`` (``cols`` = F, ``fold_rows`` = e). With
    ``L == 1`` and ``fold_pitch == fold_rows * cols`` this is ``glb_elem + k * glb_pitch + i``
    (a contiguous plane). The walk ends after ``plane_count`` elements, so a partial last
    fold or lane group just ends. When ``plane_count > 0`` the driver must give
    ``cols >= 1`` and ``fold_rows >= 1`` (the engine rejects the descriptor otherwise:
    ``error``, nothing is done).

    Add the bias (GLB word ``bias_word + k``, sign-extended 64-bit, when ``bias_en``), wrap
    to ``psum_width``, requantise with ``output_shift`` (round half up, saturate; DESIGN.md
    section 2), apply ReLU when ``relu``, then write plane k to DRAM from word
    ``dram_addr + k * dram_pitch``: RLC-encoded when ``rlc`` (one stream per plane, DESIGN.md
    section 3), else packed raw (act elements, the last word of a plane zero-filled).
    """
    return data.StructLayout({
        "glb_elem": unsigned(ELEM_ADDR_BITS),
        "glb_pitch": unsigned(ELEM_ADDR_BITS),
        "n_planes": unsigned(16),
        "plane_count": unsigned(24),
        "dram_addr": unsigned(DRAM_ADDR_BITS),
        "dram_pitch": unsigned(DRAM_ADDR_BITS),
        "bias_word": unsigned(ELEM_ADDR_BITS),
        "bias_en": 1,
        "output_shift": unsigned(7),
        "relu": 1,
        "rlc": 1,
        "cols": unsigned(16),
        "fold_rows": unsigned(16),
        "fold_pitch": unsigned(ELEM_ADDR_BITS),
    })


def pass_desc_layout() -> data.StructLayout:
    """PASS engine descriptor: one load-compute-store round of the PE array (Eyeriss §IV).

    PE run fields are shared by every active PE (see ``hw.pe.PEConfig``); a chain-head PE adds
    psums from the psum GIN when ``psum_in_en``, other PEs add the psum of the PE below.

    - ``filter`` AGU (used when ``load_filter``): act elements; tag selects PEs by filter tag.
    - ``ifmap`` AGU: act elements with zero padding; tag selects PEs by ifmap tag.
    - ``psum_in`` AGU (used when ``psum_in_en``): psum elements; tag selects chain heads.
    - ``psum_out`` AGU: where each GON psum is written (psum elements); its tag selects the
      chain tail the next psum is taken from (the GON collects in this order).
    - With ``config.psum_lanes = L > 1`` both psum AGUs address whole GLB words of ``L``
      psums and their tag selects a group of ``L`` chain heads / tails (``hw.array``).
    """
    return data.StructLayout({
        "p": unsigned(8), "q": unsigned(8), "S": unsigned(8), "U": unsigned(4),
        "F": unsigned(10), "n_rows": unsigned(12), "product_shift": unsigned(7),
        "load_filter": 1, "psum_in_en": 1,
        "filter": agu_layout(),
        "ifmap": agu_layout(),
        "psum_in": agu_layout(),
        "psum_out": agu_layout(),
    })


def desc_words(layout) -> int:
    """64-bit words that carry a descriptor of ``layout`` (LSB-first)."""
    return (layout.size + 63) // 64


class Opcode(enum.Enum, shape=4):
    NOP = 0
    RUN = 1      # write n_words payload words to an engine's descriptor, then start it
    ROLES = 2    # n_words payload words, each a pe_role_layout word
    END = 3      # wait until every engine is idle, then stop (status done)


class Engine(enum.Enum, shape=2):
    LOAD = 0
    STORE = 1
    PASS = 2


class WaitMask(enum.Flag, shape=3):
    LOAD = 1
    STORE = 2
    PASS = 4


#: Command header word: the controller fetches it, waits until the engines in ``wait`` are
#: idle (and, for RUN, the target engine is idle), then consumes ``n_words`` payload words.
CMD_HEADER = data.StructLayout({
    "opcode": Opcode,
    "engine": Engine,
    "wait": WaitMask,
    "n_words": unsigned(16),
})


def pe_role_layout() -> data.StructLayout:
    """Role of one PE for the layer, written by ROLES commands (one 64-bit word per PE).

    ``pe`` is the PE index ``row * pe_cols + col``. Psums flow up a column: the PE at
    ``row + 1`` feeds the PE at ``row``. A chain head takes psums from the psum GIN (tag
    ``psum_tag``); a chain tail sends its psums to the GON (selected by ``psum_tag``).
    """
    return data.StructLayout({
        "pe": unsigned(12),
        "active": 1,
        "head": 1,
        "tail": 1,
        "filter_tag": unsigned(TAG_BITS),
        "ifmap_tag": unsigned(TAG_BITS),
        "psum_tag": unsigned(TAG_BITS),
    })


class CSR(enum.IntEnum):
    """CSR word addresses (64-bit registers) of the host port."""
    CTRL = 0        # write: bit0 start, bit1 clear error/done
    STATUS = 1      # read: bit0 busy, bit1 done, bit2 error
    ERROR = 2       # read: ErrorCode of the first error
    CMD_ADDR = 3    # read/write: DRAM word address of the command list
    MAGIC = 4       # read: HW_MAGIC
    HW_CONFIG0 = 5  # read: pe_rows | pe_cols << 8 | data_width << 16 | psum_width << 24 |
                    #       flags (rlc, relu, zero_gating) << 32
    HW_CONFIG1 = 6  # read: filter_spad | ifmap_spad << 16 | psum_spad << 32
    HW_CONFIG2 = 7  # read: glb_bank_words | glb_banks << 32
    CMD_PTR = 8     # read: DRAM word address of the next command to fetch
    COUNTERS = 16   # read: CSR_COUNTERS[i] at COUNTERS + i


#: 64-bit performance counters, in CSR order from CSR.COUNTERS (DESIGN.md section 5).
CSR_COUNTERS = ["cycles", "busy_cycles", "macs", "macs_gated", "dram_reads", "dram_writes",
                "glb_reads", "glb_writes", "stall_cycles", "pass_cycles"]

HW_MAGIC = 0x45594552_49535331  # "EYERISS1"


class ErrorCode(enum.IntEnum):
    NONE = 0
    BAD_OPCODE = 1
    RLC_MALFORMED = 2
    GLB_RANGE = 3
    BAD_ROLE = 4


def dram_read_signature():
    """DRAM read master port, from the accelerator's (master's) side: ``req`` carries a DRAM
    word address, ``resp`` returns the 64-bit words in request order."""
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out
    return wiring.Signature({
        "req": Out(stream.Signature(unsigned(DRAM_ADDR_BITS))),
        "resp": In(stream.Signature(unsigned(64))),
    })


def dram_write_layout() -> data.StructLayout:
    """DRAM write beat: word address and 64-bit data (no byte enables: whole words)."""
    return data.StructLayout({"addr": unsigned(DRAM_ADDR_BITS), "data": unsigned(64)})


def agu_step_layout() -> data.StructLayout:
    """One AGU step: GLB element address, tag, in-bounds flag (0 = zero padding), and
    ``last`` on the final step of the nest."""
    return data.StructLayout({"addr": unsigned(ELEM_ADDR_BITS), "tag": unsigned(TAG_BITS),
                              "inb": 1, "last": 1})


def tagged_layout(shape) -> data.StructLayout:
    """A GIN word: ``data`` of ``shape`` and the multicast ``tag``."""
    return data.StructLayout({"data": shape, "tag": unsigned(TAG_BITS)})


__all__ += ["dram_read_signature", "dram_write_layout", "agu_step_layout", "tagged_layout"]
