"""``shoal bench transfer`` end to end on loopback: a copy verified, figures reported."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from shoal.cli import cli


def test_bench_transfer_on_loopback_reports_a_verified_copy(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "transfer",
            "--size-mb",
            "3",
            "--loopback",
            "--no-baseline",
            "--repeat",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    shoal = document["shoal"]
    assert document["link"].startswith("loopback")
    assert shoal["complete"] and shoal["sha256_matches"]
    assert shoal["payload_mb_per_s"] > 0
    assert len(document["shoal_runs"]) == 2
    assert document["shoal_spread_mb_per_s"]["max"] == shoal["payload_mb_per_s"]
    # Each process reports its own CPU time and peak memory.
    for role in ("sender", "receiver"):
        process = document["shoal_processes"][role]
        assert process["peak_rss_bytes"] > 0
        assert process["cpu"]["cpu_seconds"] > 0
    assert "payload MB/s" in result.output
    assert "libtorrent baseline skipped: --no-baseline" in result.output
