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
# test extras plus the optional parts the suite exercises (serving, tracking, Hub, docs, pretrained encoders)
EXTRAS ?= test,text-metrics,tables,serve,browser-test,tracking,hub,docs,pretrained

.PHONY: setup browser demo test test-fast bench bench-quality clean

setup: $(STAMP)

# The CPU build of torch is pinned here (pip finds it on local disk); the package
# itself only states torch>=2.4, so installing it afterwards pulls no CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/omnivae demo --out $(DEMO_OUT)

# Debian's chromium for the browser test (Playwright drives it; its own download does not work
# here). Installed with apt-get when running as root; otherwise that one test says why it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } || \
	  echo "chromium could not be installed: the browser test will be skipped"

test: setup browser
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) benchmarks/run_all.py

# generation quality of every multimodal model at one budget, two rows at a time (one core each)
bench-quality: setup
	$(PY) benchmarks/bench_quality.py --jobs 2 --append

clean:
	rm -rf $(VENV) runs .pytest_cache
