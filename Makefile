# xray2mri: `make demo` runs the main job on the built-in synthetic data; `make test` runs the tests.
# Both create the virtual environment they need; a second run with nothing changed reuses it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
PYDICOM2 := .pydicom2
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Every module's bytecode is written at install: these machines set PYTHONDONTWRITEBYTECODE=1, so without
# it every process recompiles what it imports (tried: `make test` on a clean clone 1382 s against ~1020 s).
# pip compiles on one core (~60 s of a ~100 s venv); pip installs with --no-compile and compileall then
# compiles the same files on every core (venv 102 -> 76 s on 2 cores, 9839 .pyc files either way). Like
# pip, it skips files it cannot compile (torch ships one with Python 3.12 syntax): -qq, status ignored.
COMPILE_VENV = $(1)/bin/python -m compileall -qq -j 0 $(1)/lib || true

.PHONY: help install test lint pytest test-pydicom2 demo monailabel clean

help:
	@echo "make demo    synthetic cohort -> train -> evaluate -> predict, results in runs/demo/"
	@echo "make test    lint + tests (also the ingestion tests under pydicom 2.4, and a real MONAI Label server)"
	@echo "make monailabel  serve the trained bundle in MONAI Label on 127.0.0.1:$(MONAILABEL_PORT)"

# torch first, pinned to the CPU wheel on disk, so nothing pulls a multi-GB CUDA build;
# then the project (which only asks torch>=2.4, keeping a GPU user's own build).
$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	$(call COMPILE_VENV,$(VENV))
	@touch $@

install: $(VENV)/.installed

# pydicom 2.4 (the version MONAI Label pins) laid over the main venv: PYTHONPATH puts it first.
$(PYDICOM2)/.installed: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --target $(PYDICOM2) pydicom==2.4.4
	@touch $@

# ---- MONAI Label: a venv of its own (its pins clash with the main stack: pydicom 2.4 there, 3.x here)
MLVENV := .venv-monailabel
MLPY := $(MLVENV)/bin/python
MONAILABEL_PORT ?= 8000
MONAILABEL_DIR ?= runs/monailabel
MONAILABEL_BUNDLE ?= bundles/knee_xray2mri
RANDOM_WEIGHTS ?= 0
# monailabel 0.8.5's own requirements, less torchvision and sam2 (GPU-sized), with its DICOM pins.
# itk-core, not itk: monailabel's writer module runs `import itk` when BasicInferTask is imported, but our app
# writes with its own writer, so the 1.5 GB of ITK filter/IO/registration wheels are never used (itk-core
# alone is 0.43 GB and imports; the venv 3.2 -> 2.2 GB; a CI run once ran out of disk installing them).
MONAILABEL_REQS := fastapi uvicorn pydantic pydantic-settings python-multipart httpx schedule timeloop \
	expiringdict expiring_dict cachetools watchdog pydicom-seg pynrrd numpymaxflow girder-client einops \
	filelock passlib pyjwt bcrypt shapely requests-toolbelt scikit-learn google-auth psutil python-dotenv \
	pyyaml requests itk-core pydicom==2.4.4 dicomweb-client==0.59.1 "pynetdicom<3"
# this project's runtime dependencies (setup.cfg install_requires, less tensorboard), under the pydicom 2.4 pin
MONAILABEL_OURS := "monai>=1.4" "pytorch-ignite>=0.4.11" "nibabel>=5.0" "SimpleITK>=2.3" "numpy>=1.24" \
	"pylibjpeg>=2.0" "pylibjpeg-openjpeg>=2.0" "pylibjpeg-libjpeg>=2.0" "pyjpegls>=1.2" "tqdm>=4.60" \
	"matplotlib>=3.7" "scipy>=1.15" "fire>=0.5"

$(MLVENV)/.installed: setup.cfg pyproject.toml
	@test -x $(MLPY) || $(PYTHON) -m venv $(MLVENV)
	$(MLPY) -m pip install -q --upgrade pip
	$(MLPY) -m pip install -q --no-compile torch==$(TORCH_VERSION)
	$(MLPY) -m pip install -q --no-compile --no-deps monailabel==0.8.5
	$(MLPY) -m pip install -q --no-compile $(MONAILABEL_REQS) $(MONAILABEL_OURS)
	$(MLPY) -m pip install -q --no-compile --no-deps -e .
	$(call COMPILE_VENV,$(MLVENV))
	$(MLPY) -c "import pydicom, xray2mri.pipeline.serving.predict; from monailabel.tasks.infer.basic_infer import BasicInferTask; assert pydicom.__version__ == '2.4.4', pydicom.__version__"
	@touch $@

# A real MONAI Label server on loopback: the app in apps/monailabel, a studies folder of
# synthetic radiographs, the bundle's trained weights (RANDOM_WEIGHTS=1 serves an untrained network).
monailabel: install $(MLVENV)/.installed
	@if [ ! -f $(MONAILABEL_BUNDLE)/models/model.pt ] && [ "$(RANDOM_WEIGHTS)" != "1" ]; then \
		echo "no trained model ($(MONAILABEL_BUNDLE)/models/model.pt): run 'make demo' first,"; \
		echo "or 'make monailabel RANDOM_WEIGHTS=1' to serve an UNTRAINED network (outputs meaningless)"; \
		exit 1; fi
	@test -f $(MONAILABEL_DIR)/cohort/datalist.json || \
		$(VENV)/bin/xray2mri synth --out $(MONAILABEL_DIR)/cohort --subjects 3 --seed 7 --no-progress
	@mkdir -p $(MONAILABEL_DIR)/studies
	@for f in $(MONAILABEL_DIR)/cohort/*/*_xray.dcm; do \
		test -f $(MONAILABEL_DIR)/studies/$$(basename $$f) || cp $$f $(MONAILABEL_DIR)/studies/; done
	@echo "MONAI Label: http://127.0.0.1:$(MONAILABEL_PORT)/ (API docs), studies in $(MONAILABEL_DIR)/studies; Ctrl-C stops it."
	@echo "  curl -X POST 'http://127.0.0.1:$(MONAILABEL_PORT)/infer/xray2mri?image=SYN0000_xray&output=image' -o SYN0000_mri_synthetic.nii.gz"
	PATH="$(CURDIR)/$(MLVENV)/bin:$$PATH" $(MLPY) -m monailabel.main start_server \
		--app apps/monailabel --studies $(MONAILABEL_DIR)/studies \
		--host 127.0.0.1 --port $(MONAILABEL_PORT) --conf bundle $(MONAILABEL_BUNDLE) \
		$(if $(filter 1,$(RANDOM_WEIGHTS)),--conf random_weights true,)

lint: install
	$(VENV)/bin/ruff check pipeline transforms apps tests benchmarks

pytest: install $(MLVENV)/.installed
	$(VENV)/bin/pytest -q

test-pydicom2: $(PYDICOM2)/.installed
	PYTHONPATH=$(PYDICOM2) $(VENV)/bin/pytest -q -m pydicom2 -p no:cacheprovider

test: lint pytest test-pydicom2

demo: install
	$(VENV)/bin/xray2mri demo

clean:
	rm -rf $(VENV) $(MLVENV) .venv-standalone $(PYDICOM2) runs .pytest_cache .ruff_cache
