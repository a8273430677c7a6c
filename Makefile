# shoal: the two commands of the README's quick start are `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it first, with the
# dev and bench extras: the lab tests compare shoal with libtorrent and draw charts.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIOS := branch-flash multi-office churn corrupt-peer slow-uplinks

.PHONY: demo test lint typecheck pytest portable bytecode postgres chromium bench dist clean

# The client's tests, run again on the portable paths (SHOAL_PORTABLE=1: what Windows
# takes; see docs/windows.md).
CLIENT_TESTS := tests/net tests/test_client_control.py tests/test_client_disk.py \
	tests/test_store.py tests/test_store_crash.py tests/test_portable.py tests/test_cli.py

$(STAMP): pyproject.toml dev/pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./dev
	touch $(STAMP)

## demo: show what shoal does today, on this machine
demo: $(STAMP)
	$(BIN)/python -m shoal_dev.demo

## test: ruff, import-linter (.importlinter), mypy (strict on core/wire/protocol), the
## whole pytest suite, and the client's tests again on the portable code paths
test: lint typecheck pytest portable

lint: $(STAMP)
	$(BIN)/ruff check src dev tests packaging
	$(BIN)/ruff format --check src dev tests packaging
	$(BIN)/lint-imports

portable: $(STAMP) bytecode
	SHOAL_PORTABLE=1 $(BIN)/pytest -q $(CLIENT_TESTS)

typecheck: $(STAMP)
	$(BIN)/mypy

## pytest: the whole suite in two processes (pytest-xdist; CI has 2 cores). The tests
## marked `serial` (namespaces, labs, sites, chromium, timings: tests/conftest.py) run in
## one of them, one at a time as without xdist; the other runs the rest meanwhile.
## `pytest tests/FILE` (no -n) runs in one process as before.
pytest: $(STAMP) postgres chromium bytecode
	$(BIN)/pytest -n 2 --dist loadgroup

## bytecode: compile the checkout once (a second when nothing changed). The suite starts
## hundreds of Python processes (consoles, servers, clients, the CLI); where
## PYTHONDONTWRITEBYTECODE is set (as in CI's containers) each of them would otherwise
## compile shoal from source again (~0.2 s of CPU each). Python reads these files even
## then, and ignores one whose source changed.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src dev/src tests

## postgres: install PostgreSQL (Debian package) when missing, for the console tests
postgres:
	.ci/ensure-postgres.sh

## chromium: install Debian's chromium when missing, for the console's browser tests
chromium:
	.ci/ensure-chromium.sh

## bench: benchmarks that print figures (see README), after ``bytecode``: the lab's
## and the footprint's client processes would otherwise each compile shoal from source
## (where PYTHONDONTWRITEBYTECODE is set), CPU an installed client never spends; the lab
## scenarios need root and write bench/results/SCENARIO.json and the charts
## bench/results/SCENARIO-{cdf,wan}.png;
## the lab sweep (shoal and libtorrent over the default grid; 30 min estimated, but at
## load 20-60 its first 12 of 15 cells took 32 min; quiet, all 15 took 16 min) writes
## bench/results/sweep-default.json and bench/results/default-lab-heatmap.png; then the
## same grid in the simulator with its round-trip and queue axes (23 cells, virtual time:
## 10 CPU-minutes, 24 minutes of wall at load 9-20) writes bench/results/sim-sweep-lab.json
## and bench/results/lab-sim-heatmap.png; then a lossy office (random loss on every link,
## which the lab cannot make: 9 cells, ~1 minute) writes bench/results/sim-sweep-loss.json
## and bench/results/loss-cells-sim-heatmap.png
bench: $(STAMP) bytecode
	$(BIN)/shoal bench pack --size-mb 1024
	$(BIN)/python benchmarks/upload_rss.py --size-mb 2048
	$(BIN)/shoal bench transfer --size-mb 256
	for scenario in $(SCENARIOS); do \
		$(BIN)/shoal lab run $$scenario --json bench/results/$$scenario.json \
			--png bench/results || exit 1; \
	done
	$(BIN)/shoal lab sweep default --json bench/results/sweep-default.json --png bench/results
	$(BIN)/shoal sim sweep lab --wall-s 1200 --json bench/results/sim-sweep-lab.json \
		--png bench/results
	$(BIN)/shoal sim sweep bench/results/loss-cells.toml --json bench/results/sim-sweep-loss.json \
		--png bench/results

## dist: the wheel and the Debian packages of client, server and console in dist/,
## each checked (systemd-analyze verify of its units; see packaging/)
dist: $(STAMP)
	$(BIN)/python packaging/build.py --out dist

clean:
	rm -rf dist $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis demo-data
