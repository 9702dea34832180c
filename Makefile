# Two commands for a fresh machine: `make run` (the main job on a built-in default) and `make test`.
# Each creates .venv if it is missing and installs torch==2.13.0 (the CPU wheel) and diswot into it:
# `run` only what the main job needs, `test` adds the test extra (pytest, ruff, Ray for the Ray paths).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CORE := $(VENV)/.core-$(SUM)
TESTX := $(VENV)/.test-$(SUM)

.PHONY: run test lint setup clean

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	rm -f $(VENV)/.core-* && touch $@

$(TESTX): $(CORE)
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.test-* && touch $@

setup: $(TESTX)

run: $(CORE)
	$(BIN)/diswot search

test: $(TESTX)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(TESTX)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
