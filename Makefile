# One-command setup and entry points. Everything installs from PyPI into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo verilog lint clean

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

clean:
	rm -rf out build sim_build .pytest_cache
