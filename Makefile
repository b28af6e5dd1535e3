# The two commands of the README: `make demo` and `make test`. Both do all
# set-up themselves: a virtualenv in .venv, the pinned dependencies, the
# package installed in development mode (`pip install -e`: an edited module
# is what the next run imports, no reinstall), and the Delta jars fetched
# once from Maven Central into the user cache (see `gatewatch setup`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
PYTEST_ARGS ?=

.PHONY: setup install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(DEPS): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[local,test,report]"
	touch $(DEPS)

install: $(DEPS)

setup: install
	$(BIN)/gatewatch setup

demo: setup
	$(BIN)/gatewatch demo

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) build dist demo-output output
