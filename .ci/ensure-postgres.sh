#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the console tests (run by `make test`).
# Installs Debian's postgresql package when initdb is missing and we are root; otherwise
# does nothing (the tests that need PostgreSQL then say they were skipped, and why).
# The tests start their own throwaway cluster (tests/console/postgres.py): this script
# never starts or configures a system-wide one.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-postgres: initdb not found and not root: PostgreSQL tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5 6; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
        # Debian starts a system cluster on install; the tests do not use it.
        (command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r version name _; do
            pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
        done) || true
        exit 0
    fi
    echo "ensure-postgres: apt busy or failed (attempt $attempt), retrying" >&2
    sleep 10
done
echo "ensure-postgres: could not install postgresql" >&2
exit 1
