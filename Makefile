# shoal: the two commands of the README's quick start are `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest postgres bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: show what shoal does today, on this machine
demo: $(STAMP)
	$(BIN)/python -m shoal.demo

## test: ruff, mypy (strict on core/wire/protocol) and the whole pytest suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres
	$(BIN)/pytest

## postgres: install PostgreSQL (Debian package) when missing, for the console tests
postgres:
	.ci/ensure-postgres.sh

## bench: benchmarks that print figures (see README)
bench: $(STAMP)
	$(BIN)/shoal bench pack --size-mb 1024
	$(BIN)/python benchmarks/upload_rss.py --size-mb 2048

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-data
