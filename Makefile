# Set-up and everyday commands.  Everything runs inside .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test generated check-generated bench bench-quick lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## demo: derive, generate, check and train the bundled XOR network
demo: $(VENV)/.installed
	$(BIN)/symgrad demo

## test: the whole test suite (what CI runs)
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

## generated: regenerate generated/ from examples/
generated: $(VENV)/.installed
	$(BIN)/python scripts/regenerate.py

check-generated: $(VENV)/.installed
	$(BIN)/python scripts/regenerate.py --check

bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

bench-quick: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench --quick

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests scripts generated bench

clean:
	rm -rf $(VENV) build dist *.egg-info
