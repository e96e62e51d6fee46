"""Row strips: run a layer whose ifmap plane does not fit the GLB as several horizontal strips.

AlexNet CONV1 (227 x 227 ifmap, R = 11, U = 4) needs 12,883 GLB words for one ifmap plane
alone, more than the Eyeriss preset's 13,824-word GLB holds beside a psum block. The
Eyeriss chip's own CONV1 mapping works on e = 7 of the 55 ofmap rows at a time (JSSC 2017,
Table III; BENCHMARKS.md). The driver splits the layer likewise: the ofmap rows ``E``
are split into ``k`` strips; strip ``j`` computes ofmap rows ``[e0, e1)`` from ifmap rows
``[e0*U, (e1-1)*U + R)`` (in padded coordinates) as a layer of its own, with its own ifmap
copy in DRAM. The ``R - U`` overlapping ifmap rows between neighbouring strips are read
twice; the DRAM counters and the model count them.

With ``padding > 0`` the strips' ifmaps are padded by the host (zeros in DRAM, both
dimensions) and run with ``padding = 0``: the hardware pads all four sides of a layer, and a
middle strip must not be padded at its top or bottom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.config import AcceleratorConfig
from sw_driver.mapper import REFINE_MACS, LayerShape, Mapping, map_layer

__all__ = ["Strip", "plan_layer", "plan_network", "host_pad", "strip_inputs"]


@dataclass(frozen=True)
class Strip:
    """One strip: ofmap rows ``[e0, e1)``, computed from rows ``[h0, h1)`` of the ifmap as
    the hardware reads it (the host-padded ifmap when the layer is strip-mined with
    padding; the unpadded one for a layer that maps whole)."""

    e0: int
    e1: int
    h0: int
    h1: int
    mapping: Mapping

    def ifmap(self, x: np.ndarray) -> np.ndarray:
        """The strip's ifmap (N, C, h1 - h0, W) from the (host-padded) ifmap."""
        return x[:, :, self.h0:self.h1, :]

    def ofmap(self, y: np.ndarray) -> np.ndarray:
        """The strip's rows (N, M, e1 - e0, F) of a whole ofmap."""
        return y[:, :, self.e0:self.e1, :]


def host_pad(x: np.ndarray, padding: int) -> np.ndarray:
    """``x`` (N, C, H, W) with ``padding`` zero rows and columns on every side."""
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


#: Row strips replace a first layer that maps whole only when :meth:`Mapping.cost` puts
#: them below this fraction of the whole mapping's cost (:func:`plan_layer`).
STRIP_MARGIN = 0.8


def _split(E: int, k: int) -> list[tuple[int, int]]:
    size = math.ceil(E / k)
    return [(e0, min(E, e0 + size)) for e0 in range(0, E, size)]


def plan_layer(layer: LayerShape, config: AcceleratorConfig, *, dram_rate: float = 1.0,
               buffers=(1, 2), extra_tries: int = 6,
               strips_if_cheaper: bool = False) -> tuple[bool, list[Strip]]:
    """Map ``layer`` whole if it fits, else in row strips: the cheapest by ``Mapping.cost``
    of the strip counts that all map, searched upwards from 2 until ``extra_tries`` counts
    past the cheapest so far have not beaten it.

    ``strips_if_cheaper``: also weigh strips against a layer that maps whole (the search
    then counts its ``extra_tries`` from 1 strip); strips win when they cost less than
    :data:`STRIP_MARGIN` times the whole mapping. Only a network's first layer can run in
    strips. A plane that only just fits the GLB maps whole with tiny filter blocks (AlexNet
    CONV1 on ``eyeriss`` with 30 GLB banks instead of 27: p = 1, 96 filter blocks, each
    re-reading the ifmap; the model puts it at 116.9 M cycles against 3.7 M in 8 strips
    with 27 banks), so without this a larger GLB could map a first layer far worse than a
    smaller one. Counting the tries from the cheapest count rather than from the first
    matters there too: from 1, 30 banks would try only 2-7 strips and take 5 (cost 4.52 M
    at N = 4, against 3.36 M for the 8 it takes now). The margin is there because
    ``Mapping.cost`` is a closed form: for AlexNet CONV4 it puts 2 strips 0.1% below the
    whole layer, which the analytical model runs in 3.76 M cycles against 2.53 M.

    Returns ``(host_padded, strips)``. ``host_padded`` is True when the strips read a
    host-padded ifmap (:func:`host_pad`) and run with ``padding = 0``.

    Raises
    ------
    ValueError
        The mapper's error for the whole layer, if even one-row strips cannot be mapped
        (the limit is then not the ifmap plane's size).
    """
    L = layer
    best, best_cost, best_k, err = None, None, None, None
    try:
        mp = map_layer(L, config, dram_rate=dram_rate, buffers=buffers)
        if not strips_if_cheaper:
            return False, [Strip(0, L.E, 0, L.H, mp)]
        best, best_cost, best_k = [Strip(0, L.E, 0, L.H, mp)], STRIP_MARGIN * mp.cost(), 1
    except ValueError as whole_error:
        err = whole_error
    lows, refined = {}, {}      # strip height -> cheapest / map_layer's mapping (or None)
    for k in range(2, L.E + 1):
        if best_k is not None and k > best_k + extra_tries:
            break
        parts = _split(L.E, k)
        if len(parts) != k:
            continue            # same split as a smaller k
        shapes = {}
        for e0, e1 in parts:
            Hs = (e1 - e0 - 1) * L.U + L.R
            shapes[Hs] = LayerShape(L.N, L.C, Hs, L.Wp, L.M, L.R, L.S, L.U, 0, L.groups)
        # The cheapest mapping by cost (no model refinement) costs no more than the one
        # map_layer refines to, so a count whose cheapest strips cannot beat the best so far
        # is skipped without running the model on its strips (same choice, faster).
        cheapest = {}
        for Hs, shape in shapes.items():
            if Hs not in lows:
                try:
                    lows[Hs] = map_layer(shape, config, dram_rate=dram_rate, buffers=buffers,
                                         refine=0)
                except ValueError:
                    lows[Hs] = None
            cheapest[Hs] = lows[Hs]
        if any(m is None for m in cheapest.values()):
            continue
        low = sum(cheapest[(e1 - e0 - 1) * L.U + L.R].cost() for e0, e1 in parts)
        if best_cost is not None and low >= best_cost:
            continue
        strips = []
        for e0, e1 in parts:
            Hs = (e1 - e0 - 1) * L.U + L.R
            if Hs not in refined:
                refined[Hs] = (cheapest[Hs] if shapes[Hs].macs > REFINE_MACS else
                               map_layer(shapes[Hs], config, dram_rate=dram_rate,
                                         buffers=buffers))
            strips.append(Strip(e0, e1, e0 * L.U, e0 * L.U + Hs, refined[Hs]))
        cost = sum(s.mapping.cost() for s in strips)
        if best_cost is None or cost < best_cost:
            best, best_cost, best_k = strips, cost, k
    if best is None:
        raise err
    return len(best) > 1, best


def plan_network(config: AcceleratorConfig, x_shape, layers, *, dram_rate: float = 1.0,
                 buffers=(1, 2), mappings=None) -> list[tuple[bool, list[Strip]]]:
    """Per layer of a network (``sw_driver.accelerator.ConvLayer`` objects), the
    ``(host_padded, strips)`` of :func:`plan_layer`: one strip for a layer that maps whole,
    several row strips for a first layer whose ifmap plane does not fit the GLB (AlexNet
    CONV1 on the Eyeriss preset). ``mappings``: optional given whole-layer mappings, or
    for the first layer a list of :class:`Strip` (a given strip plan, e.g. from
    ``sw_driver.bounds.plans_below``).

    Raises
    ------
    ValueError
        Mismatched filter channels; a layer that cannot be mapped, even in strips; or one
        that needs strips but is not the network's first layer (its input would have to be
        split in DRAM).
    """
    shape = tuple(x_shape)
    plans = []
    for li, layer in enumerate(layers):
        w = np.asarray(layer.weights)
        N, C, H, W = shape
        M, Cg, R, S = w.shape
        if Cg * layer.groups != C:
            raise ValueError(f"layer {li}: filter channels {Cg} x groups {layer.groups} "
                             f"!= ifmap channels {C}")
        L = LayerShape(N, C, H, W, M, R, S, layer.stride, layer.padding, layer.groups)
        if mappings is not None and isinstance(mappings[li], (list, tuple)):
            strips = list(mappings[li])                 # a given strip plan
            padded = len(strips) > 1
            if len(strips) > 1 and li > 0:
                raise ValueError(f"layer {li}: only a network's first layer can run in "
                                 "row strips")
        elif mappings is not None:
            padded, strips = False, [Strip(0, L.E, 0, L.H, mappings[li])]
        else:
            padded, strips = plan_layer(L, config, buffers=buffers, dram_rate=dram_rate,
                                        strips_if_cheaper=li == 0)
        if len(strips) > 1 and li > 0:
            raise ValueError(
                f"layer {li} ({L}) does not fit the GLB whole and would run in "
                f"{len(strips)} row strips; only a network's first layer can be "
                "strip-mined: run it as its own conv2d")
        plans.append((padded, strips))
        shape = (N, M, L.E, L.F)
    return plans


def strip_inputs(dram, x: np.ndarray, layer, plan, *, rlc: bool, data_width: int = 16):
    """Allocate the DRAM ifmap store(s) of a network's first layer: the whole ifmap for a
    layer that maps whole, else one store per strip holding its rows of the (host-padded)
    ifmap. ``layer``: its ``ConvLayer``; ``plan``: its ``(host_padded, strips)``; ``dram``:
    a ``sw_driver.compiler.DramAllocator``. Returns ``[(PlaneStore, values)]`` in strip
    order; the caller writes or models the values."""
    from sw_driver.compiler import PlaneStore
    padded, strips = plan
    xh = host_pad(x, layer.padding) if padded else x
    out = []
    for st in strips:
        xs = st.ifmap(xh) if len(strips) > 1 else xh
        out.append((PlaneStore.allocate(dram, *xs.shape, rlc=rlc, data_width=data_width), xs))
    return out
