"""Console health (live/ready) and Prometheus metrics (issue 12)."""

from __future__ import annotations

import shutil
from datetime import date

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from shoal.console import db

from .conftest import Harness


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_ready_and_live_answer_when_database_and_content_work(console: Harness) -> None:
    for path in ("/api/v1/health", "/api/v1/health/ready"):
        answer = console.client.get(path)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "ok"
        assert {check["name"] for check in body["checks"]} == {"database", "content directory"}
    assert console.client.get("/api/v1/health/live").json()["status"] == "ok"


def test_ready_fails_naming_the_database_when_it_does_not_answer(
    console: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    broken = create_engine("sqlite:////nonexistent-directory/shoal.sqlite3")
    monkeypatch.setattr(console.state, "engine", broken)
    answer = console.client.get("/api/v1/health/ready")
    assert answer.status_code == 503
    (failed,) = [check for check in answer.json()["checks"] if not check["ok"]]
    assert failed["name"] == "database" and "database" in failed["fix"]
    # Liveness does not look at the database: the process answers.
    assert console.client.get("/api/v1/health/live").status_code == 200
    broken.dispose()


def test_ready_fails_naming_the_content_directory_when_it_is_gone(console: Harness) -> None:
    shutil.rmtree(console.state.content.root)
    answer = console.client.get("/api/v1/health")
    assert answer.status_code == 503
    (failed,) = [check for check in answer.json()["checks"] if not check["ok"]]
    assert failed["name"] == "content directory" and "missing" in failed["detail"]


def test_metrics_sum_servers_reports_per_office_and_show_licence_seats(console: Harness) -> None:
    assert console.save_licence(25, date(2027, 1, 1)).status_code == 200
    now = console.clock()
    content = "ab" * 32
    with console.state.sessions() as session, session.begin():
        for server_id, peers, server in (("srv-1", 700, 100), ("srv-2", 200, 0)):
            session.add(
                db.DownloadStat(
                    server_id=server_id,
                    content_id=content,
                    office="Paris",
                    bytes_from_peers=peers,
                    bytes_from_server=server,
                    updated_at=now,
                )
            )
    answer = console.client.get("/metrics")
    assert answer.status_code == 200
    samples = _samples(answer.text)
    labels = (("content_id", content), ("office", "Paris"))
    assert samples[("shoal_console_bytes_from_peers", labels)] == 900
    assert samples[("shoal_console_bytes_from_servers", labels)] == 100
    assert samples[("shoal_console_wan_savings_ratio", (("office", "Paris"),))] == 0.9
    assert samples[("shoal_licence_seats_purchased", ())] == 25
    assert samples[("shoal_licence_seats_used", ())] == 0


def test_metrics_can_be_turned_off(console: Harness) -> None:
    from dataclasses import replace

    console.state.config = replace(console.state.config, metrics=False)
    assert console.client.get("/metrics").status_code == 404
