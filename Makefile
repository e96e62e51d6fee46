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
# takes tens of minutes. Output: build/fpga/ulx3s-85f/{ulx3s_85f.bit,report.txt,report.json}
fpga: $(STAMP)
	$(BIN)/accelgen fpga --board ulx3s-85f --build -o build/fpga/ulx3s-85f

clean:
	rm -rf out build sim_build .pytest_cache
