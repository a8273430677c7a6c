"""``shoal lab sweep``: shoal and libtorrent over a grid of single-office networks.

Theory of operation
-------------------
Each cell of the grid (``shoal_dev.sweep``: clients, their uplink and downlink, the WAN, the
package, churn) becomes a one-office ``Scenario`` that ``lab.runner.run_scenario`` runs
as ``shoal lab run`` does: the emulated network built once per cell, shoal then
libtorrent on it with the same file, each measured (completion times, WAN counters,
SHA-256 of every copy, CPU and memory), the network torn down. A churned cell kills
``churn x N`` clients (shoal's rendezvous point first) at 30% of the office's T_lb1 and
restarts them 3 s later.

From each cell's two rows the sweep keeps what compares them: the last client's time
over T_lb1 for both systems, shoal's time over libtorrent's, the WAN bytes into the
office over the package (IP bytes, shoal's), every SHA-256 right, client CPU seconds
per MiB and peak RSS. The report leads with the worst cell for shoal by T_last/T_lb1
and by shoal/libtorrent, then lists every cell; the JSON keeps every cell's row and
the runner's whole document for it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal_dev.lab.runner import LAB_BASE, LAB_PREFIX, run_scenario
from shoal_dev.lab.scenario import Churn, OfficeScenario, Scenario
from shoal_dev.sweep import CHURN_AT_BOUND, CHURN_DOWN_S, Cell, Grid, GridInvalid, worst_first
from shoal_dev.sweep import write_heatmap as draw_heatmap

SYSTEMS = ("shoal", "libtorrent")
OFFICE = "branch"
MIB = 1024 * 1024

Say = Callable[[str], None]


def cell_scenario(grid: Grid, index: int, cell: Cell) -> Scenario:
    """The one-office lab scenario of a cell."""
    office = OfficeScenario(
        OFFICE,
        "Default",
        cell.clients,
        wan_mbit=cell.wan_mbit,
        client_up_mbit=cell.client_up_mbit,
        client_down_mbit=cell.client_down_mbit,
    )
    churn = None
    if cell.churn_clients:
        # The runner times churn against Kumar-Ross's bound; the grid against T_lb1.
        at = CHURN_AT_BOUND * cell.one_copy_bound().seconds / cell.kumar_ross_bound().seconds
        churn = Churn(cell.churn_clients, at, CHURN_DOWN_S)
    return Scenario(
        name=f"{grid.name}-{index}",
        description=cell.name,
        size_mb=cell.size_mb,
        systems=SYSTEMS,
        offices=(office,),
        timeout_s=grid.timeout_s,
        churn=churn,
    )


def _system(document: dict[str, Any], system: str) -> dict[str, Any]:
    """One system's figures for the cell's office (empty when it did not run)."""
    row = next((r for r in document["systems"] if r["system"] == system), None)
    if row is None or row["status"] == "skipped" or not row["offices"]:
        return {
            "status": row["status"] if row else "missing",
            "reason": row["reason"] if row else "",
        }
    (office,) = row["offices"]
    received_mib = (row["bytes_from_server"] + row["bytes_from_peers"]) / MIB
    client_cpu = sum(p["cpu_seconds"] for p in row["processes"] if p["role"] == "client")
    waited = row.get("run_queue_wait_per_client_s")
    return {
        "status": row["status"],
        "reason": row["reason"],
        "t_last_s": office["t_last_s"],
        "t_over_one_copy_bound": office["t_over_one_copy_bound"],
        "churn_bound_s": office.get("churn_bound_s"),
        "churn_binding": office.get("churn_binding"),
        "t_over_churn_bound": office.get("t_over_churn_bound"),
        "t_over_kumar_ross": office["t_over_lower_bound"],
        "wan_over_package": office["wan_in_over_package"],
        "wan_ip_over_package": office["wan_ip_in_over_package"],
        "sha256_ok": row["all_sha256_ok"],
        "client_cpu_s_per_mib": round(client_cpu / received_mib, 4) if received_mib else None,
        "client_peak_rss_bytes": row["peak_rss_bytes_client_max"],
        # The share of the download a client's event loop waited for a CPU (shared cores).
        "client_cpu_wait_over_t_last": (
            round(waited / office["t_last_s"], 3)
            if waited is not None and office["t_last_s"]
            else None
        ),
    }


def cell_row(index: int, cell: Cell, document: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """The sweep's row for one cell, from the runner's document."""
    shoal, torrent = _system(document, "shoal"), _system(document, "libtorrent")
    one_copy = cell.one_copy_bound()
    ratio = None
    if shoal.get("t_last_s") is not None and torrent.get("t_last_s"):
        ratio = round(shoal["t_last_s"] / torrent["t_last_s"], 3)
    return {
        "index": index,
        "cell": cell.parameters(),
        "label": cell.name,
        "status": shoal["status"],
        "one_copy_bound_s": round(one_copy.seconds, 3),
        "binding": one_copy.binding,
        "kumar_ross_bound_s": round(cell.kumar_ross_bound().seconds, 3),
        "shoal": shoal,
        "libtorrent": torrent,
        "t_over_one_copy_bound": shoal.get("t_over_one_copy_bound"),
        "libtorrent_t_over_one_copy_bound": torrent.get("t_over_one_copy_bound"),
        "t_over_churn_bound": shoal.get("t_over_churn_bound"),
        "libtorrent_t_over_churn_bound": torrent.get("t_over_churn_bound"),
        "shoal_over_libtorrent": ratio,
        "wan_ip_over_package": shoal.get("wan_ip_over_package"),
        "sha256_ok": bool(shoal.get("sha256_ok")) and bool(torrent.get("sha256_ok", True)),
        "wall_s": round(wall_s, 1),
    }


KEPT_SUFFIXES = (".log", ".json", ".txt", ".db", ".sqlite", ".sqlite3", ".toml")
BULKY_BYTES = 1 << 20


def prune_copies(folder: Path) -> None:
    """Delete the package's copies (origin, caches, downloads) under ``folder`` and keep
    what explains the run: logs, status files, databases. A copy is any file of at
    least 1 MiB that is none of those."""
    for path in folder.rglob("*"):
        if (
            path.is_file()
            and not path.is_symlink()
            and path.suffix not in KEPT_SUFFIXES
            and path.stat().st_size >= BULKY_BYTES
        ):
            path.unlink()


def run_grid(
    grid: Grid,
    work: Path,
    *,
    say: Say = print,
    prefix: str = LAB_PREFIX,
    base: str = LAB_BASE,
    keep: bool = False,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every cell of ``grid`` in the lab; the sweep's document (cells in grid order).

    Each cell runs in ``work/cell-N``, removed after the cell, or with ``keep`` kept
    without the package's copies (its logs and status files explain a slow cell).
    ``on_cell`` gets the document so far after each cell (a long sweep stopped midway
    keeps its finished cells).
    """
    sim_only = grid.sim_only_fields()
    if sim_only:
        raise GridInvalid(
            f"grid {grid.name} sets {', '.join(sim_only)}, which only the simulator has "
            "(`shoal sim sweep`): the lab's links have no delay and fixed queues"
        )
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    sweep = {
        "grid": grid.name,
        "description": grid.description,
        "runner": "lab",
        "timeout_s": grid.timeout_s,
        "cells": rows,
        "runs": runs,
    }
    for index, cell in enumerate(grid.cells, 1):
        say(f"cell {index}/{len(grid.cells)}: {cell.name}")
        began = time.monotonic()
        load_before = os.getloadavg()[0]
        folder = work / f"cell-{index}"
        try:
            document = run_scenario(
                cell_scenario(grid, index, cell),
                folder,
                say=lambda line: say(f"  {line}"),
                prefix=prefix,
                base=base,
            )
        finally:
            if keep and folder.exists():
                prune_copies(folder)
            else:
                shutil.rmtree(folder, ignore_errors=True)
        row = cell_row(index, cell, document, time.monotonic() - began)
        # The 1-minute load average as the cell began and ended: the cores are shared.
        row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        rows.append(row)
        runs.append(document)
        say(f"cell {index}: {_summary(row)} ({row['wall_s']:.0f} s, load "
            f"{row['load_average'][0]:.1f}-{row['load_average'][1]:.1f})")  # fmt: skip
        if on_cell is not None:
            on_cell(sweep)
    return sweep


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(row: dict[str, Any]) -> str:
    shoal = row["shoal"]
    if row["t_over_one_copy_bound"] is None:
        return f"shoal {shoal['status']}: {shoal.get('reason', '')}"
    return (
        f"shoal T_last/T_lb1 {_ratio(row['t_over_one_copy_bound'])}, libtorrent "
        f"{_ratio(row['libtorrent_t_over_one_copy_bound'])}, shoal/libtorrent "
        f"{_ratio(row['shoal_over_libtorrent'])}, WAN/F {_ratio(row['wan_ip_over_package'])}"
    )


def format_sweep(document: dict[str, Any]) -> str:
    """The report: the worst cells for shoal first, then every cell, worst first."""
    rows = document["cells"]
    lines = [f"lab sweep {document['grid']}: {len(rows)} cells"]
    if rows:
        by_bound = worst_first(rows, "t_over_one_copy_bound")[0]
        by_rival = worst_first(rows, "shoal_over_libtorrent")[0]
        lines.append(f"WORST by T_last/T_lb1: cell {by_bound['index']} {by_bound['label']}: "
                     f"{_summary(by_bound)}")  # fmt: skip
        lines.append(f"WORST by shoal/libtorrent: cell {by_rival['index']} {by_rival['label']}: "
                     f"{_summary(by_rival)}")  # fmt: skip
    lines.append(
        f"{'#':>3} {'N':>3} {'up':>5} {'down':>5} {'WAN':>5} {'MiB':>4} {'churn':>5} "
        f"{'T_lb1 s':>8} {'binds':<8} {'shoal T':>8} {'T/T_lb1':>7} {'lt T':>8} "
        f"{'lt/T_lb1':>8} {'T/T_lbc':>7} {'lt/T_lbc':>8} {'shoal/lt':>8} {'WAN/F':>6} {'sha':<3} "
        f"{'CPU s/MiB':>9} {'lt CPU':>6} {'RSS MB':>6} {'CPU wait':>8} {'lt wait':>7}"
    )
    for row in worst_first(rows, "t_over_one_copy_bound"):
        cell, shoal, torrent = row["cell"], row["shoal"], row["libtorrent"]

        def seconds(system: dict[str, Any]) -> str:
            value = system.get("t_last_s")
            return "-" if value is None else f"{value:.2f}"

        rss = shoal.get("client_peak_rss_bytes")
        lines.append(
            f"{row['index']:>3} {cell['clients']:>3} {cell['client_up_mbit']:>5g} "
            f"{cell['client_down_mbit']:>5g} {cell['wan_mbit']:>5g} {cell['size_mb']:>4} "
            f"{cell['churn']:>5.0%} {row['one_copy_bound_s']:>8.2f} {row['binding']:<8} "
            f"{seconds(shoal):>8} {_ratio(row['t_over_one_copy_bound']):>7} "
            f"{seconds(torrent):>8} {_ratio(row['libtorrent_t_over_one_copy_bound']):>8} "
            f"{_ratio(row.get('t_over_churn_bound')):>7} "
            f"{_ratio(row.get('libtorrent_t_over_churn_bound')):>8} "
            f"{_ratio(row['shoal_over_libtorrent']):>8} "
            f"{_ratio(row['wan_ip_over_package']):>6} {'ok' if row['sha256_ok'] else 'NO':<3} "
            f"{_ratio(shoal.get('client_cpu_s_per_mib')):>9} "
            f"{_ratio(torrent.get('client_cpu_s_per_mib')):>6} "
            f"{'-' if not rss else f'{rss / 1e6:.0f}':>6} "
            f"{_ratio(shoal.get('client_cpu_wait_over_t_last')):>8} "
            f"{_ratio(torrent.get('client_cpu_wait_over_t_last')):>7}"
        )
        for name, system in (("shoal", shoal), ("libtorrent", torrent)):
            if system.get("reason"):
                lines.append(f"{'':>3} {name}: {system['status']}: {system['reason']}")
    return "\n".join(lines)


def write_heatmap(document: dict[str, Any], folder: Path) -> Path:
    """``GRID-lab-heatmap.png``: both systems against T_lb1, shoal/libtorrent, WAN/F."""
    return draw_heatmap(
        document["cells"],
        [
            ("t_over_one_copy_bound", "shoal T_last / T_lb1 (target 1.3)", 1.0, 1.6),
            ("libtorrent_t_over_one_copy_bound", "libtorrent T_last / T_lb1", 1.0, 1.6),
            ("shoal_over_libtorrent", "shoal T_last / libtorrent T_last (target 0.7)", 0.4, 1.0),
            ("wan_ip_over_package", "shoal WAN IP bytes / F (target 1.05)", 1.0, 1.1),
        ],
        folder / f"{document['grid']}-lab-heatmap.png",
        f"lab sweep {document['grid']}",
    )
