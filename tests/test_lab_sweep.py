"""``shoal lab sweep`` without root: cells as lab scenarios, rows from the runner's
results, the report and the lab's table (the runs themselves: tests/lab/)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from shoal_dev.lab.runner import OfficeResult, ProcessSampler, SystemResult, format_results
from shoal_dev.lab.sweep import (
    cell_row,
    cell_scenario,
    format_sweep,
    prune_copies,
    run_grid,
    write_heatmap,
)
from shoal_dev.sweep import Cell, GridInvalid, load_grid, parse_grid

MIB = 1024 * 1024


def system(name: str, t_last: float, bound: float, one_copy: float, wan: float) -> SystemResult:
    office = OfficeResult("branch", 4, t_last, bound, round(t_last / bound, 3), one_copy,
                          round(t_last / one_copy, 3), "uplinks", int(wan * 8 * MIB), 0,
                          wan, int(wan * 8 * MIB), wan, 100)  # fmt: skip
    return SystemResult(
        name, "ok", t_last_s=t_last, all_sha256_ok=True, bytes_from_server=8 * MIB,
        bytes_from_peers=24 * MIB, offices=[office], run_queue_wait_per_client_s=t_last / 4,
        processes=[{"name": "c", "role": "client", "cpu_seconds": 3.2, "peak_rss_bytes": 5e7}],
    )  # fmt: skip


def document(shoal_t: float, torrent_t: float, cell: Cell) -> dict[str, object]:
    bound, one_copy = cell.kumar_ross_bound().seconds, cell.one_copy_bound().seconds
    return {
        "scenario": "x",
        "size_bytes": cell.size_bytes,
        "systems": [
            asdict(system("shoal", shoal_t, bound, one_copy, 1.04)),
            asdict(system("libtorrent", torrent_t, bound, one_copy, 3.1)),
        ],
    }


def test_a_cell_is_a_one_office_scenario_with_churn_timed_on_t_lb1() -> None:
    grid = parse_grid("[base]\nclients = 16\nchurn = 0.25\n", "g.toml")
    (cell,) = grid.cells
    scenario = cell_scenario(grid, 1, cell)
    (office,) = scenario.offices
    assert (office.clients, office.client_up_mbit, office.client_down_mbit) == (16, 20, 100)
    assert scenario.systems == ("shoal", "libtorrent") and scenario.size_mb == 32
    assert scenario.churn is not None and scenario.churn.clients == 4
    # The runner kills at a fraction of Kumar-Ross's bound: 0.3 T_lb1 = 3.775 s of 10.226.
    kill_at = scenario.churn.at_lower_bound * office.lower_bound_seconds(scenario.size_bytes)
    assert kill_at == pytest.approx(0.3 * 12.583, abs=1e-3)


def test_a_row_compares_shoal_with_libtorrent_and_the_report_leads_with_the_worst() -> None:
    fast = Cell(clients=4, client_up_mbit=20, size_mb=8)
    slow = Cell(clients=4, client_up_mbit=10, size_mb=8)
    # 4 clients, 8 MiB: T_lb1 = 3 F / (4 x 20 Mbit/s) = 2.517 s, or 5.033 s on 10 Mbit/s.
    rows = [
        cell_row(1, fast, document(3.0, 6.0, fast), 30.0),  # 1.19 T_lb1, 0.5 of libtorrent
        cell_row(2, slow, document(10.0, 8.0, slow), 40.0),  # 1.99 T_lb1, 1.25 of libtorrent
    ]
    assert rows[0]["one_copy_bound_s"] == pytest.approx(2.517, abs=1e-3)
    assert rows[0]["binding"] == "uplinks"
    assert rows[0]["shoal_over_libtorrent"] == 0.5
    assert rows[1]["t_over_one_copy_bound"] == pytest.approx(1.987, abs=1e-3)
    assert rows[1]["libtorrent_t_over_one_copy_bound"] == pytest.approx(1.589, abs=1e-3)
    assert rows[0]["shoal"]["client_cpu_s_per_mib"] == pytest.approx(3.2 / 32)
    assert rows[0]["wan_ip_over_package"] == 1.04 and rows[0]["sha256_ok"]
    # Each client waited a quarter of the run for a CPU (the shared cores' load).
    assert rows[0]["shoal"]["client_cpu_wait_over_t_last"] == 0.25
    report = format_sweep({"grid": "g", "cells": rows})
    lines = report.splitlines()
    assert lines[1].startswith("WORST by T_last/T_lb1: cell 2 N4 up10/down100")
    assert lines[2].startswith("WORST by shoal/libtorrent: cell 2 ")
    assert [line.split()[0] for line in lines[4:6]] == ["2", "1"]  # every cell, worst first


def test_the_lab_table_shows_t_lb1_and_its_binding_term_beside_kumar_ross() -> None:
    cell = Cell(clients=4, client_up_mbit=20, size_mb=8)
    table = format_results(document(3.0, 6.0, cell))
    header, shoal_line = table.splitlines()[1:3]
    assert "T_lb s" in header and "T_lb1 s" in header and "binds" in header
    # Kumar-Ross 4 F / (100 + 80 Mbit/s) = 1.491 s (T/T_lb 2.01); T_lb1 2.52 s (1.19).
    assert shoal_line.split()[3:9] == ["3.00", "1.49", "2.01", "2.52", "1.19", "uplinks"]


def test_the_lab_refuses_a_grid_with_what_only_the_simulator_has(tmp_path: Path) -> None:
    grid = parse_grid("[axes]\nrtt_ms = [100]\n", "g.toml")
    with pytest.raises(GridInvalid, match="rtt_ms, which only the simulator has"):
        run_grid(grid, tmp_path)
    assert load_grid("default", "shoal_dev.lab").sim_only_fields() == []
    assert load_grid("ci", "shoal_dev.lab").sim_only_fields() == []


def test_the_heatmap_is_written(tmp_path: Path) -> None:
    cell = Cell(clients=4, size_mb=8)
    rows = [cell_row(1, cell, document(3.0, 6.0, cell), 30.0)]
    path = write_heatmap({"grid": "g", "cells": rows}, tmp_path)
    assert path == tmp_path / "g-lab-heatmap.png" and path.stat().st_size > 1000


def test_a_kept_cell_keeps_its_logs_and_status_files_but_not_the_package_copies(
    tmp_path: Path,
) -> None:
    client = tmp_path / "shoal" / "client-b1"
    (client / "cache").mkdir(parents=True)
    (tmp_path / "origin").mkdir()
    copies = [client / "cache" / "ab12.data", tmp_path / "origin" / "package.bin"]
    kept = [client / "status.json", tmp_path / "shoal" / "client-b1.log"]
    for path in copies:
        path.write_bytes(b"x" * (2 * MIB))
    for path in kept:
        path.write_bytes(b"{}" * MIB)  # a big log is kept too
    small = client / "identity.key"
    small.write_bytes(b"k" * 32)
    prune_copies(tmp_path)
    assert [path.exists() for path in copies] == [False, False]
    assert all(path.exists() for path in kept) and small.exists()


@pytest.mark.serial  # waits for a CPU, on one CPU
def test_the_sampler_says_how_long_a_process_waited_for_a_cpu() -> None:
    """Two busy processes on one CPU each wait about half the time; a sleeping one does
    not: what tells a lab row measured on crowded cores from one measured on idle ones."""
    import os
    import subprocess
    import sys
    import time

    busy = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
    cpu = sorted(os.sched_getaffinity(0))[0]
    sampler = ProcessSampler()
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"]),
        *(subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)),
    ]
    try:
        for child in children:
            os.sched_setaffinity(child.pid, {cpu})
        time.sleep(0.2)  # past the interpreters' start
        for number, child in enumerate(children):
            sampler.watch(f"p{number}", "client", child.pid)
        sampler.start()
        time.sleep(0.6)
        sampler.sample()
    finally:
        sampler.close()
        for child in children:
            child.wait()
    sleeper, *spinners = (row["run_queue_wait_seconds"] for row in sampler.figures())
    assert all(waited >= 0.15 for waited in spinners)
    assert sleeper < min(spinners)
