"""``shoal sim sweep``: a grid of single-office networks on the simulator's virtual clock.

Theory of operation
-------------------
Each cell of the grid (``shoal_dev.sweep``) becomes one office behind its WAN link
(``build_enterprise`` with the real ``AgentCore`` and ``ServerNode`` machines, the real
transfer engine and content stores): clients' uplinks and downlinks, the WAN's rate and
round trip, and the queue depth of every link of the office are the cell's. The package
is cut as the console cuts an upload (``chunk_size_for``, unless the cell says
``chunk_kib``) and assigned to everyone at virtual time 0. The run's clock starts
(``t0``) when the first client begins its download, so registration round trips do not
count; a cell with churn
kills its clients (the office's rendezvous point first) at ``t0 + 0.3 T_lb1`` and brings
them back 3 s later on their stores as they were, as a restarted process would.

A cell ends when every client holds the package, when its virtual time is up, when one
instant of virtual time fires more than ``STALL_EVENTS`` events (time stopped: a timer
re-armed at ``now`` over and over), or after ``wall_s`` seconds of this machine's time. It
reports the last client's time against the office's one-WAN-copy bound T_lb1 (and
Kumar-Ross, and T_lbc: T_lb1 with the churned clients' outages as they happened,
``shoal.core.bounds.churn_bound``), the bytes that crossed the WAN into the office
(datagrams with their UDP/IP headers, control traffic included) over the package's
size, and the SHA-256 of every client's copy. The report puts the worst cell first.

The lab cannot do what the simulator adds: WAN round trips of 1-200 ms and queues from
20 ms to 1 s. The simulator cannot measure CPU or memory: that is the lab's job.
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.client.agent import AgentCore
from shoal.store.content_store import ContentStore
from shoal.wire.control import LeaseDecision
from shoal_dev.sim.enterprise import (
    Enterprise,
    SimClient,
    SimOffice,
    build_enterprise,
    file_sha256,
)
from shoal_dev.sweep import CHURN_AT_BOUND, CHURN_DOWN_S, Cell, Grid, worst_first
from shoal_dev.sweep import write_heatmap as draw_heatmap

OFFICE = "Branch"
SUBNET = "10.1.0.0/24"
STALL_EVENTS = 20_000
"""Events at one instant of virtual time beyond which a cell has stopped time."""
CHECK_EVERY = 512
"""Events between two checks of completion and of the wall clock."""

Say = Callable[[str], None]


class CellStopped(Exception):
    """The cell's run cannot go on: time stopped, or the wall clock ran out."""


@dataclass
class _Watch:
    """Why a cell's run must give up: time stopped, or the wall clock ran out."""

    enterprise: Enterprise
    wall_deadline: float
    events: int = 0
    instant: float = -1.0
    at_instant: int = 0
    reason: str = ""

    def __call__(self) -> bool:
        """After each event: True when the run must stop (``reason`` says why)."""
        self.events += 1
        now = self.enterprise.network.now
        if now == self.instant:
            self.at_instant += 1
            if self.at_instant > STALL_EVENTS:
                self.reason = f"time stopped at {now:.3f} s ({self.at_instant} events there)"
                return True
        else:
            self.instant, self.at_instant = now, 0
        if self.events % CHECK_EVERY == 0 and time.monotonic() > self.wall_deadline:
            self.reason = f"wall-clock limit at virtual {now:.2f} s"
            return True
        return False


def office_spec(cell: Cell) -> SimOffice:
    """The simulator's office for a cell."""
    return SimOffice(
        OFFICE,
        SUBNET,
        cell.clients,
        wan_rate=cell.wan_mbit * 1e6 / 8,
        client_up_rate=cell.client_up_mbit * 1e6 / 8,
        client_down_rate=cell.client_down_mbit * 1e6 / 8,
        wan_rtt=cell.rtt_ms / 1000,
        buffer_seconds=cell.buffer_ms / 1000,
        disk_seconds=cell.disk_ms / 1000,
        loss=cell.loss_pct / 100,
    )


def _victims(enterprise: Enterprise, count: int) -> list[SimClient]:
    """The office's rendezvous point first (as the lab does), then unfinished clients."""

    def granted(client: SimClient) -> bool:
        download = enterprise.download_of(client)
        return download is not None and download.source is LeaseDecision.GRANTED

    waiting = [client for client in enterprise.clients if not enterprise.complete(client)]
    return sorted(waiting, key=lambda client: not granted(client))[:count]


def _restart(enterprise: Enterprise, client: SimClient, root: Path) -> None:
    """The client's process starts again on its store as it was on disk, and with the
    assignment document its earlier process accepted (``shoal.client.kept_assignments``)."""
    network = enterprise.network
    client.store.close()  # type: ignore[attr-defined]
    store = ContentStore(root / f"client-{client.host.ip}", durable=False)
    # Its random choices go on from the seed's stream, so a churn cell is a function of it.
    agent = AgentCore(
        client.agent.config, store, network.now, rng=random.Random(client.agent.rng.random())
    )
    agent.assignments.kept = client.agent.assignments.document  # as the shell keeps them
    agent.registrar.kept = client.agent.registrar.registered or client.agent.registrar.kept
    network.restart(client.host, agent.bindings(), agent)
    client.agent, client.store = agent, store


def run_cell(
    cell: Cell, root: Path, *, timeout_s: float, wall_s: float, seed: int = 1
) -> dict[str, Any]:
    """Run one cell in ``root`` (its clients' stores); its JSON row."""
    spec = office_spec(cell)
    began = time.monotonic()
    enterprise = build_enterprise(
        root,
        [spec],
        package_size=cell.size_bytes,
        chunk_size=cell.chunk_bytes,
        seed=seed,
        link_profiles=True,
    )
    watch = _Watch(enterprise, began + wall_s)
    network = enterprise.network
    one_copy, kumar_ross = cell.one_copy_bound(), cell.kumar_ross_bound()

    def run_until(until: float, done: Callable[[], bool]) -> None:
        """Run to ``until`` or until ``done()`` (asked every ``CHECK_EVERY`` events)."""
        network.run(until, lambda: watch() or (watch.events % CHECK_EVERY == 0 and done()))
        if watch.reason:
            raise CellStopped(watch.reason)

    reason = ""
    t0 = math.nan
    restarts = 0
    outages: list[tuple[float, float]] = []
    try:
        run_until(timeout_s, lambda: any(enterprise.download_of(c) for c in enterprise.clients))
        starts = [d.started_at for c in enterprise.clients if (d := enterprise.download_of(c))]
        if not starts:
            raise CellStopped(f"no client began the download in {timeout_s:.0f} s")
        t0 = min(starts)
        if cell.churn_clients:
            run_until(t0 + CHURN_AT_BOUND * one_copy.seconds, enterprise.all_complete)
            victims = _victims(enterprise, cell.churn_clients)
            for client in victims:
                network.kill(client.host)
            down_at = network.now - t0
            back = network.now + CHURN_DOWN_S
            network.at(back, lambda: None)  # the clock reaches ``back`` (a quiet network's
            run_until(back, lambda: False)  # stops at its last event before it)
            for client in victims:
                _restart(enterprise, client, root)
                restarts += 1
                outages.append((down_at, network.now - t0))
        run_until(timeout_s, enterprise.all_complete)
    except CellStopped as stopped:
        reason = str(stopped)
    except RuntimeError as error:  # the simulator's own guard when time stands still
        reason = f"{type(error).__name__}: {error}"
    downloads = [enterprise.download_of(client) for client in enterprise.clients]
    finished = [d.completed_at for d in downloads if d is not None and d.completed_at is not None]
    complete = sum(1 for client in enterprise.clients if enterprise.complete(client))
    expected = hashlib.sha256(enterprise.package).hexdigest()
    sha_ok = complete == cell.clients and all(
        file_sha256(client.store, enterprise.content_id) == expected
        for client in enterprise.clients
    )
    if not reason and complete < cell.clients:
        reason = f"{cell.clients - complete} clients unfinished after {timeout_s:.0f} s"
    if not reason and not sha_ok:
        reason = "a wrong SHA-256"
    t_last = max(finished) - t0 if complete == cell.clients and finished else None
    wan_bytes = enterprise.wan_bytes_down(OFFICE)
    churned = cell.churn_bound(outages)
    return {
        "cell": cell.parameters(),
        "label": cell.name,
        "status": "ok" if not reason else "failed",
        "reason": reason,
        "t_last_s": None if t_last is None else round(t_last, 3),
        "one_copy_bound_s": round(one_copy.seconds, 3),
        "binding": one_copy.binding,
        "kumar_ross_bound_s": round(kumar_ross.seconds, 3),
        "t_over_one_copy_bound": None if t_last is None else round(t_last / one_copy.seconds, 3),
        "t_over_kumar_ross": None if t_last is None else round(t_last / kumar_ross.seconds, 3),
        "churn_bound_s": round(churned.seconds, 3),
        "churn_binding": churned.binding,
        "t_over_churn_bound": None if t_last is None else round(t_last / churned.seconds, 3),
        "chunk_bytes": enterprise.manifest.chunk_size,
        "wan_bytes_in": wan_bytes,
        "wan_over_package": round(wan_bytes / enterprise.manifest.size, 4),
        "clients_complete": complete,
        "sha256_ok": sha_ok,
        "restarts": restarts,
        "virtual_s": round(network.now, 3),
        "events": watch.events,
        "wall_s": round(time.monotonic() - began, 2),
    }


def run_grid(
    grid: Grid, *, say: Say = print, wall_s: float = 600.0, seed: int = 1
) -> dict[str, Any]:
    """Run every cell of ``grid``; the sweep's document (cells in grid order)."""
    rows = []
    for index, cell in enumerate(grid.cells, 1):
        with tempfile.TemporaryDirectory(prefix="shoal-sim-sweep-") as root:
            row = run_cell(cell, Path(root), timeout_s=grid.timeout_s, wall_s=wall_s, seed=seed)
        row["index"] = index
        rows.append(row)
        ratio = row["t_over_one_copy_bound"]
        say(
            f"cell {index}/{len(grid.cells)} {cell.name}: "
            + (f"T_last/T_lb1 {ratio:.2f}" if ratio is not None else row["reason"])
            + _churn_note(row)
            + f", WAN/F {row['wan_over_package']:.3f} ({row['wall_s']:.0f} s)"
        )
    return {
        "grid": grid.name,
        "description": grid.description,
        "runner": "simulator",
        "timeout_s": grid.timeout_s,
        "cells": rows,
    }


def format_sweep(document: dict[str, Any]) -> str:
    """The report: the worst cell first, then every cell, worst first."""
    rows = worst_first(document["cells"], "t_over_one_copy_bound")
    lines = [f"sim sweep {document['grid']}: {len(rows)} cells"]
    if rows:
        worst = rows[0]
        ratio = worst["t_over_one_copy_bound"]
        lines.append(
            f"WORST: cell {worst['index']} {worst['label']}: "
            + (f"T_last/T_lb1 {ratio:.2f}" if ratio is not None else f"failed: {worst['reason']}")
            + _churn_note(worst)
            + f", WAN/F {worst['wan_over_package']:.3f}"
        )
    lines.append(
        f"{'#':>3} {'N':>3} {'up':>5} {'down':>5} {'WAN':>5} {'MiB':>4} {'churn':>5} "
        f"{'RTT ms':>6} {'buf ms':>6} {'T_last s':>8} {'T_lb1 s':>8} {'binds':<8} "
        f"{'T/T_lb1':>7} {'T/T_KR':>6} {'T_lbc s':>7} {'binds':<7} {'T/T_lbc':>7} "
        f"{'WAN/F':>6} {'sha':<3}  reason"
    )
    for row in rows:
        cell = row["cell"]
        t_last = "-" if row["t_last_s"] is None else f"{row['t_last_s']:.2f}"
        over = row["t_over_one_copy_bound"]
        over_kr = row["t_over_kumar_ross"]
        over_c = row["t_over_churn_bound"]
        lines.append(
            f"{row['index']:>3} {cell['clients']:>3} {cell['client_up_mbit']:>5g} "
            f"{cell['client_down_mbit']:>5g} {cell['wan_mbit']:>5g} {cell['size_mb']:>4} "
            f"{cell['churn']:>5.0%} {cell['rtt_ms']:>6g} {cell['buffer_ms']:>6g} "
            f"{t_last:>8} {row['one_copy_bound_s']:>8.2f} {row['binding']:<8} "
            f"{'-' if over is None else f'{over:.2f}':>7} "
            f"{'-' if over_kr is None else f'{over_kr:.2f}':>6} "
            f"{row['churn_bound_s']:>7.2f} {row['churn_binding']:<7} "
            f"{'-' if over_c is None else f'{over_c:.2f}':>7} "
            f"{row['wan_over_package']:>6.3f} {'ok' if row['sha256_ok'] else 'NO':<3}  "
            f"{row['reason']}"
        )
    return "\n".join(lines)


def _churn_note(row: dict[str, Any]) -> str:
    """``, T_last/T_lbc R (binds)`` for a cell with churn: its time against the bound
    that counts the outages; nothing otherwise."""
    ratio = row["t_over_churn_bound"]
    if not row["cell"]["churn"] or ratio is None:
        return ""
    return f", T_last/T_lbc {ratio:.2f} ({row['churn_binding']})"


def write_heatmap(document: dict[str, Any], folder: Path) -> Path:
    """``GRID-sim-heatmap.png``: T_last/T_lb1 and WAN/F of every cell, by axis."""
    return draw_heatmap(
        document["cells"],
        [
            ("t_over_one_copy_bound", "shoal T_last / T_lb1 (target 1.3)", 1.0, 1.6),
            ("wan_over_package", "WAN bytes / F (target 1.06)", 1.0, 1.12),
        ],
        folder / f"{document['grid']}-sim-heatmap.png",
        f"sim sweep {document['grid']}",
    )
