"""The P2P server's small HTTP listener (``--metrics ADDR:PORT``, off by default).

It answers four GET paths and nothing else, on the server's event loop (the collector
reads state only that loop touches):

- ``/metrics``: Prometheus text format (``ServerCollector`` and the process's own);
- ``/api/v1/health/live``: 200 while the process answers;
- ``/api/v1/health/ready`` (and ``/api/v1/health``): 200 when the database answers and
  the origin store is writable with room, else 503 naming the failing check.

Plain HTTP on purpose, like every Prometheus exporter: bind it to a management address
(the default when enabled is loopback) and keep it off the clients' network.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shoal import __version__
from shoal.health import CheckResult, report

log = logging.getLogger("shoal.server.metrics")

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def parse_listen_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` too) -> (address, port); ``:PORT`` is loopback."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9465")
    return (host.strip("[]") or "127.0.0.1"), int(port_text)


class MetricsListener:
    """Serves metrics and health of one P2P server until closed."""

    def __init__(
        self, registry: CollectorRegistry, readiness: Callable[[], list[CheckResult]]
    ) -> None:
        self.registry = registry
        self.readiness = readiness
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        """Where it listens, once started."""

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        log.info("metrics and health on http://%s:%d/metrics", bound[0], bound[1])
        self.address = (bound[0], bound[1])
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
        status, content_type, body = await self._answer(method, path)
        writer.write(
            (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                f"X-Shoal-Version: {__version__}\r\nConnection: close\r\n\r\n"
            ).encode()
            + (body if method != "HEAD" else b"")
        )
        try:
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            # The server's own figures, then the process's (CPU, memory, retries).
            return (
                200,
                CONTENT_TYPE_LATEST,
                generate_latest(self.registry) + generate_latest(REGISTRY),
            )
        if path == "/api/v1/health/live":
            return _json(200, {"status": "ok", "version": __version__})
        if path in ("/api/v1/health", "/api/v1/health/ready"):
            checks = await asyncio.to_thread(self.readiness)
            return _json(*report(checks, __version__))
        return 404, "text/plain", b"not found: /metrics, /api/v1/health/{live,ready}\n"


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()
