"""Mapper and compiler placement: stacked filter groups (``Mapping.t_rows``), no simulation.

The RTL side (bit-exact, model against RTL) is in ``test_perfmodel.py``
(``test_stacked_filter_groups_match_rtl``)."""

import math

import pytest

from hw.config import preset
from hw.layouts import pe_role_layout
from sw_driver.compiler import _roles
from sw_driver.mapper import LayerShape, Mapping, map_layer

SMALL = preset("small")
EYERISS = preset("eyeriss")


def _decode_roles(mp):
    """PE index -> role fields, from the ROLES payload the compiler emits."""
    layout = pe_role_layout()
    roles = {}
    for word in _roles(mp):
        view = layout.from_bits(word)
        roles[int(view.pe)] = {k: int(getattr(view, k)) for k in
                               ("active", "head", "tail", "filter_tag", "ifmap_tag",
                                "psum_tag")}
    return roles


def _chains(mp, roles):
    """Tail PE -> PEs of its chain (tail first), following the array's rule: a non-head
    active PE takes its psum from the PE one row up (``hw.array`` invariant 1)."""
    cols = mp.config.pe_cols
    chains = {}
    for pe, r in roles.items():
        if r["active"] and r["tail"]:
            chain = [pe]
            while not roles[chain[-1]]["head"]:
                up = chain[-1] + cols
                assert up in roles and roles[up]["active"] and not roles[up]["tail"], (
                    f"chain from PE {pe} broken at PE {up}")
                chain.append(up)
            chains[pe] = chain
    return chains


def _stacked(L, cfg, rate):
    mp = map_layer(L, cfg, dram_rate=rate)
    assert mp.t_rows > 1, "the layer no longer maps with stacked filter groups"
    return mp


@pytest.mark.parametrize("cfg, L, rate, r_sets, t_rows", [
    (SMALL, LayerShape(1, 8, 9, 9, 24, 2, 2, 1, 0, 1), 0.3, 2, 2),
    (preset("tiny"), LayerShape(1, 4, 8, 8, 6, 1, 1, 1, 0, 1), 1.0, 1, 3),
])
def test_stacked_filter_groups_are_separate_chains_sharing_ifmap_tags(cfg, L, rate, r_sets,
                                                                      t_rows):
    """Each stacked filter group is a chain of its own through all ``r_sets`` channel sets
    (head on top, tail at the bottom, distinct psum tags); the groups of one column read the
    same ifmap rows (same ifmap tags: one multicast) and different filters."""
    mp = _stacked(L, cfg, rate)
    assert (mp.r_sets, mp.t_rows) == (r_sets, t_rows)
    roles = _decode_roles(mp)
    assert len(roles) == cfg.num_pes
    active = {pe for pe, r in roles.items() if r["active"]}
    assert len(active) == mp.active_pes == mp.Rc * mp.r_sets * mp.e * mp.t_sets
    chains = _chains(mp, roles)
    assert len(chains) == mp.t_sets * mp.e
    assert sorted(pe for ch in chains.values() for pe in ch) == sorted(active)
    assert all(len(ch) == mp.Rc * mp.r_sets for ch in chains.values())
    # psum tags distinct over tails and over heads; t * e_pad + j
    tail_tags = sorted(roles[t]["psum_tag"] for t in chains)
    head_tags = sorted(roles[ch[-1]]["psum_tag"] for ch in chains.values())
    want = sorted(t * mp.e_pad + j for t in range(mp.t_sets) for j in range(mp.e))
    assert tail_tags == head_tags == want
    cols = cfg.pe_cols
    by_col = {}
    for tail, ch in chains.items():
        by_col.setdefault(tail % cols, []).append(ch)
    assert all(len(v) == mp.t_rows for v in by_col.values())
    for stack in by_col.values():
        ifmap = [[roles[pe]["ifmap_tag"] for pe in ch] for ch in stack]
        filt = [[roles[pe]["filter_tag"] for pe in ch] for ch in stack]
        assert all(seq == ifmap[0] for seq in ifmap)         # one multicast feeds all
        flat = [t for seq in filt for t in seq]
        assert len(set(flat)) == len(flat)                   # different filters


def test_stacking_raises_filters_per_pass_and_cuts_ifmap_reloads():
    """AlexNet CONV3 (batch 4, Eyeriss link): the mapper stacks filter groups, as Eyeriss's
    own CONV3 mapping does (JSSC 2017, Table III: t = 4); more filters per pass (PT) means
    fewer filter blocks, each re-reading the ifmap block from DRAM. Compared with the
    same mapping unstacked (same p, q, channel sets), the stacked one has ``t_rows`` times
    the filters per pass and correspondingly fewer filter blocks."""
    L = LayerShape(4, 256, 13, 13, 384, 3, 3, 1, 1, 1)
    mp = _stacked(L, EYERISS, 0.3)
    assert mp.r_sets * mp.t_rows * mp.Rc <= EYERISS.pe_rows
    flat = Mapping(L, EYERISS, e=mp.e, n_fold=mp.n_fold, Rc=mp.Rc, n_rchunks=mp.n_rchunks,
                   r_sets=mp.r_sets, t_sets=mp.t_cols, p=mp.p, q=mp.q, nb=mp.nb,
                   buffers=mp.buffers, dram_rate=0.3)
    assert mp.PT == mp.t_rows * flat.PT
    assert mp.n_mblocks == math.ceil(384 / mp.PT) < flat.n_mblocks
    # ifmap values read per filter block are the same, so the total drops with n_mblocks
    assert mp.n_mblocks * mp.n_cblocks < flat.n_mblocks * flat.n_cblocks
