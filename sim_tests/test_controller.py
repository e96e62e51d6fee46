"""Controller: command fetch and dispatch, waits, errors, CSRs and counters (Amaranth sim).

Engines are modelled by the testbench: each has a busy flag that stays high for a number of
cycles after its start pulse, so the tests can check that commands wait for the right engines.
"""

import random


from hw.config import preset
from hw.controller import Controller, DramReadArbiter, hw_config_words
from hw.layouts import (CMD_HEADER, CSR, CSR_COUNTERS, HW_MAGIC, Engine, ErrorCode, Opcode,
                        WaitMask, pe_role_layout)

CFG = preset("tiny")


def header(opcode, engine=Engine.LOAD, wait=WaitMask(0), n_words=0):
    return CMD_HEADER.const({"opcode": opcode, "engine": engine, "wait": wait,
                             "n_words": n_words}).as_value().value


def role(pe, tag):
    return pe_role_layout().const({"pe": pe, "active": 1, "ifmap_tag": tag}).as_value().value


class Harness:
    """Drives the controller with a Python DRAM (random latency) and fake engines."""

    def __init__(self, dram, *, busy_cycles=(5, 7, 9), seed=0, stall=0.3):
        self.dut = Controller(CFG)
        self.dram = dram
        self.busy_cycles = busy_cycles
        self.rng = random.Random(seed)
        self.stall = stall
        self.log = []          # (cycle, event)
        self.descs = {e: {} for e in Engine}
        self.roles = []

    async def csr_write(self, ctx, addr, value):
        ctx.set(self.dut.csr.addr, addr)
        ctx.set(self.dut.csr.wdata, value)
        ctx.set(self.dut.csr.we, 1)
        await ctx.tick()
        ctx.set(self.dut.csr.we, 0)

    async def csr_read(self, ctx, addr):
        ctx.set(self.dut.csr.addr, addr)
        ctx.set(self.dut.csr.re, 1)
        await ctx.tick()
        ctx.set(self.dut.csr.re, 0)
        return ctx.get(self.dut.csr.rdata)

    async def dram_proc(self, ctx):
        d = self.dut.dram
        inflight = []
        cycle = 0
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(d.req.ready, ready)
            if inflight and inflight[0][0] <= cycle:
                ctx.set(d.resp.valid, 1)
                ctx.set(d.resp.payload, inflight[0][1])
            else:
                ctx.set(d.resp.valid, 0)
            _, _, req_valid, req_addr, resp_ready = await ctx.tick().sample(
                d.req.valid, d.req.payload, d.resp.ready)
            if inflight and inflight[0][0] <= cycle and resp_ready:
                inflight.pop(0)
            if req_valid and ready:
                due = max([cycle + 1 + self.rng.randint(0, 6)] + [t for t, _ in inflight])
                inflight.append((due, self.dram.get(req_addr, 0)))
            cycle += 1

    async def engines_proc(self, ctx):
        remaining = [0, 0, 0]
        cycle = 0
        while True:
            ctx.set(self.dut.engine_busy, sum((r > 0) << i for i, r in enumerate(remaining)))
            ctx.set(self.dut.role_wr.ready, 1)
            _, _, starts, wen, weng, widx, wdata, rvalid, rpayload = await ctx.tick().sample(
                self.dut.engine_start, self.dut.desc_wr.en, self.dut.desc_wr.engine,
                self.dut.desc_wr.index, self.dut.desc_wr.data, self.dut.role_wr.valid,
                self.dut.role_wr.payload)
            remaining = [max(0, r - 1) for r in remaining]
            if wen:
                self.descs[Engine(weng)][widx] = wdata
            if rvalid:
                self.roles.append(rpayload.as_value().value
                                  if hasattr(rpayload, "as_value") else int(rpayload))
            for e in Engine:
                if starts & (1 << e.value):
                    assert remaining[e.value] == 0, f"{e.name} started while busy"
                    remaining[e.value] = self.busy_cycles[e.value]
                    self.log.append((cycle, f"start {e.name}", dict(self.descs[e])))
            cycle += 1


def run(dram, cmd_addr, *, after=None, deadline=5000, **kw):
    h = Harness(dram, **kw)
    result = {}

    async def host(ctx):
        await h.csr_write(ctx, CSR.CMD_ADDR, cmd_addr)
        await h.csr_write(ctx, CSR.CTRL, 1)
        while True:
            status = await h.csr_read(ctx, CSR.STATUS)
            if not status & 1:
                break
        result["status"] = status
        result["error"] = await h.csr_read(ctx, CSR.ERROR)
        result["counters"] = [await h.csr_read(ctx, CSR.COUNTERS + i)
                              for i in range(len(CSR_COUNTERS))]
        result["ids"] = [await h.csr_read(ctx, a) for a in
                         (CSR.MAGIC, CSR.HW_CONFIG0, CSR.HW_CONFIG1, CSR.HW_CONFIG2)]
        if after:
            await after(ctx, h, result)

    sim_dut = h.dut

    async def dram_bg(ctx):
        await h.dram_proc(ctx)

    async def eng_bg(ctx):
        await h.engines_proc(ctx)

    from amaranth.sim import Simulator
    sim = Simulator(sim_dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(dram_bg, background=True)
    sim.add_testbench(eng_bg, background=True)
    from amaranth.sim.core import _seconds_to_femtos
    limit = _seconds_to_femtos(deadline * 1e-6)
    while sim.advance():
        assert sim._engine.now <= limit, "controller run did not finish"
    return h, result


def test_runs_commands_in_order_and_respects_waits():
    base = 100
    cmds = [
        header(Opcode.RUN, Engine.LOAD, n_words=2), 0x11, 0x12,
        header(Opcode.ROLES, n_words=2), role(3, 7), role(5, 9),
        header(Opcode.RUN, Engine.PASS, WaitMask.LOAD, n_words=1), 0x21,
        header(Opcode.NOP, n_words=2), 0xdead, 0xbeef,
        header(Opcode.RUN, Engine.STORE, WaitMask.PASS, n_words=3), 0x31, 0x32, 0x33,
        header(Opcode.END),
        header(Opcode.RUN, Engine.LOAD, n_words=1), 0x99,      # after END: never executed
    ]
    dram = {base + i: w for i, w in enumerate(cmds)}
    h, res = run(dram, base)
    assert res["status"] & 0b110 == 0b010      # done, no error
    starts = [(c, name, d) for c, name, d in h.log]
    assert [n for _, n, _ in starts] == ["start LOAD", "start PASS", "start STORE"]
    assert starts[0][2] == {0: 0x11, 1: 0x12}
    assert starts[1][2] == {0: 0x21}
    assert starts[2][2] == {0: 0x31, 1: 0x32, 2: 0x33}
    # PASS waited for LOAD (busy 5 cycles), STORE waited for PASS (busy 9 cycles).
    assert starts[1][0] - starts[0][0] >= h.busy_cycles[Engine.LOAD.value]
    assert starts[2][0] - starts[1][0] >= h.busy_cycles[Engine.PASS.value]
    assert h.roles == [role(3, 7), role(5, 9)]
    cycles = res["counters"][0]
    assert cycles >= sum(h.busy_cycles)
    magic, w0, w1, w2 = res["ids"]
    assert magic == HW_MAGIC
    assert (w0, w1, w2) == hw_config_words(CFG)


def test_bad_opcode_sets_error_and_stops():
    base = 0
    cmds = [header(Opcode.RUN, Engine.LOAD, n_words=1), 5,
            (15 & 0xF),                                   # opcode 15 does not exist
            header(Opcode.RUN, Engine.STORE, n_words=0), header(Opcode.END)]
    h, res = run({base + i: w for i, w in enumerate(cmds)}, base)
    assert res["status"] & 0b100
    assert res["error"] == ErrorCode.BAD_OPCODE
    assert [n for _, n, _ in h.log] == ["start LOAD"]


def test_engine_error_stops_dispatch_and_rerun_is_clean():
    """An error reported by an engine stops the list; a later run starts clean."""
    base = 40
    cmds = [header(Opcode.RUN, Engine.LOAD, n_words=0),
            header(Opcode.RUN, Engine.PASS, WaitMask.LOAD, n_words=0), header(Opcode.END)]
    dram = {base + i: w for i, w in enumerate(cmds)}

    h = Harness(dram)
    dut = h.dut
    out = {}

    async def host(ctx):
        await h.csr_write(ctx, CSR.CMD_ADDR, base)
        await h.csr_write(ctx, CSR.CTRL, 1)
        # Raise an engine error while the LOAD runs.
        await ctx.tick().until(dut.engine_busy[0])
        ctx.set(dut.error_in, ErrorCode.RLC_MALFORMED)
        await ctx.tick()
        ctx.set(dut.error_in, 0)
        while (await h.csr_read(ctx, CSR.STATUS)) & 1:
            pass
        out["first"] = (await h.csr_read(ctx, CSR.STATUS), await h.csr_read(ctx, CSR.ERROR),
                        [n for _, n, _ in h.log])
        h.log.clear()
        await h.csr_write(ctx, CSR.CTRL, 1)
        while (await h.csr_read(ctx, CSR.STATUS)) & 1:
            pass
        out["second"] = (await h.csr_read(ctx, CSR.STATUS), await h.csr_read(ctx, CSR.ERROR),
                         [n for _, n, _ in h.log])

    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)

    async def dram_bg(ctx):
        await h.dram_proc(ctx)

    async def eng_bg(ctx):
        await h.engines_proc(ctx)

    sim.add_testbench(dram_bg, background=True)
    sim.add_testbench(eng_bg, background=True)
    sim.run_until(3000e-6)
    status, err, log = out["first"]
    assert status & 0b110 == 0b110 and err == ErrorCode.RLC_MALFORMED
    assert log == ["start LOAD"]
    status, err, log = out["second"]
    assert status & 0b110 == 0b010 and err == 0
    assert log == ["start LOAD", "start PASS"]


def test_arbiter_routes_responses_in_order():
    dut = DramReadArbiter(2, max_outstanding=4)
    rng = random.Random(3)
    mem = {a: a * 1000 + 7 for a in range(200)}
    got = {0: [], 1: []}
    want = {0: list(range(0, 40)), 1: list(range(100, 140))}

    async def master(ctx, i):
        port = dut.m[i]
        sent = 0
        while len(got[i]) < len(want[i]):
            ctx.set(port.req.valid, sent < len(want[i]) and rng.random() < 0.7)
            ctx.set(port.req.payload, want[i][sent] if sent < len(want[i]) else 0)
            ctx.set(port.resp.ready, rng.random() < 0.7)
            _, _, rv, rr, pv, pr, pd = await ctx.tick().sample(
                port.req.valid, port.req.ready, port.resp.valid, port.resp.ready,
                port.resp.payload)
            if rv and rr:
                sent += 1
            if pv and pr:
                got[i].append(pd)

    async def slave(ctx):
        q = []
        while True:
            ctx.set(dut.dram.req.ready, rng.random() < 0.8)
            ctx.set(dut.dram.resp.valid, bool(q))
            ctx.set(dut.dram.resp.payload, q[0] if q else 0)
            _, _, v, r, a, pv, pr = await ctx.tick().sample(
                dut.dram.req.valid, dut.dram.req.ready, dut.dram.req.payload,
                dut.dram.resp.valid, dut.dram.resp.ready)
            if pv and pr:
                q.pop(0)
            if v and r:
                q.append(mem[a])

    async def m0(ctx):
        await master(ctx, 0)

    async def m1(ctx):
        await master(ctx, 1)

    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(m0)
    sim.add_testbench(m1)
    sim.add_testbench(slave, background=True)
    sim.run_until(5000e-6)
    assert got[0] == [mem[a] for a in want[0]]
    assert got[1] == [mem[a] for a in want[1]]
