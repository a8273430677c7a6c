"""A real ``shoal console`` process on loopback over HTTPS, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from postgres import free_port

from .vendor import vendor_public_key_file

PASSWORD = "end to end password"


class ConsoleProcess:
    """``shoal console`` on 127.0.0.1 with its own data dir; killed at ``stop``."""

    def __init__(
        self, data_dir: Path, database_url: str | None = None, password: str | None = PASSWORD
    ) -> None:
        self.data_dir = data_dir
        self.password = password
        self.database_url = database_url
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def start(self, timeout: float = 60.0) -> None:
        env = {key: value for key, value in os.environ.items() if key != "SHOAL_ADMIN_PASSWORD"}
        if self.password is not None:
            env["SHOAL_ADMIN_PASSWORD"] = self.password
        command = [sys.executable, "-m", "shoal", "console", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        command += ["--vendor-public-key", str(vendor_public_key_file(self.data_dir.parent))]
        if self.database_url:
            command += ["--database-url", self.database_url]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"console exited at start:\n{self.log()}")
            if self.cert_path.exists():
                try:
                    httpx.get(
                        self.base_url + "/api/v1/health",
                        verify=ssl.create_default_context(cafile=self.cert_path),
                        timeout=2,
                    ).raise_for_status()
                    return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"console did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def admin(self) -> httpx.Client:
        """An HTTPS client authenticated with a fresh API token."""
        client = httpx.Client(
            base_url=self.base_url,
            verify=ssl.create_default_context(cafile=self.cert_path),
            timeout=60,
        )
        login = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": self.password}
        )
        login.raise_for_status()
        token = client.post(
            "/api/v1/tokens", json={"name": "e2e"}, headers={"Origin": self.base_url}
        ).json()["token"]
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token}"
        return client
