# tradesys: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# GPU users: make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128' demo
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
DIST ?= dist

.PHONY: install demo test lint bench dist clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/tradesys demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q --durations=25

lint: install
	$(VENV)/bin/ruff check tradesys tests jobs benchmarks

bench: install
	$(PY) benchmarks/live_loop.py

# The wheel of this tree (no dependencies, no network: the venv's setuptools builds it) into $(DIST)/, for
# cluster.yaml's wheel variant. build/ is removed first: setuptools never deletes a module gone from the tree there.
dist: install
	rm -rf build $(DIST)/tradesys-*.whl
	$(PIP) wheel -q --no-deps --no-build-isolation --no-index -w $(DIST) .
	@ls $(DIST)/tradesys-*.whl

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
