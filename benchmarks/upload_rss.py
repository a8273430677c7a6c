"""Benchmark: a streamed upload of a large application keeps the console's RSS low.

Starts a real ``shoal console`` (HTTPS, SQLite in a temporary data dir) on loopback,
uploads ``--size-mb`` MiB as one streamed request, and prints the console's peak
resident memory (VmHWM from /proc) and the throughput. Target: peak RSS < 200 MB for a
2 GiB application. Figures, not assertions: the machine is shared.

    .venv/bin/python benchmarks/upload_rss.py --size-mb 2048
    .venv/bin/python benchmarks/upload_rss.py --size-mb 2048 --confidential

``--confidential`` uploads a confidential version: encrypted chunk by chunk while packed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from shoal.core.signing import SigningKey

PASSWORD = "benchmark password"
BLOCK = 1 << 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def body(size: int) -> Iterator[bytes]:
    block = bytearray(os.urandom(BLOCK))
    sent = 0
    while sent < size:
        take = min(BLOCK, size - sent)
        block[:8] = sent.to_bytes(8, "big")  # every block differs
        yield bytes(block[:take])
        sent += take


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--confidential", action="store_true", help="encrypt while packing")
    options = parser.parse_args()
    size = options.size_mb * 1024 * 1024
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-upload-"))
    port = free_port()
    command = [sys.executable, "-m", "shoal", "console", "--data-dir", str(workdir / "data")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # No vendor key ships with shoal: the benchmark makes its own (it saves no licence).
    vendor_public_key = workdir / "vendor.key.pub"
    SigningKey.generate().verify_key.save(vendor_public_key)
    command += ["--vendor-public-key", str(vendor_public_key)]
    if options.database_url:
        command += ["--database-url", options.database_url]
    console = subprocess.Popen(
        command,
        env={**os.environ, "SHOAL_ADMIN_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cert = workdir / "data" / "tls" / "cert.pem"
        deadline = time.monotonic() + 60
        while not cert.exists() or console.poll() is not None:
            if time.monotonic() > deadline or console.poll() is not None:
                sys.exit("console did not start")
            time.sleep(0.1)
        client = httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=ssl.create_default_context(cafile=cert),
            timeout=600,
        )
        while True:
            try:
                client.get("/api/v1/health").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        token = client.post(
            "/api/v1/tokens",
            json={"name": "bench"},
            headers={"Origin": f"https://127.0.0.1:{port}"},
        ).json()["token"]
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token}"
        baseline = memory_kib(console.pid, "VmRSS")
        before_upload_high_water = memory_kib(console.pid, "VmHWM")
        # Reset the high-water mark so the figure is the upload's alone, not the login's
        # (argon2id uses 64 MiB by design) or start-up's.
        Path(f"/proc/{console.pid}/clear_refs").write_text("5")
        peak_sampled = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_sampled
            while not done.is_set():
                peak_sampled = max(peak_sampled, memory_kib(console.pid, "VmRSS"))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        answer = client.post(
            "/api/v1/applications",
            params={
                "name": "benchmark",
                "version": "1",
                "confidential": "true" if options.confidential else "false",
            },
            content=body(size),
            headers={"content-type": "application/octet-stream"},
        )
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        answer.raise_for_status()
        high_water = memory_kib(console.pid, "VmHWM")
        client.close()
        print(
            f"upload {options.size_mb} MiB: {elapsed:.1f} s, "
            f"{options.size_mb / elapsed:.0f} MiB/s (receive + fsync + "
            f"{'encrypt + ' if options.confidential else ''}pack + sign); "
            f"console RSS before {baseline / 1024:.0f} MB, peak {high_water / 1024:.0f} MB "
            f"(VmHWM; sampled peak {peak_sampled / 1024:.0f} MB; peak from start to login "
            f"{before_upload_high_water / 1024:.0f} MB); target < 200 MB: "
            f"{'met' if high_water / 1024 < 200 else 'NOT met'}",
            flush=True,
        )
    finally:
        console.terminate()
        console.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
