"""Filter-GIN payloads for tests: one weight per transfer, or ``filter_lanes`` per word."""

from hw.pe import filter_lane_bits

__all__ = ["filter_transfers"]


def filter_transfers(config, words):
    """``filter_in`` payloads for one run's weights: the weights themselves with one filter
    lane, else ``filter_lanes`` weights per transfer (lane i in bits
    ``[i*lane_bits, i*lane_bits + data_width)``), the last transfer padded with zeros."""
    L = config.filter_lanes
    if L == 1:
        return list(words)
    lb = filter_lane_bits(config)
    words = list(words) + [0] * (-len(words) % L)
    out = []
    for k in range(0, len(words), L):
        v = 0
        for i, x in enumerate(words[k:k + L]):
            v |= (x & ((1 << lb) - 1)) << (i * lb)
        out.append(v - (1 << (L * lb)) if v >> (L * lb - 1) else v)
    return out
