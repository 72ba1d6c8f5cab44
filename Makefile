# omnivae: two commands on a fresh machine.
#   make demo   set up .venv, install, train the default model on the built-in data
#   make test   set up .venv, install, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: setup demo test test-fast bench bench-quality clean

setup: $(STAMP)

# The CPU build of torch is pinned here (pip finds it on local disk); the package
# itself only states torch>=2.4, so installing it afterwards pulls no CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,text-metrics,tables]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/omnivae demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) benchmarks/run_all.py

# generation quality of every multimodal model at one budget (about 40 minutes here)
bench-quality: setup
	$(PY) benchmarks/bench_quality.py

clean:
	rm -rf $(VENV) runs .pytest_cache
