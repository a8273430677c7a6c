# shoal: the two commands of the README's quick start are `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it first, with the
# dev and bench extras: the lab tests compare shoal with libtorrent and draw charts.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIOS := branch-flash multi-office churn corrupt-peer slow-uplinks

.PHONY: demo test lint typecheck pytest postgres chromium bench clean

$(STAMP): pyproject.toml dev/pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./dev
	touch $(STAMP)

## demo: show what shoal does today, on this machine
demo: $(STAMP)
	$(BIN)/python -m shoal_dev.demo

## test: ruff, mypy (strict on core/wire/protocol) and the whole pytest suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src dev tests
	$(BIN)/ruff format --check src dev tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres chromium
	$(BIN)/pytest

## postgres: install PostgreSQL (Debian package) when missing, for the console tests
postgres:
	.ci/ensure-postgres.sh

## chromium: install Debian's chromium when missing, for the console's browser tests
chromium:
	.ci/ensure-chromium.sh

## bench: benchmarks that print figures (see README); the lab scenarios need root and
## write bench/results/SCENARIO.json and the charts bench/results/SCENARIO-{cdf,wan}.png;
## the lab sweep (shoal and libtorrent over the default grid, ~30 min) writes
## bench/results/sweep-default.json and bench/results/default-lab-heatmap.png
bench: $(STAMP)
	$(BIN)/shoal bench pack --size-mb 1024
	$(BIN)/python benchmarks/upload_rss.py --size-mb 2048
	$(BIN)/shoal bench transfer --size-mb 256
	for scenario in $(SCENARIOS); do \
		$(BIN)/shoal lab run $$scenario --json bench/results/$$scenario.json \
			--png bench/results || exit 1; \
	done
	$(BIN)/shoal lab sweep default --json bench/results/sweep-default.json --png bench/results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-data
