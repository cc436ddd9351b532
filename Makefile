# make test   set up .venv and run the test suite (Triton kernels under the interpreter when there is no GPU)
# make bench  set up .venv and run the benchmark comparison (quick preset; PRESET=full for all sizes)
# make lint   check the style: ruff check (pyproject.toml) on Python, clang-format (.clang-format) on csrc/
# make format apply what the tools can fix
PYTHON ?= python3
VENV ?= .venv
# torch 2.14.1 (a CUDA build that also runs on the CPU): the torchvision that smp needs for the
# compat tests (0.29.1, requirements-dev.txt) pairs with it. It also compiles the extension's
# CUDA kernels where nvcc is found (CUDA_HOME).
TORCH_SPEC ?= torch==2.14.1
PRESET ?= quick
# pytest-xdist processes for `make test` (the interpreter runs one core each).
TEST_WORKERS ?= 2
# The GPU machine's Triton, installed alone into the venv's folder for `make test`:
# tests/test_triton_compiles.py also compiles every kernel with it (its compiler
# differs: 3.6 crashed where later ones did not). AOT_TRITON= skips it.
AOT_TRITON ?= 3.6.0
AOT_TRITON_DIR := $(VENV)/aot-triton-$(AOT_TRITON)
PY := $(VENV)/bin/python

.PHONY: test bench lint format setup clean

setup: $(VENV)/.installed

# The C++ extension is built by the editable install: rebuild when csrc/ changes.
$(VENV)/.installed: setup.py requirements-dev.txt $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Only Triton itself: the compile test imports it ahead of the venv's (PYTHONPATH);
# removed first, so an interrupted install is not taken for a finished one.
$(AOT_TRITON_DIR)/.installed: | $(VENV)/.installed
	rm -rf $(AOT_TRITON_DIR)
	$(PY) -m pip install -q --no-deps --target $(AOT_TRITON_DIR) "triton==$(AOT_TRITON)"
	touch $@

test: setup $(if $(AOT_TRITON),$(AOT_TRITON_DIR)/.installed)
	FUSEDLOSS_AOT_TRITON_PATHS="$(if $(AOT_TRITON),$(abspath $(AOT_TRITON_DIR)))" FUSEDLOSS_EXPECT_PEERS=1 \
	$(PY) -m pytest tests bench/test_smoke.py -q -W ignore::DeprecationWarning -n $(TEST_WORKERS)

CSRC_FILES := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CSRC_FILES)

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i $(CSRC_FILES)

bench: setup
	$(PY) bench/main.py --preset $(PRESET)

clean:
	rm -rf $(VENV) bench/out build *.egg-info
