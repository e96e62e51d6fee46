"""Filter-GIN payloads for tests: one weight per transfer, or ``filter_lanes`` per word."""

from hw.pe import filter_lane_bits
from sw_driver.compiler import pack_values

__all__ = ["filter_transfers"]


def filter_transfers(config, words):
    """``filter_in`` payloads for one run's weights: the weights themselves with one filter
    lane, else ``filter_lanes`` weights per transfer, packed as the driver packs GLB words
    (``sw_driver.compiler.pack_values``: lane i in bits ``[i*lane_bits, (i+1)*lane_bits)``),
    the last transfer padded with zeros; as signed 64-bit ints (the GIN payload shape)."""
    if config.filter_lanes == 1:
        return list(words)
    packed = pack_values(list(words), filter_lane_bits(config)).view("int64")
    return [int(v) for v in packed]
