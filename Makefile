# make test   set up .venv and run the test suite (Triton kernels under the interpreter when there is no GPU)
# make bench  set up .venv and run the benchmark comparison (quick preset; PRESET=full for all sizes)
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch by default; e.g. TORCH_SPEC='torch==2.14.1' for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PRESET ?= quick
PY := $(VENV)/bin/python

.PHONY: test bench setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(PY) -m pytest tests bench/test_smoke.py -q -W ignore::DeprecationWarning

bench: setup
	$(PY) bench/main.py --preset $(PRESET)

clean:
	rm -rf $(VENV) bench/out build *.egg-info
