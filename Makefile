# feedengine: `make demo` runs the main job on a fresh machine, `make test` the tests.
# Needs only Python 3.11+ and a C compiler; everything else goes into .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)
EXT_SOURCES := $(wildcard ext/*.pyx ext/*.pxd ext/*.h ext/*/*.pyx)
BUILT := feedengine/.built

# numpy's OpenBLAS threads spin on a 2-core machine and steal the kernels' CPU.
export OPENBLAS_NUM_THREADS := 1

.PHONY: all venv build test bench lint demo clean

all: build

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "Cython==3.3.1" "setuptools==80.9.0" wheel "numpy==2.4.6"
	$(PY) -m pip install --quiet --no-build-isolation -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

$(BUILT): $(STAMP) $(EXT_SOURCES) setup.py
	$(PY) setup.py --quiet build_ext --inplace
	touch $@

build: $(BUILT)

test: build lint
	BENCH_MODE=gate $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable-gc \
		--benchmark-columns=min,median,ops --benchmark-sort=name tests benchmarks

bench: build
	BENCH_MODE=full $(PY) -m pytest -q -s -p no:cacheprovider --benchmark-columns=min,median,ops \
		--benchmark-json=benchmarks/results/pytest-benchmark.json benchmarks
	$(PY) -m pip install --quiet "$$(grep -o 'matplotlib==[0-9.]*' pyproject.toml)"
	$(PY) benchmarks/plot.py

lint: $(STAMP)
	$(VENV)/bin/ruff check feedengine tests benchmarks conftest.py
	$(VENV)/bin/ruff format --check feedengine tests benchmarks conftest.py
	$(VENV)/bin/mypy

demo: build
	$(PY) -m feedengine.demo

clean:
	rm -rf build $(BUILT) $$(find ext -name "*.c") $$(find feedengine -name "*.so")
