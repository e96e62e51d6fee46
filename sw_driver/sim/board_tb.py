"""cocotb testbench: a simulated serial port on the UART pins of ``fpga.core.BoardCore``.

:class:`SimSerialPort` is pyserial-like (``write``, ``read``, ``timeout``,
``reset_input_buffer``) so the real, blocking driver (``sw_driver.serial``) runs unchanged in
a thread started with ``cocotb.task.bridge``; its ``write`` and ``read`` are
``cocotb.task.resume`` coroutines that drive ``uart_rx`` and watch ``uart_tx``:

- host -> board: the bytes become 8N1 frames; consecutive equal bits are merged, so Python
  wakes once per level change, with one ``Timer`` per run of bits (never per cycle);
- board -> host: a background task waits for the start bit's falling edge, then samples each
  bit in its middle with ``Timer`` waits (about 10 wake-ups per byte).

Times are simulated: ``timeout`` and :meth:`SimSerialPort.sim_seconds` count simulated
seconds, so timeouts, the resync quiet time and the ``max_cycles`` deadline of
``SerialTarget`` (``clock=port.sim_seconds``) behave as on a board at ``clk_freq_hz``.

The job (written by ``sw_driver.sim.board_sim.run_board``) names a scenario function
``scenario(port, **args)``; its result (or exception) is pickled back.
"""

from __future__ import annotations

import importlib
import os
import pickle
import time
import traceback
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

from sw_driver.sim.board_sim import BoardSimParams

#: Longest a read with ``timeout=None`` waits (simulated seconds) so a lost reply cannot
#: keep the simulation running forever.
MAX_READ_WAIT = 0.1


class SimSerialPort:
    """A pyserial-like port wired to the simulated board's ``uart_rx``/``uart_tx``.

    ``read(n)`` returns when ``n`` bytes have arrived or ``timeout`` simulated seconds have
    passed since the call (pyserial's semantics), with whatever arrived. ``write(data)``
    returns once the last stop bit is on the line. Counters: ``bytes_written``,
    ``bytes_read``, ``framing_errors`` (board -> host stop bits seen low).
    """

    def __init__(self, dut, params: BoardSimParams):
        self.dut = dut
        self.params = params
        self.bit_ns = params.divisor * params.clk_period_ns
        self.timeout = params.timeout
        self.quiet_time = params.quiet_time
        self._rx = deque()
        self._arrived = Event()
        self.bytes_written = 0
        self.bytes_read = 0
        self.framing_errors = 0
        self._monitor_task = None

    # ---- pyserial-like API (called from the bridge thread) -------------------------------
    def write(self, data) -> int:
        data = bytes(data)
        if data:
            self._write(data)
        return len(data)

    def read(self, n: int = 1) -> bytes:
        if n <= 0:
            return b""
        return self._read(n)

    def reset_input_buffer(self):
        self._rx.clear()

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def sim_seconds(self) -> float:
        """Simulated time in seconds (a ``clock`` for ``SerialTarget``)."""
        return get_sim_time(unit="ns") * 1e-9

    def close(self):
        pass

    # ---- simulation side ------------------------------------------------------------------
    def start(self):
        self.dut.uart_rx.value = 1
        self._monitor_task = cocotb.start_soon(self._monitor())

    @resume
    async def _write(self, data: bytes):
        frames = np.unpackbits(np.frombuffer(data, dtype=np.uint8).reshape(-1, 1),
                               axis=1, bitorder="little")
        bits = np.concatenate([np.zeros((len(data), 1), np.uint8), frames,
                               np.ones((len(data), 1), np.uint8)], axis=1).reshape(-1)
        edges = np.flatnonzero(np.diff(bits)) + 1
        starts = np.concatenate([[0], edges])
        runs = np.diff(np.concatenate([starts, [len(bits)]]))
        pin = self.dut.uart_rx
        for level, run in zip(bits[starts].tolist(), runs.tolist()):
            pin.value = level
            await Timer(run * self.bit_ns, unit="ns")
        self.bytes_written += len(data)

    @resume
    async def _read(self, n: int) -> bytes:
        timeout = MAX_READ_WAIT if self.timeout is None else self.timeout
        deadline = get_sim_time(unit="ns") + timeout * 1e9
        while len(self._rx) < n:
            left = int(deadline - get_sim_time(unit="ns"))
            if left <= 0:
                break
            self._arrived.clear()
            await First(self._arrived.wait(), Timer(left, unit="ns"))
        k = min(n, len(self._rx))
        out = bytes(self._rx.popleft() for _ in range(k))
        self.bytes_read += len(out)
        return out

    async def _monitor(self):
        pin, bit = self.dut.uart_tx, self.bit_ns
        while True:
            await FallingEdge(pin)
            await Timer(bit + bit // 2, unit="ns")        # middle of data bit 0
            value = 0
            for i in range(8):
                value |= int(pin.value) << i
                await Timer(bit, unit="ns")
            if not int(pin.value):                       # stop bit must be 1
                self.framing_errors += 1
                continue
            self._rx.append(value)
            self._arrived.set()


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - e.g. an exception class with a custom __init__
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


@cocotb.test()
async def run_scenario(dut):
    job = pickle.loads(Path(os.environ["ACCELGEN_BOARD_JOB"]).read_bytes())
    params = BoardSimParams(**job["params"])
    Clock(dut.clk, params.clk_period_ns, unit="ns").start()
    port = SimSerialPort(dut, params)
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    port.start()

    func = _resolve(job["scenario"])
    out = {}
    t_sim, t_wall = port.sim_seconds(), time.perf_counter()
    try:
        out["result"] = await bridge(func)(port, **job["args"])
    except Exception as e:  # noqa: BLE001 - handed back to run_board, which raises it
        out["error"] = (_picklable(e), traceback.format_exc())
    out["stats"] = {"bytes_to_board": port.bytes_written, "bytes_from_board": port.bytes_read,
                    "framing_errors": port.framing_errors,
                    "sim_seconds": port.sim_seconds() - t_sim,
                    "wall_scenario": time.perf_counter() - t_wall}
    Path(job["result"]).write_bytes(pickle.dumps(out))
