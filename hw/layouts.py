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
