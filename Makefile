# The two set-up commands of the README: `make demo` (main job) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU, pin torch to the CPU wheel; with one, let pip take the CUDA build.
TORCH_CONSTRAINT := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)

.PHONY: install demo test lint bench browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints/cpu.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_CONSTRAINT) -e '.[test]'
	$(BIN)/ardm install-launcher
	touch $@

install: $(VENV)/.installed

# The main job: the demo sweep (order-agnostic vs upscale b = 4 on embedded photo patches) on
# local Ray, tracked in a SQLite MLflow store in this folder.
demo: install
	$(BIN)/ardm sweep sweeps/demo.yaml

lint: install
	$(BIN)/ruff check .

# The HTML report test renders in headless Chromium: Debian's package, installed once (as root).
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q && apt-get install -y -q chromium >/dev/null)

test: lint browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/dp_speed.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/tracking_check.py
