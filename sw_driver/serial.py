"""Host side of the UART bridge protocol (``fpga.protocol``): run programs on an FPGA board.

:class:`BridgeClient` speaks the byte protocol over any pyserial-like object: ``write(bytes)``,
``read(n)`` returning up to ``n`` bytes (fewer, possibly none, after ``timeout`` seconds),
a settable ``timeout`` and ``reset_input_buffer()``. It checks every reply byte and raises
:class:`SerialProtocolError` (or :class:`SerialTimeout`) naming the command, what was expected
and what arrived. After such an error the link is marked out of sync and the next command
first calls :meth:`BridgeClient.resync` (wait for a quiet line so the bridge drops a partial
frame, then ``PING`` until the info bytes come back).

:class:`SerialTarget` runs compiled programs on the board with the same
``run(segments, cmd_addr, readback, ...)`` interface as ``sw_driver.targets.VerilatorTarget``,
so ``Accelerator(preset("fpga"), "serial", url="/dev/ttyUSB0")`` runs layers on hardware::

    acc = Accelerator(preset("fpga"), "serial", url="/dev/ttyUSB0")
    y, stats = acc.conv2d(x, w, b, padding=1, output_shift=8, relu=True)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from fpga.protocol import (DEFAULT_BAUD, MAX_BURST_WORDS, PING_MAGIC, PROTOCOL_VERSION,
                           STATUS_BAD_OPCODE, STATUS_OK, STATUS_RANGE, Op)
from hw.config import AcceleratorConfig
from hw.layouts import CSR, CSR_COUNTERS, DRAM_ADDR_BITS, HW_MAGIC
from sw_driver.targets import AcceleratorError, DramModel, RunResult

__all__ = ["BridgeClient", "BoardInfo", "SerialTarget", "SerialProtocolError",
           "SerialTimeout", "BridgeStatusError", "ConfigMismatchError"]

_log = logging.getLogger(__name__)

_STATUS_NAMES = {STATUS_OK: "OK", STATUS_BAD_OPCODE: "BAD_OPCODE", STATUS_RANGE: "RANGE"}
#: Reply of PING: magic (3), version, dram_aw, clock kHz (3), status.
_PING_REPLY = 9


def _hex(data: bytes, limit: int = 24) -> str:
    if not data:
        return "nothing"
    s = data[:limit].hex(" ")
    more = f" ... ({len(data)} bytes)" if len(data) > limit else f" ({len(data)} bytes)"
    return s + more


def _status_name(b: int) -> str:
    return f"0x{b:02X} ({_STATUS_NAMES.get(b, 'unknown')})"


class SerialProtocolError(IOError):
    """The board's reply broke the protocol.

    Attributes: ``command`` (e.g. ``"CSR_READ(STATUS)"``), ``expected`` (text) and
    ``received`` (the bytes that arrived for this reply)."""

    def __init__(self, command: str, expected: str, received: bytes, detail: str = ""):
        self.command = command
        self.expected = expected
        self.received = bytes(received)
        msg = f"{command}: expected {expected}, received {_hex(self.received)}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class SerialTimeout(SerialProtocolError):
    """No (more) bytes arrived within the port's ``timeout`` while waiting for a reply."""

    def __init__(self, command: str, waited_for: str, n: int, received: bytes, timeout):
        self.waited_for = waited_for
        super().__init__(command, f"{n} bytes ({waited_for})", received,
                         f"timed out after {timeout} s waiting for {waited_for}")


class BridgeStatusError(SerialProtocolError):
    """The bridge answered with an error status (``status``) but the framing held
    (``STATUS_RANGE``: a memory access outside the board's DRAM)."""

    def __init__(self, command: str, status: int, received: bytes, detail: str = ""):
        self.status = status
        super().__init__(command, f"status {_status_name(STATUS_OK)}", received,
                         f"got status {_status_name(status)}" + (f"; {detail}" if detail else ""))


class ConfigMismatchError(AcceleratorError):
    """The board's ID registers do not match the configuration given to the driver: the
    board carries a bitstream built for another configuration (or no accelgen design)."""


@dataclass(frozen=True)
class BoardInfo:
    """What ``PING`` reports: protocol ``version``, ``dram_aw`` (log2 of the block-RAM DRAM
    size in 64-bit words) and the core clock in kHz."""

    version: int
    dram_aw: int
    clock_khz: int

    @property
    def clock_hz(self) -> int:
        return self.clock_khz * 1000

    @property
    def dram_words(self) -> int:
        return 1 << self.dram_aw


class BridgeClient:
    """The protocol of ``fpga.protocol`` over a pyserial-like ``port``.

    Parameters
    ----------
    port
        Object with ``write(bytes)``, ``read(n)`` (up to ``n`` bytes; fewer after
        ``timeout`` seconds), ``timeout`` (seconds, settable) and ``reset_input_buffer()``.
    quiet_time : float
        Seconds of silence :meth:`resync` waits for: must exceed the bridge's ``rx_timeout``
        (about 20 ms at the default clock) so that the bridge drops a partly received frame.
    auto_resync : bool
        Resynchronise before the next command after a protocol error or timeout.

    Counters ``bytes_sent`` and ``bytes_received`` count every byte moved.
    """

    def __init__(self, port, *, quiet_time: float = 0.05, auto_resync: bool = True):
        self.port = port
        self.quiet_time = quiet_time
        self.auto_resync = auto_resync
        self.info: BoardInfo | None = None
        self.in_sync = True
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- public commands ---------------------------------------------------------------
    def ping(self) -> BoardInfo:
        """``PING``: check the magic and protocol version; returns (and keeps in ``info``)
        the board's :class:`BoardInfo`.

        Raises
        ------
        SerialProtocolError
            Wrong magic, wrong protocol version or a bad status byte.
        SerialTimeout
            No complete reply within the port timeout.
        """
        self._maybe_resync()
        return self._ping()

    def csr_read(self, addr: int) -> int:
        """``CSR_READ``: the 64-bit CSR at word address ``addr`` (``hw.layouts.CSR``)."""
        self._check_csr(addr)
        data = self._transact(f"CSR_READ({_csr_name(addr)})", bytes([Op.CSR_READ, addr]),
                              9, "data (8), status")
        return int.from_bytes(data, "little")

    def csr_write(self, addr: int, value: int) -> None:
        """``CSR_WRITE``: write the 64-bit ``value`` to the CSR at ``addr``."""
        self._check_csr(addr)
        value = int(value)
        if not 0 <= value < 1 << 64:
            raise ValueError(f"CSR value {value} does not fit 64 bits unsigned")
        self._transact(f"CSR_WRITE({_csr_name(addr)})",
                       bytes([Op.CSR_WRITE, addr]) + value.to_bytes(8, "little"), 1, "status")

    def mem_write(self, addr: int, words) -> None:
        """``MEM_WRITE``: write 64-bit ``words`` (1-D, anything ``np.uint64`` accepts) to DRAM
        word address ``addr`` onward, in bursts of at most ``MAX_BURST_WORDS`` words.

        Raises ``ValueError`` before anything is sent when the range lies outside the
        board's DRAM (known after :meth:`ping`) or outside 32-bit word addresses.
        """
        words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64).reshape(-1))
        self._check_range(addr, len(words), "MEM_WRITE")
        for start in range(0, len(words), MAX_BURST_WORDS):
            chunk = words[start:start + MAX_BURST_WORDS]
            a, n = addr + start, len(chunk)
            frame = (bytes([Op.MEM_WRITE]) + a.to_bytes(4, "little")
                     + (n - 1).to_bytes(2, "little") + chunk.astype("<u8").tobytes())
            self._transact(f"MEM_WRITE(addr={a}, count={n})", frame, 1, "status")

    def mem_read(self, addr: int, n: int) -> np.ndarray:
        """``MEM_READ``: ``n`` 64-bit words from DRAM word address ``addr``, as ``(n,)``
        ``np.uint64``, in bursts of at most ``MAX_BURST_WORDS`` words (range checked like
        :meth:`mem_write`)."""
        n = int(n)
        self._check_range(addr, n, "MEM_READ")
        out = np.empty(n, dtype=np.uint64)
        for start in range(0, n, MAX_BURST_WORDS):
            a, k = addr + start, min(MAX_BURST_WORDS, n - start)
            frame = (bytes([Op.MEM_READ]) + a.to_bytes(4, "little")
                     + (k - 1).to_bytes(2, "little"))
            data = self._transact(f"MEM_READ(addr={a}, count={k})", frame, 8 * k + 1,
                                  f"{k} data words, status")
            out[start:start + k] = np.frombuffer(data, dtype="<u8")
        return out

    def reset(self) -> None:
        """``RESET``: pulse the accelerator's reset (the DRAM contents are kept)."""
        self._transact("RESET", bytes([Op.RESET]), 1, "status")

    def resync(self, attempts: int = 3) -> BoardInfo:
        """Regain frame sync: read until the line has been quiet for ``quiet_time`` (the
        bridge drops a partial frame after its ``rx_timeout``; stale reply bytes are
        drained), flush the input buffer, then ``PING`` until the info bytes come back.

        Raises :class:`SerialProtocolError` if ``attempts`` PINGs all fail.
        """
        old_timeout = self.port.timeout
        last = None
        try:
            for _ in range(attempts):
                self.port.timeout = self.quiet_time
                drained = 0
                while True:
                    chunk = self.port.read(4096)
                    if not chunk:
                        break
                    drained += len(chunk)
                    self.bytes_received += len(chunk)
                    if drained > 16 * (8 * MAX_BURST_WORDS + 16):
                        raise SerialProtocolError("resync", "a quiet line", b"",
                                                  f"{drained} bytes arrived without a pause")
                self.port.reset_input_buffer()
                self.port.timeout = old_timeout
                try:
                    info = self._ping()
                    self.in_sync = True
                    if drained:
                        _log.info("resync: drained %d stale bytes", drained)
                    return info
                except SerialProtocolError as e:
                    last = e
            raise SerialProtocolError("resync", "a PING reply", last.received if last else b"",
                                      f"no valid PING reply after {attempts} attempts "
                                      f"(last: {last})")
        finally:
            self.port.timeout = old_timeout

    def close(self):
        close = getattr(self.port, "close", None)
        if close is not None:
            close()

    # ---- internals ---------------------------------------------------------------------
    def _ping(self) -> BoardInfo:
        expected = "b'ACG', version, dram_aw, clock kHz (3), status"
        # The magic is checked before the status byte: it tells best what answered.
        data = self._transact("PING", bytes([Op.PING]), _PING_REPLY, expected,
                              resync=False, check_status=False)
        if data[:3] != PING_MAGIC:
            self.in_sync = False
            raise SerialProtocolError("PING", f"magic {PING_MAGIC!r}", data,
                                      "no accelgen bridge answers on this port")
        if data[3] != PROTOCOL_VERSION:
            raise SerialProtocolError("PING", f"protocol version {PROTOCOL_VERSION}", data,
                                      f"the board speaks protocol version {data[3]}")
        self._check_status("PING", data)
        self.info = BoardInfo(version=data[3], dram_aw=data[4],
                              clock_khz=int.from_bytes(data[5:8], "little"))
        return self.info

    def _maybe_resync(self):
        if not self.in_sync and self.auto_resync:
            self.resync()

    def _transact(self, command: str, frame: bytes, reply_len: int, what: str, *,
                  resync: bool = True, check_status: bool = True) -> bytes:
        """Send ``frame``, read ``reply_len`` bytes, check the trailing status byte;
        returns the reply without the status (with it when not ``check_status``)."""
        if resync:
            self._maybe_resync()
        self.port.write(frame)
        self.bytes_sent += len(frame)
        reply = self._read_exact(reply_len, command, what)
        return self._check_status(command, reply) if check_status else reply

    def _check_status(self, command: str, reply: bytes) -> bytes:
        status = reply[-1]
        if status == STATUS_OK:
            return reply[:-1]
        if status == STATUS_RANGE:
            raise BridgeStatusError(command, status, reply,
                                    "an access lies outside the board's DRAM")
        self.in_sync = False
        if status == STATUS_BAD_OPCODE:
            raise BridgeStatusError(command, status, reply,
                                    "the bridge did not recognise the opcode")
        raise SerialProtocolError(command, f"status {_status_name(STATUS_OK)}", reply,
                                  f"status byte {_status_name(status)}")

    def _read_exact(self, n: int, command: str, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.port.read(n - len(buf))
            if not chunk:
                self.in_sync = False
                if len(buf) == 1 and buf[0] == STATUS_BAD_OPCODE:
                    raise BridgeStatusError(command, buf[0], bytes(buf),
                                            "the bridge did not recognise the opcode")
                raise SerialTimeout(command, what, n, bytes(buf), self.port.timeout)
            buf += chunk
            self.bytes_received += len(chunk)
        return bytes(buf)

    @staticmethod
    def _check_csr(addr):
        if not 0 <= int(addr) < 256:
            raise ValueError(f"CSR address {addr} outside 0..255")

    def _check_range(self, addr, n, command):
        addr = int(addr)
        limit = self.info.dram_words if self.info is not None else 1 << DRAM_ADDR_BITS
        where = (f"the board's DRAM of {limit} words (dram_aw={self.info.dram_aw})"
                 if self.info is not None else "32-bit word addresses")
        if n < 0 or addr < 0 or addr + n > limit:
            raise ValueError(f"{command} of {n} words at {addr} lies outside {where}")


def _csr_name(addr: int) -> str:
    try:
        return CSR(addr).name
    except ValueError:
        if CSR.COUNTERS <= addr < CSR.COUNTERS + len(CSR_COUNTERS):
            return f"COUNTERS+{addr - CSR.COUNTERS}"
        return str(addr)


def _decode_hw_config(w0: int, w1: int, w2: int) -> dict:
    """Inverse of ``hw.controller.hw_config_words``."""
    flags = (w0 >> 32) & 0xFF
    return {"pe_rows": w0 & 0xFF, "pe_cols": (w0 >> 8) & 0xFF,
            "data_width": (w0 >> 16) & 0xFF, "psum_width": (w0 >> 24) & 0xFF,
            "rlc": bool(flags & 1), "relu": bool(flags & 2), "zero_gating": bool(flags & 4),
            "filter_spad_depth": w1 & 0xFFFF, "ifmap_spad_depth": (w1 >> 16) & 0xFFFF,
            "psum_spad_depth": (w1 >> 32) & 0xFFFF,
            "glb_bank_words": w2 & 0xFFFFFFFF, "glb_banks": (w2 >> 32) & 0xFFFFFFFF}


class SerialTarget:
    """Runs programs on an FPGA board (``fpga.core.BoardCore``) through its UART bridge.

    Same ``run`` interface as ``VerilatorTarget``/``PysimTarget``. Each run: ``PING`` (magic,
    protocol version, DRAM size), range checks, the ID registers against ``config``, load the
    segments, ``CMD_ADDR``, ``CTRL`` = clear + start, poll ``STATUS`` until not busy, then
    ``ERROR``, ``STATUS``, the counters (``hw.layouts.CSR_COUNTERS``) and the readback
    regions.

    Parameters
    ----------
    config : AcceleratorConfig
        The configuration the board's bitstream must have been built for.
    port
        An already-open pyserial-like object (see :class:`BridgeClient`); or
    url : str
        Opened with ``serial.serial_for_url`` at ``baud`` (``"/dev/ttyUSB0"``, ``"COM3"``,
        ``"loop://"``, ``"socket://host:port"``).
    timeout : float
        Seconds without a byte before a reply is declared lost (applied to the port; for an
        open ``port`` only when given or when the port has none).
    quiet_time : float
        See :class:`BridgeClient` (must exceed the bridge's ``rx_timeout``).
    clock : callable
        Seconds for the ``max_cycles`` deadline (default ``time.monotonic``; a simulated
        port passes its simulated time).

    Notes
    -----
    The ``dram`` argument of :meth:`run` (a ``DramModel``) is ignored: the board's "DRAM" is
    block RAM beside the accelerator, with its own fixed timing.
    """

    def __init__(self, config: AcceleratorConfig, port=None, *, url: str | None = None,
                 baud: int = DEFAULT_BAUD, timeout: float | None = None,
                 quiet_time: float = 0.05, clock=time.monotonic):
        if (port is None) == (url is None):
            raise ValueError("SerialTarget needs exactly one of port= (an open pyserial-like "
                             "object) or url= (e.g. '/dev/ttyUSB0', 'loop://')")
        self.config = config
        self._owns_port = port is None
        if port is None:
            import serial   # pyserial
            port = serial.serial_for_url(url, baudrate=baud,
                                         timeout=0.5 if timeout is None else timeout)
        elif timeout is not None or getattr(port, "timeout", None) is None:
            port.timeout = 0.5 if timeout is None else timeout
        self.client = BridgeClient(port, quiet_time=quiet_time)
        self.clock = clock

    def build(self):
        """Nothing to build: the bitstream is on the board (``accelgen fpga --build``)."""
        return None

    def close(self):
        """Close the port if this target opened it."""
        if self._owns_port:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self) -> BoardInfo:
        """``PING`` the board (resynchronising once if the first attempt fails)."""
        try:
            return self.client.ping()
        except SerialProtocolError as e:
            _log.info("first PING failed (%s); resynchronising", e)
            return self.client.resync()

    def check_ids(self) -> list[int]:
        """Read MAGIC and HW_CONFIG0..2; raise :class:`ConfigMismatchError` unless they
        match ``config`` (``hw.controller.hw_config_words``). Returns the four values."""
        from hw.controller import hw_config_words
        c = self.client
        ids = [c.csr_read(a) for a in (CSR.MAGIC, CSR.HW_CONFIG0, CSR.HW_CONFIG1,
                                       CSR.HW_CONFIG2)]
        if ids[0] != HW_MAGIC:
            raise ConfigMismatchError(f"board MAGIC register reads 0x{ids[0]:016X}, expected "
                                      f"0x{HW_MAGIC:016X}: no accelgen accelerator behind "
                                      "the bridge")
        want = list(hw_config_words(self.config))
        if ids[1:] != want:
            got, exp = _decode_hw_config(*ids[1:]), _decode_hw_config(*want)
            diff = ", ".join(f"{k}={got[k]} (expected {exp[k]})" for k in exp
                             if got[k] != exp[k]) or \
                f"HW_CONFIG {[hex(v) for v in ids[1:]]} vs {[hex(v) for v in want]}"
            raise ConfigMismatchError(f"the board carries another accelerator configuration: "
                                      f"{diff}; rebuild the bitstream for this configuration "
                                      f"or pass the board's configuration to the driver")
        return ids

    def run(self, segments, cmd_addr, readback, *, dram: DramModel = DramModel(),
            max_cycles: int = 50_000_000, reset_at: int = 0) -> RunResult:
        """Run one job on the board. ``segments``: [(addr, uint64 words)];
        ``readback``: [(addr, n)]; ``dram`` is ignored (block RAM on the board).

        ``max_cycles`` becomes a deadline of ``max_cycles / clock_hz`` seconds (by
        ``clock``); a run still busy then returns ``finished=False`` (``Accelerator`` raises
        ``AcceleratorError``) and is left running (the next run resets it).

        ``reset_at`` > 0: start, poll the ``cycles`` counter and send ``RESET`` once it has
        reached ``reset_at`` (or the run ended), then run again from a clean state; the
        reset lands up to one poll round trip (tens of microseconds to milliseconds over
        USB) later than ``reset_at``, not on that exact cycle as in Verilator.

        Raises
        ------
        ValueError
            A segment, readback region or ``cmd_addr`` outside the board's ``2**dram_aw``
            words (after the ``PING``, before any other byte is sent).
        ConfigMismatchError
            The board's ID registers do not match ``config``.
        SerialProtocolError
            The link broke the protocol (see :class:`BridgeClient`).
        """
        segs = [(int(a), np.asarray(w, dtype=np.uint64).reshape(-1)) for a, w in segments]
        readback = [(int(a), int(n)) for a, n in readback]
        if reset_at < 0:
            raise ValueError(f"reset_at must be >= 0, got {reset_at}")
        info = self.connect()
        words = info.dram_words
        for what, a, n in ([("segment", a, len(w)) for a, w in segs]
                           + [("readback region", a, n) for a, n in readback]
                           + [("command list address", int(cmd_addr), 1)]):
            if a < 0 or n < 0 or a + n > words:
                raise ValueError(f"{what} [{a}, {a + n}) lies outside the board's DRAM of "
                                 f"{words} words (dram_aw={info.dram_aw}); use a board core "
                                 f"with a larger dram_aw or a smaller layer")
        c = self.client
        ids = self.check_ids()
        if c.csr_read(CSR.STATUS) & 1:
            _log.warning("accelerator busy with an earlier run: sending RESET")
            c.reset()
        for a, w in segs:
            c.mem_write(a, w)
        clock_hz = max(1, info.clock_hz)
        reset_while_busy = False
        if reset_at > 0:
            self._start(cmd_addr)
            busy = True
            deadline = self.clock() + max_cycles / clock_hz
            while busy and self.clock() < deadline:
                busy = bool(c.csr_read(CSR.STATUS) & 1)
                if busy and c.csr_read(CSR.COUNTERS) >= reset_at:
                    break
            reset_while_busy = busy
            c.reset()
            if c.csr_read(CSR.STATUS) & 1:
                raise AcceleratorError("accelerator still busy after RESET")
        t0 = time.perf_counter()
        self._start(cmd_addr)
        deadline = self.clock() + max_cycles / clock_hz
        while True:
            status = c.csr_read(CSR.STATUS)
            if not status & 1 or self.clock() > deadline:
                break
        wall = time.perf_counter() - t0
        finished = not status & 1
        error = c.csr_read(CSR.ERROR)
        counters = {name: c.csr_read(CSR.COUNTERS + i) for i, name in enumerate(CSR_COUNTERS)}
        regions = [c.mem_read(a, n) if n else np.zeros(0, dtype=np.uint64)
                   for a, n in readback]
        return RunResult(finished=finished, status=status, error=error, counters=counters,
                         regions=regions, wall_run=wall, ids=ids, dram_err=False,
                         reset_while_busy=reset_while_busy)

    def _start(self, cmd_addr):
        self.client.csr_write(CSR.CMD_ADDR, int(cmd_addr))
        self.client.csr_write(CSR.CTRL, 0b11)     # bit1 clear done/error, bit0 start
