"""The host side of the UART bridge (``sw_driver.serial``).

(a) Fast tests of ``BridgeClient`` / ``SerialTarget`` against :class:`FakeBoard`, a
    pure-Python model of the bridge protocol (``fpga.protocol``) with a scripted accelerator
    and fault injection: framing, burst splitting, status errors, timeouts, resync, range
    checks before any byte is sent.
(b) The round trip on Verilator (marked ``verilator``): the real driver, unchanged, talks to
    the simulated ``fpga.core.BoardCore`` through its UART pins (``sw_driver.sim.board_tb``)
    and runs a conv layer bit-exact against the golden model, then a RESET mid-run and a
    clean rerun.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from fpga.protocol import (MAX_BURST_WORDS, PING_MAGIC, PROTOCOL_VERSION, STATUS_BAD_OPCODE,
                           STATUS_OK, STATUS_RANGE, Op)
from hw.config import preset
from hw.controller import hw_config_words
from hw.layouts import CSR, CSR_COUNTERS, HW_MAGIC
from sw_driver.accelerator import Accelerator
from sw_driver.serial import (BridgeClient, BridgeStatusError, ConfigMismatchError,
                              SerialProtocolError, SerialTarget, SerialTimeout)
from sw_driver.targets import AcceleratorError

TINY = preset("tiny")


# =====================================================================================
# FakeBoard: the bridge protocol in Python, byte for byte.
# =====================================================================================

class FakeBoard:
    """A pyserial-like port with the board behind it.

    ``write`` feeds the bridge's frame parser; ``read(n)`` returns up to ``n`` pending reply
    bytes at once (an empty read stands for ``timeout`` seconds of silence, which - like the
    real bridge's ``rx_timeout`` - drops a partly received frame). The accelerator is a
    script: after a start it stays busy for ``busy_polls`` STATUS reads (``None``: forever),
    then ``on_run(mem, cmd_addr)`` runs and it is done.

    Faults: ``mute_replies`` (the next n replies are swallowed), ``junk_before_reply`` (bytes
    sent ahead of the next reply), ``corrupt_status`` (the next status byte is replaced),
    ``corrupt_opcode`` (the next frame's opcode byte arrives as this value), ``dead``.
    """

    def __init__(self, config=TINY, *, dram_aw=12, clock_khz=25_000, hw_config=None):
        self.mem = np.zeros(1 << dram_aw, dtype=np.uint64)
        self.dram_aw = dram_aw
        self.clock_khz = clock_khz
        self.ids = [HW_MAGIC, *(hw_config or hw_config_words(config))]
        self.timeout = 0.5
        self.rx = bytearray()
        self.tx = bytearray()
        self.raw_in = bytearray()          # every byte the host sent
        self.frames = []                   # (op, fields...) of every parsed frame
        self.cmd_addr = 0
        self.busy = False
        self.done = False
        self.error = 0
        self.busy_polls = 2
        self._polls_left = 0
        self.counters = [0] * len(CSR_COUNTERS)
        self.final_counters = [1000 + i for i in range(len(CSR_COUNTERS))]
        self.cycles_per_poll = 100
        self.on_run = None
        self.starts = 0
        self.mute_replies = 0
        self.junk_before_reply = b""
        self.corrupt_status = None
        self.corrupt_opcode = None
        self.dead = False
        self.resets = 0
        self.status_reads = 0

    # ---- pyserial-like side ------------------------------------------------------------
    def write(self, data):
        data = bytes(data)
        self.raw_in += data
        if self.dead:
            return len(data)
        if self.corrupt_opcode is not None and not self.rx:
            data = bytes([self.corrupt_opcode]) + data[1:]
            self.corrupt_opcode = None
        self.rx += data
        self._parse()
        return len(data)

    def read(self, n):
        out = bytes(self.tx[:n])
        del self.tx[:n]
        if not out:
            self.rx.clear()                # a quiet line: the bridge drops a partial frame
        return out

    def reset_input_buffer(self):
        self.tx.clear()

    # ---- bridge --------------------------------------------------------------------------
    def _reply(self, data: bytes, status=STATUS_OK):
        if self.corrupt_status is not None:
            status, self.corrupt_status = self.corrupt_status, None
        if self.mute_replies:
            self.mute_replies -= 1
            return
        self.tx += self.junk_before_reply + data + bytes([status])
        self.junk_before_reply = b""

    def _parse(self):
        rx = self.rx
        while rx:
            op = rx[0]
            if op in (Op.PING, Op.RESET):
                need = 1
            elif op == Op.CSR_WRITE:
                need = 10
            elif op == Op.CSR_READ:
                need = 2
            elif op == Op.MEM_READ:
                need = 7
            elif op == Op.MEM_WRITE:
                if len(rx) < 7:
                    return
                need = 7 + 8 * (int.from_bytes(rx[5:7], "little") + 1)
            else:
                self.frames.append(("BAD", op))
                del rx[0]
                self._reply(b"", STATUS_BAD_OPCODE)
                continue
            if len(rx) < need:
                return
            frame = bytes(rx[:need])
            del rx[:need]
            self._execute(frame)

    def _execute(self, f):
        op = Op(f[0])
        if op == Op.PING:
            self.frames.append(("PING",))
            self._reply(PING_MAGIC + bytes([PROTOCOL_VERSION, self.dram_aw])
                        + self.clock_khz.to_bytes(3, "little"))
        elif op == Op.RESET:
            self.frames.append(("RESET",))
            self.resets += 1
            self.busy = self.done = False
            self.error = self.cmd_addr = 0
            self.counters = [0] * len(CSR_COUNTERS)
            self._reply(b"")
        elif op == Op.CSR_WRITE:
            addr, value = f[1], int.from_bytes(f[2:10], "little")
            self.frames.append(("CSR_WRITE", addr, value))
            if addr == CSR.CTRL and not self.busy:
                if value & 2:
                    self.done, self.error = False, 0
                if value & 1:
                    self.starts += 1
                    self.busy, self.done = True, False
                    self._polls_left = self.busy_polls
                    self.counters = [0] * len(CSR_COUNTERS)
            elif addr == CSR.CMD_ADDR and not self.busy:
                self.cmd_addr = value
            self._reply(b"")
        elif op == Op.CSR_READ:
            addr = f[1]
            self.frames.append(("CSR_READ", addr))
            self._reply(self._csr(addr).to_bytes(8, "little"))
        elif op in (Op.MEM_WRITE, Op.MEM_READ):
            addr = int.from_bytes(f[1:5], "little")
            n = int.from_bytes(f[5:7], "little") + 1
            self.frames.append((op.name, addr, n))
            idx = np.arange(addr, addr + n)
            ok = idx < len(self.mem)
            status = STATUS_OK if ok.all() else STATUS_RANGE
            if op == Op.MEM_WRITE:
                words = np.frombuffer(f[7:], dtype="<u8")
                self.mem[idx[ok]] = words[ok]
                self._reply(b"", status)
            else:
                out = np.zeros(n, dtype=np.uint64)
                out[ok] = self.mem[idx[ok]]
                self._reply(out.astype("<u8").tobytes(), status)

    def _csr(self, addr):
        if addr == CSR.STATUS:
            self.status_reads += 1
            if self.status_reads > 10_000:
                raise RuntimeError("the host keeps polling STATUS: no deadline?")
            if self.busy:
                self.counters[0] += self.cycles_per_poll
                if self.busy_polls is not None:
                    self._polls_left -= 1
                    if self._polls_left <= 0:
                        self.busy, self.done = False, True
                        self.counters = list(self.final_counters)
                        if self.on_run:
                            self.on_run(self.mem, self.cmd_addr)
            return int(self.busy) | int(self.done) << 1 | int(self.error != 0) << 2
        if addr == CSR.ERROR:
            return self.error
        if addr == CSR.CMD_ADDR:
            return self.cmd_addr
        if CSR.MAGIC <= addr <= CSR.HW_CONFIG2:
            return self.ids[addr - CSR.MAGIC]
        if CSR.COUNTERS <= addr < CSR.COUNTERS + len(CSR_COUNTERS):
            return self.counters[addr - CSR.COUNTERS]
        return 0


def _ops(board):
    return [f[0] for f in board.frames]


# =====================================================================================
# (a) BridgeClient against the fake board
# =====================================================================================

def test_ping_reports_dram_size_and_clock():
    board = FakeBoard(dram_aw=13, clock_khz=48_000)
    c = BridgeClient(board)
    info = c.ping()
    assert (info.version, info.dram_aw, info.clock_hz) == (PROTOCOL_VERSION, 13, 48_000_000)
    assert info.dram_words == 8192
    assert bytes(board.raw_in) == b"\x00"
    assert (c.bytes_sent, c.bytes_received) == (1, 9)


def test_csr_framing_is_byte_exact():
    board = FakeBoard()
    c = BridgeClient(board)
    c.csr_write(CSR.CMD_ADDR, 0x1122334455667788)
    assert bytes(board.raw_in) == bytes([0x01, 3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
                                         0x11])
    assert board.cmd_addr == 0x1122334455667788
    assert c.csr_read(CSR.CMD_ADDR) == 0x1122334455667788
    assert bytes(board.raw_in[10:]) == bytes([0x02, 3])
    assert c.csr_read(CSR.MAGIC) == HW_MAGIC
    with pytest.raises(ValueError, match="64 bits"):
        c.csr_write(CSR.CTRL, 1 << 64)
    with pytest.raises(ValueError, match="CSR address"):
        c.csr_read(256)


def test_mem_write_read_round_trip_and_frame_layout():
    board = FakeBoard()
    c = BridgeClient(board)
    c.ping()
    rng = np.random.default_rng(1)
    words = rng.integers(0, 1 << 63, size=37, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    words[0] = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    c.mem_write(100, words)
    frame = bytes(board.raw_in[1:])
    assert frame[:7] == bytes([0x03, 100, 0, 0, 0, 36, 0])
    assert frame[7:15] == b"\xff" * 8
    assert len(frame) == 7 + 8 * 37
    np.testing.assert_array_equal(board.mem[100:137], words)
    back = c.mem_read(100, 37)
    assert back.dtype == np.uint64
    np.testing.assert_array_equal(back, words)
    assert c.mem_read(5, 0).shape == (0,)


def test_bursts_over_65536_words_are_split():
    board = FakeBoard(dram_aw=17)
    c = BridgeClient(board)
    c.ping()
    n = MAX_BURST_WORDS + 10
    words = np.arange(n, dtype=np.uint64) * np.uint64(0x0101_0101_0101)
    c.mem_write(7, words)
    assert [f for f in board.frames if f[0] == "MEM_WRITE"] == [
        ("MEM_WRITE", 7, MAX_BURST_WORDS), ("MEM_WRITE", 7 + MAX_BURST_WORDS, 10)]
    # count-1 = 0xFFFF on the wire for a full burst
    assert bytes(board.raw_in[1 + 5:1 + 7]) == b"\xff\xff"
    np.testing.assert_array_equal(board.mem[7:7 + n], words)
    got = c.mem_read(7, n)
    assert [f for f in board.frames if f[0] == "MEM_READ"] == [
        ("MEM_READ", 7, MAX_BURST_WORDS), ("MEM_READ", 7 + MAX_BURST_WORDS, 10)]
    np.testing.assert_array_equal(got, words)


def test_range_checks_send_nothing():
    board = FakeBoard(dram_aw=12)
    c = BridgeClient(board)
    c.ping()
    sent = len(board.raw_in)
    with pytest.raises(ValueError, match=r"outside the board's DRAM of 4096 words"):
        c.mem_write(4095, np.zeros(2, dtype=np.uint64))
    with pytest.raises(ValueError, match="outside"):
        c.mem_read(-1, 1)
    with pytest.raises(ValueError, match="outside"):
        c.mem_read(0, 4097)
    assert len(board.raw_in) == sent
    c.mem_write(4094, np.ones(2, dtype=np.uint64))     # the last two words are fine
    assert board.mem[4095] == 1


def test_range_status_from_board_keeps_sync():
    board = FakeBoard(dram_aw=10)
    c = BridgeClient(board)                 # no PING: the client does not know the size
    with pytest.raises(BridgeStatusError, match=r"MEM_READ\(addr=1020, count=8\).*0xE2") as e:
        c.mem_read(1020, 8)
    assert e.value.status == STATUS_RANGE
    assert c.in_sync
    assert c.csr_read(CSR.MAGIC) == HW_MAGIC
    assert "PING" not in _ops(board)        # no resync was needed


def test_timeout_names_command_and_what_was_awaited_then_resync():
    board = FakeBoard()
    c = BridgeClient(board)
    board.mute_replies = 1
    with pytest.raises(SerialTimeout) as e:
        c.csr_read(CSR.STATUS)
    msg = str(e.value)
    assert "CSR_READ(STATUS)" in msg and "data (8), status" in msg and "timed out" in msg
    assert e.value.command == "CSR_READ(STATUS)" and e.value.received == b""
    assert not c.in_sync
    board.counters[2] = 12345
    assert c.csr_read(CSR.COUNTERS + 2) == 12345    # resynchronised first
    assert _ops(board)[-2:] == ["PING", "CSR_READ"]
    assert c.in_sync


def test_partial_reply_timeout_reports_received_bytes():
    board = FakeBoard()
    c = BridgeClient(board)
    board.mute_replies = 1
    board.tx += b"\x12\x34"                  # two stray bytes, then silence
    with pytest.raises(SerialTimeout, match=r"expected 9 bytes.*received 12 34 \(2 bytes\)"):
        c.csr_read(CSR.ERROR)


def test_bad_opcode_status_is_reported_and_resynced():
    board = FakeBoard()
    c = BridgeClient(board)
    board.corrupt_opcode = 0x7F              # line noise hits the opcode byte
    with pytest.raises(BridgeStatusError, match=r"CSR_READ\(STATUS\).*BAD_OPCODE") as e:
        c.csr_read(CSR.STATUS)
    assert e.value.status == STATUS_BAD_OPCODE
    assert not c.in_sync
    # the bridge took the frame's second byte (1 = CSR_WRITE) as a new opcode and waits
    # for its fields; resync lets it time out, then the PING comes through
    assert c.csr_read(CSR.MAGIC) == HW_MAGIC
    assert ("BAD", 0x7F) in board.frames and ("PING",) in board.frames


def test_bad_status_byte_is_a_protocol_error():
    board = FakeBoard()
    c = BridgeClient(board)
    board.corrupt_status = 0x00
    with pytest.raises(SerialProtocolError, match=r"CSR_WRITE\(CMD_ADDR\).*0xA5") as e:
        c.csr_write(CSR.CMD_ADDR, 5)
    assert not isinstance(e.value, SerialTimeout)
    assert e.value.received == b"\x00"
    assert not c.in_sync


def test_junk_ahead_of_ping_reply_is_caught_and_drained():
    board = FakeBoard(dram_aw=11)
    c = BridgeClient(board)
    board.junk_before_reply = b"\x99"
    with pytest.raises(SerialProtocolError, match=r"PING: expected magic b'ACG'"):
        c.ping()
    assert not c.in_sync
    info = c.ping()                          # resync drains the stray byte first
    assert info.dram_aw == 11 and c.in_sync
    assert board.tx == b""


def test_wrong_protocol_version_is_named():
    board = FakeBoard()
    c = BridgeClient(board)
    orig = board._execute

    def execute(f):
        orig(f)
        if f[0] == Op.PING:
            board.tx[3] = PROTOCOL_VERSION + 1
    board._execute = execute
    with pytest.raises(SerialProtocolError, match=f"speaks protocol version "
                                                  f"{PROTOCOL_VERSION + 1}"):
        c.ping()


def test_resync_gives_up_on_a_dead_board():
    board = FakeBoard()
    board.dead = True
    c = BridgeClient(board)
    with pytest.raises(SerialProtocolError, match="no valid PING reply after 3 attempts"):
        c.resync()
    assert bytes(board.raw_in) == b"\x00" * 3


# =====================================================================================
# (a) SerialTarget against the fake board
# =====================================================================================

def _job():
    rng = np.random.default_rng(3)
    seg0 = rng.integers(0, 1 << 62, size=20, dtype=np.uint64)
    seg1 = rng.integers(0, 1 << 62, size=5, dtype=np.uint64)
    return [(16, seg0), (200, seg1)], 200, [(1000, 12), (2000, 3)]


def test_serial_target_runs_a_job():
    board = FakeBoard(dram_aw=12)

    def on_run(mem, cmd_addr):
        assert cmd_addr == 200
        mem[1000:1012] = np.arange(12, dtype=np.uint64) + np.uint64(cmd_addr)
        mem[2000:2003] = np.uint64(7)
    board.on_run = on_run
    board.busy_polls = 3
    segments, cmd_addr, readback = _job()
    t = SerialTarget(TINY, board)
    res = t.run(segments, cmd_addr, readback)
    assert res.finished and res.error == 0 and res.status == 0b10
    np.testing.assert_array_equal(res.regions[0], np.arange(12, dtype=np.uint64) + 200)
    np.testing.assert_array_equal(res.regions[1], np.full(3, 7, dtype=np.uint64))
    assert res.counters == dict(zip(CSR_COUNTERS, board.final_counters))
    assert res.cycles == 1000
    assert res.ids == [HW_MAGIC, *hw_config_words(TINY)]
    for addr, words in segments:
        np.testing.assert_array_equal(board.mem[addr:addr + len(words)], words)
    writes = [f for f in board.frames if f[0] == "CSR_WRITE"]
    assert writes == [("CSR_WRITE", CSR.CMD_ADDR, 200), ("CSR_WRITE", CSR.CTRL, 0b11)]
    assert board.frames[0] == ("PING",)
    assert board.starts == 1
    # the run polled STATUS until the board was no longer busy
    polls = [f for f in board.frames if f == ("CSR_READ", CSR.STATUS)]
    assert len(polls) == 1 + 3               # the pre-run busy check + 3 polls


def test_serial_target_range_check_before_anything_but_ping():
    board = FakeBoard(dram_aw=10)
    segments, cmd_addr, readback = _job()
    t = SerialTarget(TINY, board)
    with pytest.raises(ValueError, match=r"readback region \[2000, 2003\).*1024 words"):
        t.run(segments, cmd_addr, readback)
    assert bytes(board.raw_in) == bytes([Op.PING])
    with pytest.raises(ValueError, match=r"segment \[1020, 1030\)"):
        t.run([(1020, np.zeros(10, dtype=np.uint64))], 0, [])
    assert bytes(board.raw_in) == bytes([Op.PING]) * 2


def test_serial_target_rejects_a_board_with_another_configuration():
    board = FakeBoard(hw_config=hw_config_words(preset("fpga")))
    segments, cmd_addr, readback = _job()
    with pytest.raises(ConfigMismatchError, match=r"another accelerator configuration: "
                                                  r"pe_rows=8 \(expected 3\), pe_cols=8 "
                                                  r"\(expected 4\)"):
        SerialTarget(TINY, board).run(segments, cmd_addr, readback)
    assert "MEM_WRITE" not in _ops(board) and board.starts == 0
    board = FakeBoard()
    board.ids[0] = 0x1234
    with pytest.raises(ConfigMismatchError, match="no accelgen accelerator"):
        SerialTarget(TINY, board).run(segments, cmd_addr, readback)


def test_max_cycles_becomes_a_deadline_and_accelerator_raises():
    board = FakeBoard(clock_khz=1000)        # 1 MHz: 1000 cycles = 1 ms
    board.busy_polls = None                  # never finishes
    now = [0.0]

    def clock():                             # every look at the clock costs 0.1 ms
        now[0] += 1e-4
        return now[0]
    t = SerialTarget(TINY, board, clock=clock)
    segments, cmd_addr, readback = _job()
    res = t.run(segments, cmd_addr, readback, max_cycles=1000)
    assert not res.finished and res.status & 1
    polls = [f for f in board.frames if f == ("CSR_READ", CSR.STATUS)]
    assert 5 <= len(polls) <= 12             # ~1 ms of polling at 0.1 ms per poll
    # through the Accelerator API this is an AcceleratorError
    acc = Accelerator(TINY, "serial", port=board, clock=clock)
    x = np.ones((1, 1, 4, 4), dtype=np.int16)
    w = np.ones((1, 1, 3, 3), dtype=np.int16)
    with pytest.raises(AcceleratorError, match="did not finish within 2000 cycles"):
        acc.conv2d(x, w, max_cycles=2000)
    assert board.resets == 1                 # the run left busy before was reset first


def test_reset_at_resets_mid_run_then_reruns():
    board = FakeBoard()
    board.busy_polls = 6
    board.cycles_per_poll = 100
    board.on_run = lambda mem, a: mem.__setitem__(slice(1000, 1012), 5)
    segments, cmd_addr, readback = _job()
    res = SerialTarget(TINY, board).run(segments, cmd_addr, readback, reset_at=250)
    assert res.reset_while_busy and res.finished
    assert board.resets == 1 and board.starts == 2
    ops = _ops(board)
    assert ops.index("RESET") < len(ops) - 1
    starts = [i for i, f in enumerate(board.frames) if f == ("CSR_WRITE", CSR.CTRL, 3)]
    assert starts[0] < ops.index("RESET") < starts[1]
    np.testing.assert_array_equal(res.regions[0], np.full(12, 5, dtype=np.uint64))
    with pytest.raises(ValueError, match="reset_at"):
        SerialTarget(TINY, board).run(segments, cmd_addr, readback, reset_at=-1)


def test_target_arguments():
    with pytest.raises(ValueError, match="exactly one of port= .* or url="):
        SerialTarget(TINY)
    with pytest.raises(ValueError, match="exactly one"):
        SerialTarget(TINY, FakeBoard(), url="loop://")
    with pytest.raises(ValueError, match="'verilator', 'pysim', 'serial'"):
        Accelerator(TINY, "jtag")
    assert isinstance(Accelerator(TINY, "serial", port=FakeBoard()).target, SerialTarget)


def test_loop_url_without_a_board_fails_clearly():
    t = SerialTarget(TINY, url="loop://", timeout=0.02, quiet_time=0.02)
    with pytest.raises(SerialProtocolError, match="no valid PING reply"):
        t.run([], 0, [])
    t.close()


def test_socket_url_reaches_a_board():
    """``socket://`` through pyserial's URL handlers to a fake board served on localhost."""
    board = FakeBoard(dram_aw=12)
    board.on_run = lambda mem, a: mem.__setitem__(slice(1000, 1012), mem[16:28])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                board.write(data)
                if board.tx:
                    conn.sendall(bytes(board.tx))
                    board.tx.clear()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    segments, cmd_addr, readback = _job()
    with SerialTarget(TINY, url=f"socket://127.0.0.1:{srv.getsockname()[1]}",
                      timeout=2.0) as t:
        res = t.run(segments, cmd_addr, readback)
    th.join(5)
    srv.close()
    assert res.finished
    np.testing.assert_array_equal(res.regions[0], segments[0][1][:12])


# =====================================================================================
# (b) The real driver against the Verilator-simulated BoardCore (through its UART pins)
# =====================================================================================
# Scenario functions run inside the simulator process, in a cocotb bridge thread, with a
# simulated serial port (``sw_driver.sim.board_tb.SimSerialPort``). They only drive the
# board and return what they saw; the assertions are made here, in the pytest process.

def _sim_accelerator(port, config=TINY):
    return Accelerator(config, "serial", port=port, clock=port.sim_seconds,
                       quiet_time=port.quiet_time)


def _layer(seed, shape_x, shape_w, zeros=0.0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-200, 200, size=shape_x)
    if zeros:
        x[rng.random(shape_x) < zeros] = 0
    w = rng.integers(-60, 60, size=shape_w)
    b = rng.integers(-3000, 3000, size=shape_w[0])
    return x.astype(np.int16), w.astype(np.int16), b


def scenario_protocol(port):
    """Every command of the protocol on the real bridge, its error paths and resync."""
    from sw_driver.serial import BridgeClient
    out = {}
    c = BridgeClient(port, quiet_time=port.quiet_time)
    info = c.ping()
    out["info"] = (info.version, info.dram_aw, info.clock_khz)
    out["ids"] = [c.csr_read(a) for a in (CSR.MAGIC, CSR.HW_CONFIG0, CSR.HW_CONFIG1,
                                          CSR.HW_CONFIG2)]
    rng = np.random.default_rng(42)
    words = rng.integers(0, 1 << 63, size=70, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    c.mem_write(100, words)
    out["mem"] = (words, c.mem_read(100, 70))
    c.mem_write(0, [0x1111])
    # A client that never pinged does not know the DRAM size: the bridge answers RANGE,
    # keeps the framing, writes the in-range words and drops the others (no wrap-around).
    blind = BridgeClient(port, quiet_time=port.quiet_time)
    top = (1 << info.dram_aw) - 1
    for call in (lambda: blind.mem_write(top, [0xAAAA, 0xBBBB]),
                 lambda: blind.mem_read(top - 1, 4)):
        try:
            call()
            out.setdefault("range", []).append(None)
        except BridgeStatusError as e:
            out.setdefault("range", []).append((e.status, e.received))
    out["after_range"] = (c.mem_read(top, 1)[0], c.mem_read(0, 1)[0], blind.in_sync)
    # An unknown opcode is answered with BAD_OPCODE alone.
    port.write(b"\x7f")
    out["bad_opcode"] = port.read(2)
    # A partial frame followed by silence is dropped after rx_timeout ...
    c.csr_write(CSR.CMD_ADDR, 1234)
    port.write(bytes([Op.CSR_WRITE, CSR.CMD_ADDR, 1, 2, 3]))
    out["partial_reply"] = port.read(1)
    out["cmd_addr_after_drop"] = c.csr_read(CSR.CMD_ADDR)
    # ... but a gap shorter than rx_timeout inside a frame is fine.
    t = port.timeout
    port.timeout = 0.25 * port.params.rx_timeout / port.params.clk_freq_hz
    port.write(bytes([Op.CSR_WRITE, CSR.CMD_ADDR]))
    out["gap_read"] = port.read(1)
    port.timeout = t
    port.write((777).to_bytes(8, "little"))
    out["gap_status"] = port.read(1)
    out["cmd_addr_after_gap"] = c.csr_read(CSR.CMD_ADDR)
    # Lose sync in the middle of a long reply; resync drains it and PINGs.
    port.write(bytes([Op.MEM_READ]) + (0).to_bytes(4, "little") + (99).to_bytes(2, "little"))
    out["head_of_reply"] = port.read(5)
    c.in_sync = False
    out["after_resync"] = c.csr_read(CSR.MAGIC)
    out["resync_bytes_received"] = c.bytes_received
    # RESET while idle; STATUS reads 0 afterwards.
    c.reset()
    out["status_after_reset"] = c.csr_read(CSR.STATUS)
    # A driver configured for another accelerator refuses the board.
    try:
        _sim_accelerator(port, TINY.replace(pe_cols=5)).conv2d(
            np.ones((1, 1, 4, 4), np.int16), np.ones((1, 1, 3, 3), np.int16))
        out["mismatch"] = None
    except ConfigMismatchError as e:
        out["mismatch"] = str(e)
    return out


def scenario_conv(port, x, w, b, kw):
    acc = _sim_accelerator(port)
    y, stats = acc.conv2d(x, w, b, max_cycles=200_000, **kw)
    return {"y": y, "counters": stats.counters, "macs": stats.macs,
            "info": acc.target.client.info}


def scenario_reset(port, x, w, b, kw, reset_at):
    """RESET mid-run through SerialTarget(reset_at), by hand through the bridge, then a
    clean rerun."""
    acc = _sim_accelerator(port)
    out = {}
    y1, s1 = acc.conv2d(x, w, b, max_cycles=500_000, reset_at=reset_at, **kw)
    out["y_reset_at"], out["counters_reset_at"] = y1, s1.counters
    out["reset_while_busy"] = s1.reset_while_busy
    # By hand: start the same command list again and RESET it straight away.
    c = acc.target.client
    c.csr_write(CSR.CTRL, 0b11)
    out["status_before_reset"] = c.csr_read(CSR.STATUS)
    out["cycles_before_reset"] = c.csr_read(CSR.COUNTERS)
    c.reset()
    out["status_after_reset"] = c.csr_read(CSR.STATUS)
    out["cycles_after_reset"] = c.csr_read(CSR.COUNTERS)
    y2, s2 = acc.conv2d(x, w, b, max_cycles=500_000, **kw)
    out["y_clean"], out["counters_clean"], out["macs"] = y2, s2.counters, s2.macs
    return out


def _golden(x, w, b, kw):
    from sw_driver.golden import conv2d
    return conv2d(x, w, b, psum_width=TINY.psum_width, data_width=TINY.data_width, **kw)


def _report(name, out):
    s = out["stats"]
    moved = s["bytes_to_board"] + s["bytes_from_board"]
    print(f"\n[{name}] bytes to board {s['bytes_to_board']}, from board "
          f"{s['bytes_from_board']}; simulated {s['sim_seconds'] * 1e3:.2f} ms "
          f"({moved / max(1e-12, s['sim_seconds']):.0f} B/s of simulated time); wall "
          f"{s['wall_scenario']:.1f} s in the scenario ({moved / s['wall_scenario']:.0f} B/s), "
          f"{s['wall_total']:.1f} s with simulator start")


@pytest.fixture(scope="module")
def board_sim():
    import time

    from sw_driver.sim.board_sim import BoardSimParams, build_board, run_board
    params = BoardSimParams()
    t0 = time.perf_counter()
    build_board(TINY, params)
    print(f"\n[board build] {time.perf_counter() - t0:.1f} s (cached after the first)")
    return lambda scenario, **args: run_board(f"{__name__}:{scenario}", TINY, params,
                                              args=args)


@pytest.mark.verilator
def test_board_protocol_on_verilator(board_sim):
    out = board_sim("scenario_protocol")
    _report("protocol", out)
    r = out["result"]
    assert r["info"] == (PROTOCOL_VERSION, 12, 4000)
    assert r["ids"] == [HW_MAGIC, *hw_config_words(TINY)]
    np.testing.assert_array_equal(r["mem"][1], r["mem"][0])
    # MEM_WRITE past the end: RANGE status alone; MEM_READ: 2 words, 2 zero words, RANGE
    assert r["range"][0] == (STATUS_RANGE, bytes([STATUS_RANGE]))
    status, reply = r["range"][1]
    assert status == STATUS_RANGE and len(reply) == 4 * 8 + 1
    got = np.frombuffer(reply[:32], dtype="<u8")
    assert got[2:].tolist() == [0, 0] and got[1] == 0xAAAA
    assert r["after_range"] == (0xAAAA, 0x1111, True)
    assert r["bad_opcode"] == bytes([STATUS_BAD_OPCODE])
    assert r["partial_reply"] == b"" and r["cmd_addr_after_drop"] == 1234
    assert r["gap_read"] == b"" and r["gap_status"] == bytes([STATUS_OK])
    assert r["cmd_addr_after_gap"] == 777
    assert len(r["head_of_reply"]) == 5
    assert r["after_resync"] == HW_MAGIC
    assert r["status_after_reset"] == 0
    assert r["mismatch"] is not None and "pe_cols=4 (expected 5)" in r["mismatch"]
    assert out["stats"]["framing_errors"] == 0


@pytest.mark.verilator
def test_board_conv_layer_bit_exact_over_uart(board_sim):
    x, w, b = _layer(21, (1, 2, 6, 6), (3, 2, 3, 3))
    x[x == 0] = 1                            # no zero ifmap values: no MAC is gated
    kw = dict(output_shift=4, relu=True)
    out = board_sim("scenario_conv", x=x, w=w, b=b, kw=kw)
    _report("conv", out)
    r = out["result"]
    ref = _golden(x, w, b, kw)
    assert ref.shape == (1, 3, 4, 4) and (ref > 0).any() and (ref == 0).any()
    np.testing.assert_array_equal(r["y"], ref)
    macs = 1 * 3 * 2 * 4 * 4 * 3 * 3
    assert r["macs"] == macs
    assert r["counters"]["macs"] + r["counters"]["macs_gated"] == macs
    assert r["counters"]["macs_gated"] == 0 and r["counters"]["macs"] == macs
    assert r["counters"]["cycles"] > 0 and r["counters"]["dram_writes"] > 0
    assert r["info"].clock_hz == 4_000_000 and r["info"].dram_aw == 12


@pytest.mark.verilator
def test_board_reset_mid_run_then_clean_rerun(board_sim):
    x, w, b = _layer(22, (1, 4, 10, 10), (6, 4, 3, 3), zeros=0.2)
    kw = dict(padding=1, output_shift=5, relu=True)
    out = board_sim("scenario_reset", x=x, w=w, b=b, kw=kw, reset_at=300)
    _report("reset", out)
    r = out["result"]
    ref = _golden(x, w, b, kw)
    assert r["reset_while_busy"]
    np.testing.assert_array_equal(r["y_reset_at"], ref)
    np.testing.assert_array_equal(r["y_clean"], ref)
    assert r["status_before_reset"] & 1 and 0 < r["cycles_before_reset"]
    assert r["status_after_reset"] == 0 and r["cycles_after_reset"] == 0
    # a reset leaves nothing behind: the rerun's counters equal those of a clean run
    assert r["counters_reset_at"] == r["counters_clean"]
    assert r["cycles_before_reset"] < r["counters_clean"]["cycles"]
    macs = 6 * 4 * 10 * 10 * 9
    assert r["macs"] == macs
    assert r["counters_clean"]["macs"] + r["counters_clean"]["macs_gated"] >= macs
