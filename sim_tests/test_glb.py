# amaranth: UnusedElaboratable=no
"""Amaranth-simulation tests of the global buffer (hw/glb.py)."""

from __future__ import annotations

import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Fragment
from amaranth.lib.wiring import Flow

from hw.config import preset
from hw.glb import GlobalBuffer, glb_addr_width
from sim_tests.support.stream import get_n, put_all, run_testbenches, seeded, get_n_timed

TINY = preset("tiny")          # 8 banks x 256 words
MASK64 = (1 << 64) - 1
FULL = 0xF                     # write mask: all four 16-bit granules


def random_init(config, seed):
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(config.glb_words)]


def split(items, n):
    """Deal ``items`` round-robin into ``n`` lists."""
    return [items[i::n] for i in range(n)]


async def wait_flag(ctx, flag):
    while not flag():
        await ctx.tick()




async def put_timed(ctx, stream, payloads):
    """Send ``payloads`` with valid held high; returns cycles elapsed."""
    cycles = 0
    for p in payloads:
        ctx.set(stream.payload, p)
        ctx.set(stream.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycles += 1
            if ready:
                break
    ctx.set(stream.valid, 0)
    return cycles


# -- interface ---------------------------------------------------------------------------

def test_port_directions_and_widths():
    glb = GlobalBuffer(TINY, read_ports=3, write_ports=2)
    assert glb.addr_width == 11 == glb_addr_width(TINY)   # 2048 words
    flows = {path: member.flow for path, member, _ in glb.signature.flatten(glb)}
    for p in range(3):
        assert flows[("rd", p, "req", "valid")] == Flow.In
        assert flows[("rd", p, "req", "payload")] == Flow.In
        assert flows[("rd", p, "req", "ready")] == Flow.Out
        assert flows[("rd", p, "resp", "valid")] == Flow.Out
        assert flows[("rd", p, "resp", "payload")] == Flow.Out
        assert flows[("rd", p, "resp", "ready")] == Flow.In
        assert len(glb.rd[p].req.payload) == 11
        assert len(glb.rd[p].resp.payload) == 64
    for p in range(2):
        assert flows[("wr", p, "valid")] == Flow.In
        assert flows[("wr", p, "payload")] == Flow.In
        assert flows[("wr", p, "ready")] == Flow.Out
        assert len(glb.wr[p].payload.addr) == 11
        assert len(glb.wr[p].payload.data) == 64
        assert len(glb.wr[p].payload.mask) == 4       # one enable per 16-bit granule
    assert flows[("error",)] == Flow.Out
    Fragment.get(glb, None)   # elaborates (and marks it used)
    assert GlobalBuffer(preset("eyeriss")).addr_width == 14   # 27 * 512 = 13824 words


def test_bad_parameters():
    with pytest.raises(ValueError, match="addr_width"):
        GlobalBuffer(TINY, addr_width=10)
    with pytest.raises(ValueError, match="init"):
        GlobalBuffer(TINY, init=[0] * (TINY.glb_words + 1))
    with pytest.raises(ValueError, match="64-bit"):
        GlobalBuffer(TINY, init=[1 << 64])
    with pytest.raises(ValueError, match="read_ports"):
        GlobalBuffer(TINY, read_ports=0)


# -- functional ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
def test_random_write_then_read(seed):
    """Random writes across all banks through 3 write ports, then random reads (including
    never-written, preloaded words) through 3 read ports; stalls on every stream."""
    rng = random.Random(seed)
    init = random_init(TINY, seed + 100)
    glb = GlobalBuffer(TINY, read_ports=3, write_ports=3, init=init)
    model = dict(enumerate(init))

    # Distinct addresses per write phase: concurrent writes from different ports to one
    # address would have no defined order.
    waddrs = rng.sample(range(TINY.glb_words), 600)
    writes = [{"addr": a, "data": rng.getrandbits(64), "mask": FULL} for a in waddrs]
    for w in writes:
        model[w["addr"]] = w["data"]
    wr_lists = split(writes, 3)
    # Reads: mostly written addresses, some preloaded ones, with repeats.
    rd_lists = [[rng.choice(waddrs) if rng.random() < 0.7 else rng.randrange(TINY.glb_words)
                 for _ in range(250)] for _ in range(3)]

    writers_done = [0]
    results = {}

    def writer(p):
        async def tb(ctx):
            await put_all(ctx, glb.wr[p], wr_lists[p], rng=seeded(seed * 10 + p), stall=0.3)
            writers_done[0] += 1
        return tb

    def requester(p):
        async def tb(ctx):
            await wait_flag(ctx, lambda: writers_done[0] == 3)
            await put_all(ctx, glb.rd[p].req, rd_lists[p], rng=seeded(seed * 20 + p),
                          stall=0.3)
        return tb

    def receiver(p):
        async def tb(ctx):
            results[p] = await get_n(ctx, glb.rd[p].resp, len(rd_lists[p]),
                                     rng=seeded(seed * 30 + p), stall=0.3)
        return tb

    run_testbenches(glb, *[writer(p) for p in range(3)], *[requester(p) for p in range(3)],
                    *[receiver(p) for p in range(3)], deadline_cycles=5000)
    for p in range(3):
        assert results[p] == [model[a] for a in rd_lists[p]], f"read port {p}"


class Prebuilt(Elaboratable):
    """Elaborates ``glb`` up front so a testbench can reach its bank memories
    (``banks[b].data[i]``)."""

    def __init__(self, glb):
        self.module = glb.elaborate(None)
        self.banks = [self.module.submodules[f"bank{b}"] for b in range(glb.num_banks)]

    def elaborate(self, platform):
        return self.module


def apply_mask(old, data, mask):
    """Model of a masked write: granule g (bits [16g+15:16g]) from ``data`` if mask bit g."""
    for g in range(4):
        if mask >> g & 1:
            sel = 0xFFFF << (16 * g)
            old = (old & ~sel) | (data & sel)
    return old


@pytest.mark.parametrize("seed", [1, 2])
def test_partial_mask_writes(seed):
    """Writes with random masks (including 0 and 0xF), several to the same word in order
    through one port: only the masked granules change. Then two ports write disjoint
    granules of the same words at the same time: every word combines both."""
    rng = random.Random(seed + 500)
    init = random_init(TINY, seed + 600)
    glb = GlobalBuffer(TINY, read_ports=1, write_ports=2, init=init)
    model = dict(enumerate(init))
    hot = rng.sample(range(TINY.glb_words), 40)          # rewritten many times
    seq = []
    for _ in range(400):
        a = rng.choice(hot) if rng.random() < 0.6 else rng.randrange(TINY.glb_words)
        w = {"addr": a, "data": rng.getrandbits(64), "mask": rng.randrange(16)}
        seq.append(w)
        model[a] = apply_mask(model[a], w["data"], w["mask"])
    # Phase 2: port 0 writes granules {0, 2}, port 1 granules {1, 3} of the same words.
    shared = rng.sample(range(TINY.glb_words), 60)
    split_wr = [[], []]
    for a in shared:
        for p, mask in ((0, 0b0101), (1, 0b1010)):
            w = {"addr": a, "data": rng.getrandbits(64), "mask": mask}
            split_wr[p].append(w)
            model[a] = apply_mask(model[a], w["data"], mask)
    check = sorted(set(w["addr"] for w in seq) | set(shared))
    flags, out = {"seq": False, "par": 0}, {}

    async def writer0(ctx):
        await put_all(ctx, glb.wr[0], seq, rng=seeded(seed + 700), stall=0.3)
        flags["seq"] = True
        await put_all(ctx, glb.wr[0], split_wr[0], rng=seeded(seed + 701), stall=0.3)
        flags["par"] += 1

    async def writer1(ctx):
        await wait_flag(ctx, lambda: flags["seq"])
        await put_all(ctx, glb.wr[1], split_wr[1], rng=seeded(seed + 702), stall=0.3)
        flags["par"] += 1

    async def requester(ctx):
        await wait_flag(ctx, lambda: flags["par"] == 2)
        await put_all(ctx, glb.rd[0].req, check)

    async def receiver(ctx):
        out["data"] = await get_n(ctx, glb.rd[0].resp, len(check), rng=seeded(seed + 703),
                                  stall=0.2)
        # The bank memories agree with the read port.
        bw = TINY.glb_bank_words
        out["mem"] = [ctx.get(glb_banks[a // bw].data[a % bw]) for a in check]

    top = Prebuilt(glb)
    glb_banks = top.banks
    run_testbenches(top, writer0, writer1, requester, receiver, deadline_cycles=6000)
    assert out["data"] == [model[a] for a in check]
    assert out["mem"] == [model[a] for a in check]


def test_concurrent_reads_and_writes():
    """Reads and writes at the same time, to disjoint random address sets spread over all
    banks (so reads and writes often share a bank in the same cycle)."""
    rng = random.Random(7)
    init = random_init(TINY, 8)
    glb = GlobalBuffer(TINY, read_ports=2, write_ports=2, init=init)
    addrs = list(range(TINY.glb_words))
    rng.shuffle(addrs)
    waddrs, raddrs = addrs[:400], addrs[400:]
    writes = [{"addr": a, "data": rng.getrandbits(64), "mask": FULL} for a in waddrs]
    wr_lists = split(writes, 2)
    rd_lists = [[rng.choice(raddrs) for _ in range(300)] for _ in range(2)]
    done = [0]
    results = {}

    def writer(p):
        async def tb(ctx):
            await put_all(ctx, glb.wr[p], wr_lists[p], rng=seeded(40 + p), stall=0.3)
            done[0] += 1
        return tb

    def requester(p):
        async def tb(ctx):
            await put_all(ctx, glb.rd[p].req, rd_lists[p], rng=seeded(50 + p), stall=0.3)
        return tb

    def receiver(p):
        async def tb(ctx):
            results[p] = await get_n(ctx, glb.rd[p].resp, 300, rng=seeded(60 + p), stall=0.3)
        return tb

    # After everything: read the written words back through port 0.
    check = {}

    async def readback(ctx):
        await wait_flag(ctx, lambda: done[0] == 2 and len(results) == 2)
        await put_all(ctx, glb.rd[0].req, waddrs)

    async def readback_rx(ctx):
        await wait_flag(ctx, lambda: len(results) == 2)
        check["data"] = await get_n(ctx, glb.rd[0].resp, len(waddrs))

    run_testbenches(glb, *[writer(p) for p in range(2)], *[requester(p) for p in range(2)],
                    *[receiver(p) for p in range(2)], readback, readback_rx,
                    deadline_cycles=5000)
    for p in range(2):
        assert results[p] == [init[a] for a in rd_lists[p]], f"read port {p}"
    assert check["data"] == [w["data"] for w in writes]


def test_same_bank_conflict_in_order():
    """Three read ports hammer one bank with random stalls: every port still gets its own
    words in request order; without stalls round-robin shares the bank evenly."""
    init = random_init(TINY, 3)
    bank = 5
    base = bank * TINY.glb_bank_words
    rng = random.Random(4)
    n = 150
    rd_lists = [[base + rng.randrange(TINY.glb_bank_words) for _ in range(n)] for _ in range(3)]

    for stall in (0.3, 0.0):
        glb = GlobalBuffer(TINY, read_ports=3, write_ports=1, init=init)
        results, cycles = {}, {}

        def requester(p):
            async def tb(ctx):
                await put_all(ctx, glb.rd[p].req, rd_lists[p], rng=seeded(70 + p),
                              stall=stall)
            return tb

        def receiver(p):
            async def tb(ctx):
                if stall:
                    results[p] = await get_n(ctx, glb.rd[p].resp, n, rng=seeded(80 + p),
                                             stall=stall)
                else:
                    results[p], cycles[p] = await get_n_timed(ctx, glb.rd[p].resp, n)
            return tb

        run_testbenches(glb, *[requester(p) for p in range(3)],
                        *[receiver(p) for p in range(3)], deadline_cycles=20 * n)
        for p in range(3):
            assert results[p] == [init[a] for a in rd_lists[p]], f"port {p}, stall {stall}"
        if not stall:
            # One bank serves one read per cycle, shared fairly by 3 ports (round-robin):
            # every port finishes near 3n (fixed priority would finish port 0 near n).
            for p in range(3):
                assert 3 * n - 4 <= cycles[p] <= 3 * n + 4, cycles


def test_two_ports_different_banks_full_rate():
    """Two read ports on different banks, no stalls: one read per cycle each."""
    init = random_init(TINY, 5)
    n = 200
    bw = TINY.glb_bank_words
    rng = random.Random(6)
    rd_lists = [[1 * bw + rng.randrange(bw) for _ in range(n)],
                [6 * bw + rng.randrange(bw) for _ in range(n)]]
    glb = GlobalBuffer(TINY, read_ports=2, write_ports=2, init=init)
    results, cycles, req_cycles = {}, {}, {}

    def requester(p):
        async def tb(ctx):
            req_cycles[p] = await put_timed(ctx, glb.rd[p].req, rd_lists[p])
        return tb

    def receiver(p):
        async def tb(ctx):
            results[p], cycles[p] = await get_n_timed(ctx, glb.rd[p].resp, n)
        return tb

    run_testbenches(glb, requester(0), requester(1), receiver(0), receiver(1),
                    deadline_cycles=4 * n)
    for p in range(2):
        assert results[p] == [init[a] for a in rd_lists[p]]
        assert req_cycles[p] == n, req_cycles          # never back-pressured
        assert cycles[p] <= n + 2, cycles              # 1-cycle read latency


def test_write_full_rate_and_read_write_same_bank():
    """Two write ports on different banks and a read port on one of those banks, all at
    once and unstalled: each sustains one transfer per cycle."""
    n = 128
    bw = TINY.glb_bank_words
    init = random_init(TINY, 9)
    rng = random.Random(10)
    glb = GlobalBuffer(TINY, read_ports=1, write_ports=2, init=init)
    wr_lists = [[{"addr": 2 * bw + i, "data": rng.getrandbits(64), "mask": FULL} for i in range(n)],
                [{"addr": 3 * bw + i, "data": rng.getrandbits(64), "mask": FULL} for i in range(n)]]
    # Reads from bank 2, upper half (never written here).
    rd_list = [2 * bw + 128 + rng.randrange(bw - 128) for _ in range(n)]
    wcycles, res = {}, {}

    def writer(p):
        async def tb(ctx):
            wcycles[p] = await put_timed(ctx, glb.wr[p], wr_lists[p])
        return tb

    async def requester(ctx):
        wcycles["rd"] = await put_timed(ctx, glb.rd[0].req, rd_list)

    async def receiver(ctx):
        res["data"], res["cycles"] = await get_n_timed(ctx, glb.rd[0].resp, n)

    async def readback(ctx):
        await wait_flag(ctx, lambda: len(res) == 2)
        await put_all(ctx, glb.rd[0].req, [w["addr"] for lst in wr_lists for w in lst])

    async def readback_rx(ctx):
        await wait_flag(ctx, lambda: len(res) == 2)
        res["back"] = await get_n(ctx, glb.rd[0].resp, 2 * n)

    run_testbenches(glb, writer(0), writer(1), requester, receiver, readback, readback_rx,
                    deadline_cycles=10 * n)
    assert wcycles == {0: n, 1: n, "rd": n}
    assert res["cycles"] <= n + 2
    assert res["data"] == [init[a] for a in rd_list]
    assert res["back"] == [w["data"] for lst in wr_lists for w in lst]


def test_backpressure_bounds_buffer():
    """With resp.ready low, a port accepts exactly 2 requests (its buffer) and then holds
    req.ready low; nothing is lost when the consumer resumes."""
    init = random_init(TINY, 11)
    glb = GlobalBuffer(TINY, read_ports=1, write_ports=1, init=init)
    addrs = [3, 700, 1500, 42, 2047]
    out = {}

    async def tb(ctx):
        port = glb.rd[0]
        ctx.set(port.req.valid, 1)
        accepted = 0
        for _ in range(10):
            ctx.set(port.req.payload, addrs[accepted])
            _, _, ready = await ctx.tick().sample(port.req.ready)
            accepted += ready
        assert accepted == 2
        assert ctx.get(port.resp.valid) == 1
        assert ctx.get(port.resp.payload) == init[addrs[0]]
        ctx.set(port.req.valid, 0)
        out["data"] = await get_n(ctx, port.resp, 2)
        assert ctx.get(port.resp.valid) == 0
        # The same tb issues then drains, so at most 2 requests at a time.
        await put_all(ctx, port.req, addrs[2:4])
        out["data"] += await get_n(ctx, port.resp, 2)
        await put_all(ctx, port.req, addrs[4:])
        out["data"] += await get_n(ctx, port.resp, 1)

    run_testbenches(glb, tb, deadline_cycles=200)
    assert out["data"] == [init[a] for a in addrs]


def test_read_during_write_returns_old_word():
    """A read and a write to one address accepted in the same cycle: the read returns the
    old word (non-transparent); the next read returns the new word."""
    init = random_init(TINY, 12)
    glb = GlobalBuffer(TINY, read_ports=1, write_ports=1, init=init)
    addr, new = 777, 0x0123_4567_89AB_CDEF

    async def tb(ctx):
        rd, wr = glb.rd[0], glb.wr[0]
        ctx.set(wr.payload, {"addr": addr, "data": new, "mask": FULL})
        ctx.set(wr.valid, 1)
        ctx.set(rd.req.payload, addr)
        ctx.set(rd.req.valid, 1)
        _, _, wr_ready, rd_ready = await ctx.tick().sample(wr.ready, rd.req.ready)
        assert wr_ready and rd_ready
        ctx.set(wr.valid, 0)
        ctx.set(rd.resp.ready, 1)
        assert ctx.get(rd.resp.valid) == 1            # 1-cycle latency
        assert ctx.get(rd.resp.payload) == init[addr]
        _, _, rd_ready = await ctx.tick().sample(rd.req.ready)   # second read of addr
        assert rd_ready
        ctx.set(rd.req.valid, 0)
        assert ctx.get(rd.resp.valid) == 1
        assert ctx.get(rd.resp.payload) == new
        await ctx.tick()
        assert ctx.get(rd.resp.valid) == 0

    run_testbenches(glb, tb, deadline_cycles=50)


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("config,addr_width", [
    (TINY.replace(glb_banks=6), None),   # 1536 words, 11-bit addresses: 1536..2047 invalid
    (TINY, 16),                          # 2048 words on a 16-bit address field
])
def test_out_of_range_sets_error(config, addr_width):
    words = config.glb_words
    init = random_init(config, 13)
    glb = GlobalBuffer(config, read_ports=2, write_ports=2, addr_width=addr_width, init=init)
    aw = glb.addr_width
    bad = [words, words + 5, (1 << aw) - 1]
    # What a wrapping implementation would hit for each bad address.
    aliases = [a % words for a in bad] + [a & (words - 1) for a in bad if words & (words - 1) == 0]
    out = {}

    async def tb(ctx):
        rd, wr = glb.rd[0], glb.wr[1]
        assert ctx.get(glb.error) == 0
        # A valid read and write leave error clear.
        await put_all(ctx, rd.req, [0])
        out["ok"] = await get_n(ctx, rd.resp, 1)
        assert ctx.get(glb.error) == 0
        # An out-of-range write is dropped and sets error.
        await put_all(ctx, wr, [{"addr": bad[1], "data": MASK64, "mask": FULL}])
        await ctx.tick()
        assert ctx.get(glb.error) == 1
        # error_clear clears it.
        ctx.set(glb.error_clear, 1)
        await ctx.tick()
        ctx.set(glb.error_clear, 0)
        assert ctx.get(glb.error) == 0
        # Out-of-range reads return 0, in order with valid reads, and set error.
        seq = [5, bad[0], 6, bad[2]]
        # Two requests in flight at a time (one testbench issues and drains).
        out["mixed"] = []
        for pair in (seq[:2], seq[2:]):
            await put_all(ctx, rd.req, pair)
            out["mixed"] += await get_n(ctx, rd.resp, 2)
        assert ctx.get(glb.error) == 1
        # Nothing was overwritten by the dropped write.
        out["aliases"] = []
        for a in aliases:
            await put_all(ctx, rd.req, [a])
            out["aliases"] += await get_n(ctx, rd.resp, 1)
        assert ctx.get(glb.error) == 1            # sticky

    run_testbenches(glb, tb, deadline_cycles=200)
    assert out["ok"] == [init[0]]
    assert out["mixed"] == [init[5], 0, init[6], 0]
    assert out["aliases"] == [init[a] for a in aliases]


# -- Verilog -------------------------------------------------------------------------------

@pytest.mark.parametrize("config,ports", [
    (preset("tiny"), 2),
    (preset("eyeriss"), 2),                    # 27 banks x 512 words
    (TINY.replace(glb_banks=1), 1),            # no bank bits at all
], ids=["tiny", "eyeriss", "one-bank"])
def test_verilog_conversion(config, ports):
    glb = GlobalBuffer(config, read_ports=ports, write_ports=ports)
    text = verilog.convert(glb, name="glb", emit_src=False)
    assert "module glb" in text
    for port in ("rd__0__req__valid", f"rd__{ports - 1}__resp__payload",
                 f"wr__{ports - 1}__payload", "error"):
        assert port in text


def test_one_bank_one_port():
    """Degenerate geometry: a single bank (no bank bits), one read and one write port."""
    config = TINY.replace(glb_banks=1)
    glb = GlobalBuffer(config, read_ports=1, write_ports=1)
    rng = random.Random(14)
    writes = [{"addr": a, "data": rng.getrandbits(64), "mask": FULL}
              for a in rng.sample(range(256), 64)]
    done, out = [False], {}

    async def writer(ctx):
        await put_all(ctx, glb.wr[0], writes, rng=seeded(90), stall=0.3)
        done[0] = True

    async def requester(ctx):
        await wait_flag(ctx, lambda: done[0])
        await put_all(ctx, glb.rd[0].req, [w["addr"] for w in writes], rng=seeded(91),
                      stall=0.3)

    async def receiver(ctx):
        out["data"] = await get_n(ctx, glb.rd[0].resp, len(writes), rng=seeded(92), stall=0.3)

    run_testbenches(glb, writer, requester, receiver, deadline_cycles=2000)
    assert out["data"] == [w["data"] for w in writes]
