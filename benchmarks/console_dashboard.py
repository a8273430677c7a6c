"""Benchmark: how long the console's dashboard takes to draw in chromium on a large site.

Issue 14, point 5: with 10,000 devices in 500 offices and 200 applications
(``benchmarks/console_fixture.py``) the dashboard should be drawn in <= 1 s. This fills
a console (SQLite, a temporary directory), runs ``shoal console`` on loopback (plain
HTTP: the browser and the console share this machine), logs in with Debian's chromium
(Playwright) and times, for each of ``--rounds`` page loads, from the start of the
navigation to the dashboard drawn: every figure, the WAN-saved chart and the
distributions table and the banned peers (the other pages' first lists load after it;
their time is printed too). Figures, not assertions.

    .venv/bin/python benchmarks/console_dashboard.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_fixture import DEFAULT_PASSWORD, open_fixture

CHROMIUM = "/usr/bin/chromium"
DRAWN = """() => document.querySelector('#fig-devices').textContent !== ''
  && document.querySelectorAll('#distributions-table tr').length > 1
  && window.Chart && Chart.getChart('wan-chart') !== undefined
  && document.querySelectorAll('#banned-table tr').length > 1"""
EVERY_VIEW = "() => document.querySelector('#about').textContent !== ''"
"""The other pages' first lists are loaded after the dashboard's (the about line shows
then)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-dashboard-") as directory:
        work = Path(directory)
        open_fixture(work).close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "shoal", "console", "--data-dir", str(work / "console")]
        command += ["--host", "127.0.0.1", "--port", str(port), "--no-tls", "--log-level"]
        command += ["warning", "--vendor-public-key", str(work / "vendor.key.pub")]
        env = {**os.environ, "SHOAL_ADMIN_PASSWORD": DEFAULT_PASSWORD}
        console = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=None)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(base + "/api/v1/health", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or console.poll() is not None:
                        raise
                    time.sleep(0.2)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
                )
                page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 900})
                page.goto("/")
                page.locator("#login-form [name=username]").fill("admin")
                page.locator("#login-form [name=password]").fill(DEFAULT_PASSWORD)
                started = time.perf_counter()
                page.locator("#login-form button").click()
                page.wait_for_function(DRAWN, timeout=60_000)
                print(f"after logging in: dashboard drawn in {time.perf_counter() - started:.2f} s")
                times, every = [], []
                for _ in range(arguments.rounds):
                    started = time.perf_counter()
                    page.reload()
                    page.wait_for_function(DRAWN, timeout=60_000)
                    times.append(time.perf_counter() - started)
                    page.wait_for_function(EVERY_VIEW, timeout=60_000)
                    every.append(time.perf_counter() - started)
                for what, found in (("dashboard drawn", times), ("every view loaded", every)):
                    print(
                        f"page load to {what}, {arguments.rounds} loads: median "
                        f"{statistics.median(found):.2f} s, max {max(found):.2f} s "
                        f"({', '.join(f'{t:.2f}' for t in found)})"
                    )
                browser.close()
        finally:
            console.terminate()
            console.wait(timeout=30)


if __name__ == "__main__":
    main()
