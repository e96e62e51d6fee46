# amaranth: UnusedElaboratable=no
"""Amaranth-simulation tests of the FPGA board core (fpga/): UART, block-RAM DRAM, the UART
host bridge (driven at the pin level through a Python UART bit model, against the byte
protocol of ``fpga.protocol``) and ``BoardCore`` with the real accelerator.
"""

from __future__ import annotations

import random

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga.bram_dram import READ_LATENCY, RESP_DEPTH, BramDram
from fpga.bridge import UARTBridge, ping_info
from fpga.core import BoardCore, uart_divisor
from fpga.protocol import (DEFAULT_BAUD, RESET_PULSE_CYCLES, STATUS_BAD_OPCODE, STATUS_OK,
                           STATUS_RANGE, Op)
from fpga.uart import UARTRx, UARTTx
from hw.config import preset
from hw.controller import CsrSignature, hw_config_words
from hw.layouts import (CMD_HEADER, CSR, HW_MAGIC, Engine, LoadMode, Opcode, WaitMask,
                        desc_words, load_desc_layout)
from sim_tests.support.stream import (assert_rejected, get_n, put_all, run_testbenches,
                                      stream_get, stream_put)

MASK64 = (1 << 64) - 1


# -- Python UART bit model ------------------------------------------------------------------

class UartModel:
    """Host side of a UART link at the pin level: :meth:`send` serializes bytes onto
    ``rx_pin`` (8N1, ``divisor`` cycles per bit); the :meth:`monitor` testbench deserializes
    ``tx_pin`` into ``received`` (a stop bit of 0 is recorded in ``framing_errors``)."""

    def __init__(self, rx_pin, tx_pin, divisor):
        self.rx_pin, self.tx_pin, self.divisor = rx_pin, tx_pin, divisor
        self.received = []
        self.framing_errors = 0
        self.stop = False

    async def send(self, ctx, data, *, stop_bit=1):
        for b in bytes(data):
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [stop_bit]:
                ctx.set(self.rx_pin, bit)
                await ctx.tick().repeat(self.divisor)
            ctx.set(self.rx_pin, 1)

    def monitor(self):
        async def tb(ctx):
            d = self.divisor
            while not self.stop:
                _, _, level = await ctx.tick().sample(self.tx_pin)
                if level:
                    continue
                # First cycle of a start bit (+0..1): sample in the middle of each bit.
                await ctx.tick().repeat(d // 2)
                assert ctx.get(self.tx_pin) == 0, "start bit shorter than half a bit"
                value = 0
                for i in range(8):
                    await ctx.tick().repeat(d)
                    value |= ctx.get(self.tx_pin) << i
                await ctx.tick().repeat(d)
                if not ctx.get(self.tx_pin):
                    self.framing_errors += 1
                self.received.append(value)
        return tb

    async def recv(self, ctx, n, *, timeout=None):
        """Wait for ``n`` more bytes; fails after ``timeout`` cycles."""
        timeout = timeout or 40 * self.divisor * (n + 4) + 2000
        for _ in range(timeout):
            if len(self.received) >= n:
                out, self.received = self.received[:n], self.received[n:]
                return bytes(out)
            await ctx.tick()
        raise AssertionError(f"expected {n} bytes, got {bytes(self.received)!r}")

    async def quiet(self, ctx, chars=3):
        """Assert that nothing more is sent for ``chars`` character times."""
        await ctx.tick().repeat(10 * self.divisor * chars)
        assert self.received == [], f"unexpected bytes {bytes(self.received)!r}"

    async def command(self, ctx, frame, n_reply):
        await self.send(ctx, frame)
        return await self.recv(ctx, n_reply)


def csr_write(addr, value):
    return bytes([Op.CSR_WRITE, addr]) + value.to_bytes(8, "little")


def csr_read(addr):
    return bytes([Op.CSR_READ, addr])


def mem_write(addr, words):
    return (bytes([Op.MEM_WRITE]) + addr.to_bytes(4, "little")
            + (len(words) - 1).to_bytes(2, "little")
            + b"".join(w.to_bytes(8, "little") for w in words))


def mem_read(addr, count):
    return bytes([Op.MEM_READ]) + addr.to_bytes(4, "little") + (count - 1).to_bytes(2, "little")


def words_of(data):
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


# -- UART ---------------------------------------------------------------------------------

class Loopback(Elaboratable):
    def __init__(self, divisor):
        self.tx = UARTTx(divisor)
        self.rx = UARTRx(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisor", [4, 5, 7, 8])
def test_uart_loopback_random_bytes(divisor):
    rng = random.Random(divisor)
    data = [rng.getrandbits(8) for _ in range(40)]
    dut = Loopback(divisor)
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.tx.i, data, rng=random.Random(1), stall=0.3)

    async def consumer(ctx):
        # Stalls of a few cycles: well within one character, so nothing is overrun.
        got.extend(await get_n(ctx, dut.rx.o, len(data), rng=random.Random(2), stall=0.6))
        assert ctx.get(dut.rx.overrun) == 0
        assert ctx.get(dut.rx.framing_error) == 0

    run_testbenches(dut, producer, consumer, deadline_cycles=len(data) * 12 * divisor + 2000)
    assert got == data


def test_uart_tx_back_to_back_timing():
    """Bytes offered back to back leave with no idle time: 10 bits of 4 cycles each."""
    dut = UARTTx(4)
    levels = []

    async def feed(ctx):
        await put_all(ctx, dut.i, [0x55, 0x0F])

    async def watch(ctx):
        for _ in range(100):
            _, _, t = await ctx.tick().sample(dut.tx)
            levels.append(t)

    run_testbenches(dut, feed, watch)
    start = levels.index(0)
    bits = levels[start:start + 80:4]
    expect = [0] + [(0x55 >> i) & 1 for i in range(8)] + [1]
    expect += [0] + [(0x0F >> i) & 1 for i in range(8)] + [1]
    assert bits == expect
    # every bit is exactly 4 cycles long
    assert levels[start:start + 80] == [b for b in expect for _ in range(4)]
    assert all(levels[start + 80:])


def test_uart_rx_framing_error_and_overrun():
    dut = UARTRx(5)
    host = UartModel(dut.rx, Signal(), 5)

    async def tb(ctx):
        await host.send(ctx, [0xA7], stop_bit=0)
        await ctx.tick().repeat(20)
        assert ctx.get(dut.framing_error) == 1
        assert ctx.get(dut.o.valid) == 0          # the bad character is dropped
        # The line returns high; the next character is received normally.
        await host.send(ctx, [0x3C])
        await ctx.tick().repeat(5)
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.o.payload) == 0x3C
        assert ctx.get(dut.overrun) == 0
        # Not taken: the next byte is dropped, the held byte kept, overrun set.
        await host.send(ctx, [0x81])
        await ctx.tick().repeat(5)
        assert ctx.get(dut.overrun) == 1
        assert await stream_get(ctx, dut.o) == 0x3C
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.overrun) == 0 and ctx.get(dut.framing_error) == 0
        await host.send(ctx, [0x42])
        assert await stream_get(ctx, dut.o) == 0x42

    run_testbenches(dut, tb, deadline_cycles=2000)


@pytest.mark.parametrize("factor", [0.975, 1.025])
def test_uart_rx_tolerates_rate_mismatch(factor):
    """A sender 2.5 % fast or slow is still received: bits are sampled mid-bit."""
    div = 8
    dut = UARTRx(div)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x0F, 0xF0, 0x81, 0x7E]
    got = []

    async def send(ctx):
        t = 0                                  # cycle of the current edge
        for n, b in enumerate(data):
            bits = [0] + [(b >> i) & 1 for i in range(8)] + [1]
            for k, bit in enumerate(bits):
                ctx.set(dut.rx, bit)
                end = round((n * 10 + k + 1) * div * factor)
                await ctx.tick().repeat(end - t)
                t = end

    async def recv(ctx):
        got.extend(await get_n(ctx, dut.o, len(data)))
        assert ctx.get(dut.framing_error) == 0

    run_testbenches(dut, send, recv, deadline_cycles=2000)
    assert got == data


def test_uart_rx_ignores_glitch():
    dut = UARTRx(8)

    async def tb(ctx):
        await ctx.tick().repeat(4)
        ctx.set(dut.rx, 0)          # 2-cycle low pulse: not a start bit
        await ctx.tick().repeat(2)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(120)
        assert ctx.get(dut.o.valid) == 0 and ctx.get(dut.framing_error) == 0

    run_testbenches(dut, tb)


def test_uart_divisor_checks():
    assert_rejected(UARTRx, 3, match="divisor")
    assert_rejected(UARTTx, 2, match="divisor")
    assert uart_divisor(50e6, DEFAULT_BAUD) == 50
    assert uart_divisor(25e6, 115200) == 217
    with pytest.raises(ValueError, match="at least 4"):
        uart_divisor(3e6, 1_000_000)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(5.5e6, 1_000_000)     # divisor 6 -> 917 kbaud, 8 % off
    with pytest.raises(ValueError, match="at least 4"):
        BoardCore(preset("tiny"), clk_freq_hz=2e6)
    with pytest.raises(ValueError, match="dram_aw"):
        BoardCore(preset("tiny"), clk_freq_hz=50e6, dram_aw=30)
    with pytest.raises(ValueError, match="rx_timeout"):
        BoardCore(preset("tiny"), clk_freq_hz=50e6, rx_timeout=100)
    with pytest.raises(TypeError, match="reset_buffer"):
        BoardCore(preset("tiny"), clk_freq_hz=50e6, reset_buffer="DCCA")


# -- BramDram -----------------------------------------------------------------------------

def _port_reader(port, addrs, got, *, rng, req_stall, resp_stall):
    """Two testbenches: issue reads of ``addrs``; collect responses into ``got``."""
    async def req(ctx):
        await put_all(ctx, port.req, addrs, rng=rng, stall=req_stall)

    async def resp(ctx):
        got.extend(await get_n(ctx, port.resp, len(addrs), rng=random.Random(rng.random()),
                               stall=resp_stall))
    return req, resp


@pytest.mark.parametrize("groups", [1, 8, 64])
def test_bram_dram_read_order_with_backpressure(groups):
    aw = 6
    dut = BramDram(aw, groups=groups)
    rng = random.Random(7)
    mem = [rng.getrandbits(64) for _ in range(1 << aw)]
    addrs = [rng.randrange(1 << aw) for _ in range(300)]
    got_acc, got_host = [], []
    phase = [0]

    async def writer(ctx):
        await put_all(ctx, dut.acc_wr, [{"addr": a, "data": d} for a, d in enumerate(mem)])
        await ctx.tick()
        phase[0] = 1

    r1, r2 = _port_reader(dut.acc_rd, addrs, got_acc, rng=random.Random(1), req_stall=0.3,
                          resp_stall=0.5)
    h1, h2 = _port_reader(dut.host_rd, addrs[::-1], got_host, rng=random.Random(2),
                          req_stall=0.3, resp_stall=0.5)

    def after_write(tb):
        async def run(ctx):
            while not phase[0]:
                await ctx.tick()
            await tb(ctx)
        return run

    run_testbenches(dut, writer, *(after_write(t) for t in (r1, r2, h1, h2)),
                    deadline_cycles=5000)
    assert got_acc == [mem[a] for a in addrs]
    assert got_host == [mem[a] for a in addrs[::-1]]


def test_bram_dram_full_throughput():
    """With resp.ready high, n reads stream at 1 word per cycle, READ_LATENCY cycles after
    the first request."""
    dut = BramDram(5)
    n = 64

    async def tb(ctx):
        await put_all(ctx, dut.acc_wr, [{"addr": a, "data": a * 0x0101 + 7} for a in range(32)])
        ctx.set(dut.acc_rd.resp.ready, 1)
        ctx.set(dut.acc_rd.req.valid, 1)
        got, cycle, first, last, sent = [], 0, None, None, 0
        while len(got) < n:
            ctx.set(dut.acc_rd.req.payload, sent % 32)
            ctx.set(dut.acc_rd.req.valid, sent < n)
            _, _, rr, rv, rp = await ctx.tick().sample(dut.acc_rd.req.ready,
                                                       dut.acc_rd.resp.valid,
                                                       dut.acc_rd.resp.payload)
            if sent < n and rr:
                sent += 1
            if rv:
                got.append(rp)
                first = cycle if first is None else first
                last = cycle
            cycle += 1
        assert got == [(a % 32) * 0x0101 + 7 for a in range(n)]
        assert first == READ_LATENCY
        assert last - first == n - 1          # no bubbles

    run_testbenches(dut, tb, deadline_cycles=500)


def test_bram_dram_host_priority_and_range():
    aw = 4
    dut = BramDram(aw)

    async def tb(ctx):
        # Both write the same cycle: the host's beat goes first, the accelerator waits.
        ctx.set(dut.acc_wr.valid, 1)
        ctx.set(dut.acc_wr.payload, {"addr": 3, "data": 111})
        ctx.set(dut.host_wr.valid, 1)
        ctx.set(dut.host_wr.payload, {"addr": 3, "data": 222})
        for _ in range(5):
            _, _, ar, hr = await ctx.tick().sample(dut.acc_wr.ready, dut.host_wr.ready)
            assert ar == 0 and hr == 1
        ctx.set(dut.host_wr.valid, 0)
        await ctx.tick().until(dut.acc_wr.ready)
        ctx.set(dut.acc_wr.valid, 0)
        # Reads: the accelerator waits while the host requests (and has credits).
        ctx.set(dut.acc_rd.req.valid, 1)
        ctx.set(dut.acc_rd.req.payload, 3)
        ctx.set(dut.acc_rd.resp.ready, 1)
        ctx.set(dut.host_rd.req.valid, 1)
        ctx.set(dut.host_rd.req.payload, 3)
        ctx.set(dut.host_rd.resp.ready, 1)
        for _ in range(10):
            _, _, ar, hr, rv, rp = await ctx.tick().sample(
                dut.acc_rd.req.ready, dut.host_rd.req.ready, dut.host_rd.resp.valid,
                dut.host_rd.resp.payload)
            assert ar == 0 and hr == 1
            if rv:
                assert rp == 111       # the accelerator's write went in after the host's
        # The host stops taking responses: once its credits run out, the accelerator's
        # request goes through although the host's request is still pending.
        ctx.set(dut.host_rd.resp.ready, 0)
        await ctx.tick().until(dut.acc_rd.req.ready)
        assert ctx.get(dut.host_rd.req.valid) == 1 and ctx.get(dut.host_rd.req.ready) == 0
        ctx.set(dut.acc_rd.req.valid, 0)
        assert await stream_get(ctx, dut.acc_rd.resp) == 111
        ctx.set(dut.host_rd.req.valid, 0)
        assert await get_n(ctx, dut.host_rd.resp, RESP_DEPTH) == [111] * RESP_DEPTH
        assert ctx.get(dut.range_err) == 0
        # Out of range: no aliasing onto word 3, reads return 0, sticky flag.
        await stream_put(ctx, dut.acc_wr, {"addr": (1 << aw) + 3, "data": 999})
        await ctx.tick()
        assert ctx.get(dut.range_err) == 1
        await stream_put(ctx, dut.acc_rd.req, 3)
        assert await stream_get(ctx, dut.acc_rd.resp) == 111
        await stream_put(ctx, dut.acc_rd.req, 1 << 31 | 3)
        assert await stream_get(ctx, dut.acc_rd.resp) == 0
        ctx.set(dut.range_err_clear, 1)
        await ctx.tick()
        ctx.set(dut.range_err_clear, 0)
        assert ctx.get(dut.range_err) == 0
        await stream_put(ctx, dut.host_rd.req, 1 << aw)
        assert await stream_get(ctx, dut.host_rd.resp) == 0
        assert ctx.get(dut.range_err) == 1

    run_testbenches(dut, tb, deadline_cycles=300)


def test_bram_dram_acc_reset_drops_responses():
    dut = BramDram(4)

    async def tb(ctx):
        await put_all(ctx, dut.acc_wr, [{"addr": a, "data": 100 + a} for a in range(16)])
        # RESP_DEPTH requests, no response taken; reset in the cycle after the last one.
        ctx.set(dut.acc_rd.req.valid, 1)
        for a in range(RESP_DEPTH):
            ctx.set(dut.acc_rd.req.payload, a)
            await ctx.tick()
        ctx.set(dut.acc_rd.req.valid, 0)
        assert ctx.get(dut.acc_rd.req.ready) == 0      # all credits used
        ctx.set(dut.acc_rst, 1)
        for _ in range(2):
            assert ctx.get(dut.acc_rd.resp.valid) == 0
            assert ctx.get(dut.acc_rd.req.ready) == 0
            await ctx.tick()
        ctx.set(dut.acc_rst, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.acc_rd.resp.valid) == 0
        await put_all(ctx, dut.acc_rd.req, [9, 10, 11, 12])
        assert await get_n(ctx, dut.acc_rd.resp, 4) == [109, 110, 111, 112]

    run_testbenches(dut, tb, deadline_cycles=300)


# -- bridge at the pin level ----------------------------------------------------------------

class FakeCsr(wiring.Component):
    """Eight writable 64-bit registers at 0..7; other addresses read ``0xC5C5 << 48 | addr``.
    ``writes`` counts ``we`` cycles."""
    def __init__(self):
        super().__init__({"csr": In(CsrSignature), "writes": Out(16)})

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(64, name=f"reg{i}") for i in range(8)]
        with m.If(self.csr.we):
            m.d.sync += self.writes.eq(self.writes + 1)
            with m.Switch(self.csr.addr):
                for i in range(8):
                    with m.Case(i):
                        m.d.sync += regs[i].eq(self.csr.wdata)
        with m.If(self.csr.re):
            m.d.sync += self.csr.rdata.eq(0xC5C5 << 48 | self.csr.addr)
            with m.Switch(self.csr.addr):
                for i in range(8):
                    with m.Case(i):
                        m.d.sync += self.csr.rdata.eq(regs[i])
        return m


class BridgeBench(Elaboratable):
    """UART pins -> UARTRx -> UARTBridge -> UARTTx -> pins, with a BramDram (accelerator
    ports free for the testbench) and a FakeCsr."""

    def __init__(self, divisor=4, dram_aw=6, rx_timeout=300, clk_freq_hz=4_000_000):
        self.divisor = divisor
        self.dram_aw = dram_aw
        self.clk_freq_hz = clk_freq_hz
        self.urx, self.utx = UARTRx(divisor), UARTTx(divisor)
        self.bridge = UARTBridge(dram_aw, clk_freq_hz, rx_timeout)
        self.dram = BramDram(dram_aw)
        self.csr = FakeCsr()
        self.rx_pin = Signal(init=1)
        self.tx_pin = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx, m.submodules.utx = self.urx, self.utx
        m.submodules.bridge, m.submodules.dram = self.bridge, self.dram
        m.submodules.csr = self.csr
        m.d.comb += [self.urx.rx.eq(self.rx_pin), self.tx_pin.eq(self.utx.tx)]
        wiring.connect(m, self.urx.o, self.bridge.rx)
        wiring.connect(m, self.bridge.tx, self.utx.i)
        wiring.connect(m, self.bridge.csr, self.csr.csr)
        wiring.connect(m, self.bridge.mem_rd, self.dram.host_rd)
        wiring.connect(m, self.bridge.mem_wr, self.dram.host_wr)
        return m


def run_bridge(bench, body, *, extra=(), deadline=100_000):
    host = UartModel(bench.rx_pin, bench.tx_pin, bench.divisor)

    async def main(ctx):
        await ctx.tick().repeat(5)
        await body(ctx, host)
        await host.quiet(ctx)
        assert host.framing_errors == 0
        host.stop = True

    run_testbenches(bench, main, host.monitor(), *extra, deadline_cycles=deadline)


def test_bridge_ping_csr_and_bad_opcode():
    bench = BridgeBench(dram_aw=6, clk_freq_hz=4_321_000)

    async def body(ctx, host):
        info = await host.command(ctx, [Op.PING], 9)
        assert info == b"ACG" + bytes([1, 6]) + (4321).to_bytes(3, "little") + bytes([STATUS_OK])
        assert info[:8] == ping_info(6, 4_321_000)
        assert await host.command(ctx, csr_write(3, 0x0123456789ABCDEF), 1) == bytes([STATUS_OK])
        assert await host.command(ctx, csr_write(5, MASK64), 1) == bytes([STATUS_OK])
        assert ctx.get(bench.csr.writes) == 2
        r = await host.command(ctx, csr_read(3), 9)
        assert r == (0x0123456789ABCDEF).to_bytes(8, "little") + bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(5), 9)
        assert r == MASK64.to_bytes(8, "little") + bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(0xAB), 9)
        assert r == (0xC5C5 << 48 | 0xAB).to_bytes(8, "little") + bytes([STATUS_OK])
        # Unknown opcodes: one status byte each, nothing else consumed.
        assert await host.command(ctx, [0x77], 1) == bytes([STATUS_BAD_OPCODE])
        assert await host.command(ctx, [0xFF], 1) == bytes([STATUS_BAD_OPCODE])
        assert (await host.command(ctx, [Op.PING], 9))[-1] == STATUS_OK
        assert ctx.get(bench.csr.writes) == 2

    run_bridge(bench, body)


def test_bridge_mem_bursts_and_range():
    aw = 5
    bench = BridgeBench(dram_aw=aw)
    rng = random.Random(11)
    model = [0] * (1 << aw)

    async def body(ctx, host):
        for addr, count in [(0, 1), (5, 7), (20, 3), (31, 1), (9, 12)]:
            words = [rng.getrandbits(64) for _ in range(count)]
            st = await host.command(ctx, mem_write(addr, words), 1)
            assert st == bytes([STATUS_OK])
            model[addr:addr + count] = words
        for addr, count in [(0, 1), (5, 7), (31, 1)]:
            r = await host.command(ctx, mem_read(addr, count), 8 * count + 1)
            assert r[-1] == STATUS_OK
            assert words_of(r[:-1]) == model[addr:addr + count]
        # Burst crossing the top: in-range words written, the rest dropped (no aliasing).
        words = [rng.getrandbits(64) for _ in range(4)]
        assert await host.command(ctx, mem_write(30, words), 1) == bytes([STATUS_RANGE])
        model[30:32] = words[:2]
        r = await host.command(ctx, mem_read(29, 5), 41)
        assert r[-1] == STATUS_RANGE
        assert words_of(r[:-1]) == model[29:32] + [0, 0]
        # 32-bit wrap-around of addr + i is out of range too.
        assert await host.command(ctx, mem_write(0xFFFF_FFFF, [1, 2]), 1) == bytes([STATUS_RANGE])
        r = await host.command(ctx, mem_read(0xFFFF_FFFF, 2), 17)
        assert r == bytes(16) + bytes([STATUS_RANGE])
        r = await host.command(ctx, mem_read(0, 32), 8 * 32 + 1)
        assert r[-1] == STATUS_OK and words_of(r[:-1]) == model
        assert ctx.get(bench.dram.range_err) == 0     # the bridge never sent them

    run_bridge(bench, body, deadline=200_000)


def test_bridge_host_waits_for_accelerator_traffic():
    """The accelerator hammers both memory ports; host bursts still complete correctly."""
    bench = BridgeBench(dram_aw=5)
    rng = random.Random(3)
    words = [rng.getrandbits(64) for _ in range(10)]
    stop = [False]
    acc_data = {a: 0xACC0 + a for a in range(16, 32)}

    async def hammer(ctx):
        dram = bench.dram
        ctx.set(dram.acc_rd.resp.ready, 1)
        r = random.Random(5)
        while not stop[0]:
            a = r.randrange(16, 32)
            ctx.set(dram.acc_wr.valid, r.random() < 0.9)
            ctx.set(dram.acc_wr.payload, {"addr": a, "data": acc_data[a]})
            ctx.set(dram.acc_rd.req.valid, r.random() < 0.9)
            ctx.set(dram.acc_rd.req.payload, r.randrange(32))
            await ctx.tick()
        ctx.set(dram.acc_wr.valid, 0)
        ctx.set(dram.acc_rd.req.valid, 0)

    async def body(ctx, host):
        assert await host.command(ctx, mem_write(2, words), 1) == bytes([STATUS_OK])
        r = await host.command(ctx, mem_read(2, 10), 81)
        assert r == b"".join(w.to_bytes(8, "little") for w in words) + bytes([STATUS_OK])
        r = await host.command(ctx, mem_read(20, 8), 65)
        assert words_of(r[:-1]) == [0xACC0 + a for a in range(20, 28)]
        stop[0] = True

    run_bridge(bench, body, extra=[hammer])


def test_bridge_mem_write_under_continuous_accelerator_writes():
    """While the accelerator writes every cycle, a host MEM_WRITE (host priority) still
    lands every word with no UART overrun, its status follows the last write, and the
    accelerator's stalled beats all land too."""
    bench = BridgeBench(dram_aw=5)
    done = [False]
    acc_beats = [0]

    async def acc_writer(ctx):
        dram = bench.dram
        while not done[0]:
            k = acc_beats[0]
            ctx.set(dram.acc_wr.valid, 1)
            ctx.set(dram.acc_wr.payload, {"addr": 16 + k % 16, "data": 0x5A00 + k})
            _, _, r = await ctx.tick().sample(dram.acc_wr.ready)
            if r:
                acc_beats[0] += 1
        ctx.set(dram.acc_wr.valid, 0)

    async def body(ctx, host):
        words = [0x1111, 0x2222, 0x3333, 0x4444]
        assert await host.command(ctx, mem_write(4, words), 1) == bytes([STATUS_OK])
        done[0] = True
        await ctx.tick().repeat(4)
        r = await host.command(ctx, mem_read(4, 4), 33)
        assert words_of(r[:-1]) == words
        n = acc_beats[0]
        assert n > 16
        expect = {16 + k % 16: 0x5A00 + k for k in range(n)}
        r = await host.command(ctx, mem_read(16, 16), 16 * 8 + 1)
        assert words_of(r[:-1]) == [expect[a] for a in range(16, 32)]
        assert ctx.get(bench.urx.overrun) == 0

    run_bridge(bench, body, extra=[acc_writer])


def test_bridge_rx_timeout_drops_partial_frame():
    bench = BridgeBench(rx_timeout=300)

    async def body(ctx, host):
        # Truncated CSR_WRITE: without the timeout, the next PING's byte would complete it.
        await host.send(ctx, csr_write(2, 0x1122334455667788)[:5])
        await ctx.tick().repeat(400)
        assert host.received == []
        assert await host.command(ctx, [Op.PING], 9) == ping_info(6, 4e6) + bytes([STATUS_OK])
        assert ctx.get(bench.csr.writes) == 0
        # A truncated MEM_WRITE in the data phase: the whole word is not written.
        await host.send(ctx, mem_write(9, [0xDEADBEEF_CAFEF00D])[:12])
        await ctx.tick().repeat(400)
        r = await host.command(ctx, mem_read(9, 1), 9)
        assert r == bytes(8) + bytes([STATUS_OK])
        # Gaps shorter than the timeout are fine.
        for b in csr_write(2, 0x1122334455667788):
            await host.send(ctx, [b])
            await ctx.tick().repeat(200)
        assert await host.recv(ctx, 1) == bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(2), 9)
        assert r == (0x1122334455667788).to_bytes(8, "little") + bytes([STATUS_OK])

    run_bridge(bench, body)


def test_bridge_reset_pulse():
    bench = BridgeBench()
    high = []
    stop = [False]

    async def count(ctx):
        while not stop[0]:
            _, _, r = await ctx.tick().sample(bench.bridge.core_rst)
            high.append(r)

    async def body(ctx, host):
        assert await host.command(ctx, [Op.RESET], 1) == bytes([STATUS_OK])
        assert await host.command(ctx, [Op.PING], 9) == ping_info(6, 4e6) + bytes([STATUS_OK])
        assert await host.command(ctx, [Op.RESET], 1) == bytes([STATUS_OK])
        stop[0] = True

    run_bridge(bench, body, extra=[count])
    pulses = [len(r) for r in "".join(map(str, high)).split("0") if r]
    assert pulses == [RESET_PULSE_CYCLES, RESET_PULSE_CYCLES]


def test_bridge_rejects_bad_parameters():
    assert_rejected(UARTBridge, 0, 50e6, 1000, match="dram_aw")
    assert_rejected(UARTBridge, 10, 50e6, 0, match="rx_timeout")
    assert_rejected(UARTBridge, 10, 2e10, 1000, match="clk_freq_hz")
    assert_rejected(BramDram, 25, match="dram_aw")
    for groups in (3, 128):
        assert_rejected(lambda aw, g=groups: BramDram(aw, groups=g), 10, match="groups")


# -- BoardCore with the real accelerator -------------------------------------------------------

def test_board_core_tiny_end_to_end():
    cfg = preset("tiny")
    aw = 10
    baud = 1_000_000
    dut = BoardCore(cfg, clk_freq_hz=4 * baud, baud=baud, dram_aw=aw)
    assert dut.divisor == 4
    host = UartModel(dut.uart_rx, dut.uart_tx, 4)
    rng = random.Random(21)
    words = [rng.getrandbits(64) for _ in range(3)]

    async def main(ctx):
        await ctx.tick().repeat(5)
        assert await host.command(ctx, [Op.PING], 9) == ping_info(aw, 4e6) + bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(CSR.MAGIC), 9)
        assert r == HW_MAGIC.to_bytes(8, "little") + bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(CSR.HW_CONFIG0), 9)
        assert r == hw_config_words(cfg)[0].to_bytes(8, "little") + bytes([STATUS_OK])
        assert await host.command(ctx, csr_write(CSR.CMD_ADDR, 0x2A5), 1) == bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(CSR.CMD_ADDR), 9)
        assert r == (0x2A5).to_bytes(8, "little") + bytes([STATUS_OK])
        assert await host.command(ctx, mem_write(1020, words), 1) == bytes([STATUS_OK])
        r = await host.command(ctx, mem_read(1020, 3), 25)
        assert r == b"".join(w.to_bytes(8, "little") for w in words) + bytes([STATUS_OK])
        leds = ctx.get(dut.leds)
        assert leds & 0b11_0000 == 0b11_0000           # rx and tx activity
        assert leds & 0b1100_0111 == 0                   # idle, no errors
        # RESET resets the accelerator (CMD_ADDR back to 0); DRAM contents are kept.
        assert await host.command(ctx, [Op.RESET], 1) == bytes([STATUS_OK])
        r = await host.command(ctx, csr_read(CSR.CMD_ADDR), 9)
        assert r == bytes(8) + bytes([STATUS_OK])
        r = await host.command(ctx, mem_read(1021, 1), 9)
        assert r == words[1].to_bytes(8, "little") + bytes([STATUS_OK])
        await host.quiet(ctx, 2)
        assert host.framing_errors == 0
        host.stop = True

    run_testbenches(dut, main, host.monitor(), deadline_cycles=20_000)


def test_board_core_leds_heartbeat():
    """LED 3 toggles every clk_freq_hz / 3 cycles (1.5 Hz blink); LED 7 stays 0."""
    dut = BoardCore(preset("tiny"), clk_freq_hz=1000, baud=250, dram_aw=4, rx_timeout=200)
    levels = []

    async def tb(ctx):
        for _ in range(1100):
            _, _, leds = await ctx.tick().sample(dut.leds)
            levels.append(leds)

    run_testbenches(dut, tb)
    beat = [(v >> 3) & 1 for v in levels]
    edges = [i for i in range(1, len(beat)) if beat[i] != beat[i - 1]]
    assert [b - a for a, b in zip(edges, edges[1:])] == [333] * (len(edges) - 1)
    assert len(edges) == 3
    assert all(v & 0b1111_0111 == 0 for v in levels)


def _cmd(opcode, engine=Engine.LOAD, payload=()):
    head = CMD_HEADER.const({"opcode": opcode, "engine": engine, "wait": WaitMask(0),
                             "n_words": len(payload)}).as_value().value
    return [head, *payload]


def test_board_core_reset_aborts_a_run():
    """RESET mid-run: the accelerator stops (not busy), the DRAM responses in flight are
    dropped (the next run fetches exactly its own command words: CMD_PTR ends one past its
    END), and the DRAM contents survive."""
    cfg = preset("tiny")
    dut = BoardCore(cfg, clk_freq_hz=4e6, dram_aw=11)
    host = UartModel(dut.uart_rx, dut.uart_tx, 4)
    layout = load_desc_layout()
    bits = layout.const({"mode": LoadMode.RAW, "dram_addr": 0, "n_words": 1200,
                         "glb_word": 0}).as_value().value
    desc = [(bits >> (64 * i)) & MASK64 for i in range(desc_words(layout))]
    long_run = _cmd(Opcode.RUN, Engine.LOAD, desc) + _cmd(Opcode.END)
    short_run = _cmd(Opcode.END)
    ok = bytes([STATUS_OK])

    async def status(ctx):
        r = await host.command(ctx, csr_read(CSR.STATUS), 9)
        assert r[-1] == STATUS_OK
        return int.from_bytes(r[:8], "little")

    async def main(ctx):
        await ctx.tick().repeat(5)
        assert await host.command(ctx, mem_write(1900, long_run), 1) == ok
        assert await host.command(ctx, mem_write(1950, short_run), 1) == ok
        assert await host.command(ctx, csr_write(CSR.CMD_ADDR, 1900), 1) == ok
        assert await host.command(ctx, csr_write(CSR.CTRL, 1), 1) == ok
        assert await status(ctx) == 0b001                 # busy
        assert ctx.get(dut.leds) & 1 == 1
        assert await host.command(ctx, [Op.RESET], 1) == ok
        assert await status(ctx) == 0b000                 # idle, not done
        assert ctx.get(dut.leds) & 0b111 == 0
        assert await host.command(ctx, csr_write(CSR.CMD_ADDR, 1950), 1) == ok
        assert await host.command(ctx, csr_write(CSR.CTRL, 1), 1) == ok
        assert await status(ctx) == 0b010                 # done, no error
        r = await host.command(ctx, csr_read(CSR.CMD_PTR), 9)
        assert r == (1950 + len(short_run)).to_bytes(8, "little") + ok
        assert ctx.get(dut.leds) & 0b111 == 0b010
        r = await host.command(ctx, mem_read(1900, 2), 17)
        assert words_of(r[:-1]) == long_run[:2] and r[-1] == STATUS_OK
        host.stop = True

    run_testbenches(dut, main, host.monitor(), deadline_cycles=30_000)


def test_board_core_tiny_converts_to_verilog():
    v = verilog.convert(BoardCore(preset("tiny"), clk_freq_hz=4e6, dram_aw=10),
                        name="board_core", emit_src=False)
    assert "module board_core" in v
    for port in ("uart_rx", "uart_tx", "leds"):
        assert port in v
