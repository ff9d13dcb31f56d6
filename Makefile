# The two set-up commands of the README: `make demo` (main job) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU, pin torch to the CPU wheel; with one, let pip take the CUDA build.
TORCH_CONSTRAINT := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)

.PHONY: install demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints/cpu.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_CONSTRAINT) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job for now: an order-agnostic and an upscale (b = 4) ARDM on embedded photo patches.
demo: install
	$(BIN)/ardm train configs/photos8.yaml --set model.branching=256 --set output=runs/photos8-oa
	$(BIN)/ardm train configs/photos8.yaml --set model.branching=4 --set output=runs/photos8-upscale4

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/train_throughput.py
