# Fresh machine: only Python 3.11, pip and a C compiler are assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.dnpu-installed
LOCK   := flock /tmp/dnpu-build-$(shell id -u).lock

.PHONY: help venv install build test clean

help:
	@echo "make test     set up .venv, build the C/Cython extensions, run the test suite"
	@echo "make build    rebuild the extensions after changing C/Cython sources"
	@echo "make clean    remove build outputs and the virtual environment"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Build tools first (the package is built without isolation so rebuilds are incremental),
# torch pinned to the CPU build that pip finds on these machines (training only).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "scikit-build-core>=0.10" "cython>=3.0" ninja cmake
	$(PIP) install -q "torch==2.13.0"
	$(LOCK) $(PIP) install -q --no-build-isolation -e ".[test,train]"
	touch $(STAMP)

venv install: $(STAMP)

build: $(STAMP)
	$(LOCK) $(PIP) install -q --no-build-isolation --no-deps -e .

test: build
	$(PY) -m pytest -q

clean:
	rm -rf build $(VENV) .pytest_cache
