"""UART host-bridge byte protocol (contract between ``fpga.bridge`` and ``sw_driver.serial``).

The board's USB serial port carries 8N1 frames at ``DEFAULT_BAUD``. The host sends one
command at a time and reads its whole reply before sending the next (no pipelining).
Multi-byte fields are little-endian. Every reply ends with one status byte.

====================  ======================================  ================================
command (host->board)  fields after the opcode byte            reply (board->host)
====================  ======================================  ================================
``PING``       0x00    --                                      8 info bytes, status
``CSR_WRITE``  0x01    addr (1), data (8)                      status
``CSR_READ``   0x02    addr (1)                                data (8), status
``MEM_WRITE``  0x03    addr (4), count-1 (2), count x data(8)  status
``MEM_READ``   0x04    addr (4), count-1 (2)                   count x data (8), status
``RESET``      0x05    --                                      status
====================  ======================================  ================================

- ``addr`` of ``CSR_*`` is the CSR word address of ``hw.layouts.CSR``; ``addr`` of
  ``MEM_*`` is a 64-bit word address in the board's block-RAM "DRAM" (``2**dram_aw`` words).
- ``count`` is 1..65536 words (sent as count-1 in 16 bits).
- Status: ``STATUS_OK``; ``STATUS_BAD_OPCODE`` (nothing else of the frame is consumed);
  ``STATUS_RANGE`` when any word of a ``MEM_*`` access lies outside the DRAM: the bytes are
  still transferred so the framing holds, but out-of-range writes are dropped and
  out-of-range reads return 0.
- ``PING`` info bytes: ``b"ACG"``, ``PROTOCOL_VERSION``, ``dram_aw``, then the core clock in
  kHz as 3 bytes (little-endian).
- ``RESET`` pulses the accelerator's reset (controller, engines, GLB state, counters); the
  bridge and the DRAM contents are kept. Use it to abandon a layer mid-run.
- The bridge drops a partly received frame when no byte arrives for ``rx_timeout`` cycles
  (about 20 ms at the default clock), so a host that lost sync waits that long, sends
  ``PING`` and reads until the info bytes come back.
- The host may read and write memory while a layer runs: host memory traffic has priority
  over the accelerator's (``fpga.bram_dram``); at UART speed it costs the accelerator about
  one stall cycle per host word.
"""

from __future__ import annotations

import enum

__all__ = ["Op", "STATUS_OK", "STATUS_BAD_OPCODE", "STATUS_RANGE", "PING_MAGIC",
           "PROTOCOL_VERSION", "DEFAULT_BAUD", "MAX_BURST_WORDS", "RESET_PULSE_CYCLES"]


class Op(enum.IntEnum):
    PING = 0x00
    CSR_WRITE = 0x01
    CSR_READ = 0x02
    MEM_WRITE = 0x03
    MEM_READ = 0x04
    RESET = 0x05


STATUS_OK = 0xA5
STATUS_BAD_OPCODE = 0xE1
STATUS_RANGE = 0xE2

PING_MAGIC = b"ACG"
PROTOCOL_VERSION = 1
#: 1 Mbaud: an integer divisor of 25 and 50 MHz clocks, and within the FT231X's 3 Mbaud.
DEFAULT_BAUD = 1_000_000
MAX_BURST_WORDS = 65536
#: Length of the accelerator reset pulse issued by ``RESET`` (core clock cycles).
RESET_PULSE_CYCLES = 16
