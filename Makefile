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
# FPGA_ARGS defaults to the array that routes and meets 50 MHz at HEAD: the `fpga`
# preset (lock-step PE rows, 32 KiB board DRAM, static placer + router2) at 4 x 6 PEs,
# placer seed 3 (52.74 MHz, nextpnr 5:45; seeds 1 and 2 did not converge in router2 at
# session 17's RTL, README FPGA section). `make fpga FPGA_ARGS=` builds the whole 8 x 8
# preset: it routes (bitstream) but is not yet at 50 MHz (48.39 MHz at best), so accelgen exits 1.
FPGA_ARGS ?= --set pe_rows=4 --set pe_cols=6 --seed 3
fpga: $(STAMP)
	$(BIN)/accelgen fpga --board ulx3s-85f $(FPGA_ARGS) --build -o build/fpga/ulx3s-85f

clean:
	rm -rf out build sim_build .pytest_cache
