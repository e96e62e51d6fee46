# One-command setup and entry points. Everything installs from PyPI into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo verilog lint fpga clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "slow or not slow"

demo: $(STAMP)
	$(BIN)/accelgen run --model digits

verilog: $(STAMP)
	$(BIN)/accelgen verilog --preset eyeriss -o out/

# ULX3S-85F bitstream and resource/timing report with the PyPI (YoWASP) toolchain;
# about 20 minutes. Output: build/fpga/ulx3s-85f/{ulx3s_85f.bit,report.txt,report.json}
# FPGA_ARGS is empty by default: the whole `fpga` preset, 8 x 8 PEs in lock-step rows,
# 4-bank 64 KiB GLB, 32 KiB board DRAM, static placer + router2, seed 1: 52.09 MHz against
# 50 MHz (README FPGA section, session 18). E.g. `make fpga FPGA_ARGS="--seed 2"`, or
# FPGA_ARGS="--set pe_rows=4 --set pe_cols=6" for a smaller array.
FPGA_ARGS ?=
fpga: $(STAMP)
	$(BIN)/accelgen fpga --board ulx3s-85f $(FPGA_ARGS) --build -o build/fpga/ulx3s-85f

clean:
	rm -rf out build sim_build .pytest_cache
