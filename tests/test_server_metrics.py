"""The P2P server's metrics listener, health and console backoff (issue 12)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shoal.server.metrics_listener import parse_listen_address
from shoal.server.service import ServerConfig, ServerService


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _service(tmp_path: Path, console_port: int) -> ServerService:
    return ServerService(
        ServerConfig(
            data_dir=tmp_path / "server",
            console_url=f"http://127.0.0.1:{console_port}",
            auth_key="k" * 43,
            address="127.0.0.1",
            name="test",
            bind="127.0.0.1",
            control_port=_free_port(),
            data_port=_free_port(),
            background_port=_free_port(),
            sync_seconds=0.1,
            retry_max_seconds=0.4,
            metrics=("127.0.0.1", 0),
        )
    )


async def _run_for(service: ServerService, seconds: float) -> dict[str, httpx.Response]:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    while service.metrics_listener is None or service.metrics_listener.address is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(seconds)
    host, port = service.metrics_listener.address
    answers = {}
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        for path in ("/metrics", "/api/v1/health/ready", "/api/v1/health/live", "/nothing"):
            answers[path] = await client.get(path)
    stop.set()
    await task
    return answers


def test_an_unreachable_console_is_retried_with_growing_waits_and_shows_in_metrics(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, _free_port(socket.SOCK_STREAM))  # nothing listens there
    answers = asyncio.run(_run_for(service, 2.0))
    # Fixed 0.1 s waits would make ~20 attempts in 2 s; 0.1, 0.2, 0.4, 0.4... (+ jitter
    # up to 0.1 s) make at most 7.
    assert 2 <= service.sync_failures <= 7, service.sync_failures
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(answers["/metrics"].text)
        for sample in family.samples
        if not sample.labels
    }
    # (one more attempt may have failed between the scrape and the stop)
    scraped = samples["shoal_server_console_sync_failures_total"]
    assert service.sync_failures - 1 <= scraped <= service.sync_failures
    assert samples["shoal_server_feed_lag_seconds"] >= 2.0
    assert samples["shoal_server_clients"] == 0
    assert samples["shoal_server_chunks_held_back_total"] == 0
    assert answers["/api/v1/health/ready"].status_code == 200
    checks = {check["name"] for check in answers["/api/v1/health/ready"].json()["checks"]}
    assert checks == {"database", "origin store"}
    assert answers["/api/v1/health/live"].json()["status"] == "ok"
    assert answers["/nothing"].status_code == 404


def test_listen_address_parsing() -> None:
    assert parse_listen_address("0.0.0.0:9465") == ("0.0.0.0", 9465)
    assert parse_listen_address(":9465") == ("127.0.0.1", 9465)
    assert parse_listen_address("[::1]:9465") == ("::1", 9465)
    for bad in ("9465", "host:", "host:70000"):
        try:
            parse_listen_address(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
