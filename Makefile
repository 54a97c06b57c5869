# xray2mri: `make demo` runs the main job on the built-in synthetic data; `make test` runs the tests.
# Both create the virtual environment they need; a second run with nothing changed reuses it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
PYDICOM2 := .pydicom2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install test lint pytest test-pydicom2 demo clean

help:
	@echo "make demo    synthetic cohort -> train -> evaluate -> predict, results in runs/demo/"
	@echo "make test    lint + tests (also the ingestion tests under pydicom 2.4)"

# torch first, pinned to the CPU wheel on disk, so nothing pulls a multi-GB CUDA build;
# then the project (which only asks torch>=2.4, keeping a GPU user's own build).
$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# pydicom 2.4 (the version MONAI Label pins) laid over the main venv: PYTHONPATH puts it first.
$(PYDICOM2)/.installed: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --target $(PYDICOM2) pydicom==2.4.4
	@touch $@

lint: install
	$(VENV)/bin/ruff check pipeline transforms tests benchmarks

pytest: install
	$(VENV)/bin/pytest -q

test-pydicom2: $(PYDICOM2)/.installed
	PYTHONPATH=$(PYDICOM2) $(VENV)/bin/pytest -q -m pydicom2 -p no:cacheprovider

test: lint pytest test-pydicom2

demo: install
	$(VENV)/bin/xray2mri demo

clean:
	rm -rf $(VENV) $(PYDICOM2) runs .pytest_cache .ruff_cache
