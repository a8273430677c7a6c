#!/usr/bin/env bash
# Make Debian's chromium available for the console's browser tests (run by `make test`).
# Installs the chromium package when /usr/bin/chromium is missing and we are root;
# otherwise does nothing (the browser tests then say they were skipped, and why).
# Playwright drives this binary: its own browser downloads are never used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-chromium: /usr/bin/chromium not found and not root: browser tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5 6; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        exit 0
    fi
    echo "ensure-chromium: apt busy or failed (attempt $attempt), retrying" >&2
    sleep 10
done
echo "ensure-chromium: could not install chromium" >&2
exit 1
