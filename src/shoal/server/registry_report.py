"""What the server tells the console about its client registry: each device (host
name, address, subnet, version, public key, progress per content and install results)
and the download statistics per (content, office).

Computed on the loop thread from ``ServerCore``, which alone touches the registry, in
slices of ``REPORT_SLICE`` devices with the loop free between them (10,000 devices took
0.2-0.4 s in one piece on a loaded machine: check-ins waited that long, issue 10); the
service sends it from a worker thread (``ConsoleLink.report_clients`` and
``report_stats``). The swarms' bans and holders: ``shoal.server.swarm_report``.
"""

from __future__ import annotations

import asyncio

from shoal.core.ids import ContentId
from shoal.server.console_link import DownloadTotals, ReportedClient, ReportedInstall
from shoal.server.core import ServerCore
from shoal.server.registry import ClientRecord

REPORT_SLICE = 500
"""Devices reported between two turns of the event loop (a few milliseconds)."""


def reported_client(core: ServerCore, record: ClientRecord) -> ReportedClient:
    """One registered device as the console sees it."""
    content = []
    for progress in record.content.values():
        complete = progress.chunk_count > 0 and progress.chunks_done == progress.chunk_count
        content.append((progress.content_id.hex, core.bytes_done(progress), complete))
    return ReportedClient(
        device_id=record.device_id.hex(),
        hostname=record.hostname or "unnamed",
        address=record.ip,
        subnet=record.subnet,
        version=record.version,
        content=tuple(content),
        public_key=record.public_key.hex(),
        installs=tuple(
            ReportedInstall(
                report.content_id.hex,
                report.status.name.lower(),
                report.attempts,
                report.exit_code,
                report.output_tail,
            )
            for report in record.installs.values()
        ),
    )


def _totals(
    statistics: dict[tuple[ContentId, str], tuple[int, int]],
) -> list[DownloadTotals]:
    return [
        DownloadTotals(content_id.hex, office or "(no office)", peers, server)
        for (content_id, office), (peers, server) in statistics.items()
    ]


def registry_report(core: ServerCore) -> tuple[list[ReportedClient], list[DownloadTotals]]:
    """Every registered device, and the bytes from peers and from the server per
    (content, office), in one piece."""
    clients = [reported_client(core, record) for record in core.clients.values()]
    return clients, _totals(core.download_statistics())


async def registry_report_sliced(
    core: ServerCore, per_slice: int = REPORT_SLICE
) -> tuple[list[ReportedClient], list[DownloadTotals]]:
    """``registry_report``, ``per_slice`` devices at a time with the event loop free
    between slices (the devices registered when it starts)."""
    records = list(core.clients.values())
    clients: list[ReportedClient] = []
    statistics: dict[tuple[ContentId, str], tuple[int, int]] = {}
    for start in range(0, len(records), per_slice):
        piece = records[start : start + per_slice]
        clients.extend(reported_client(core, record) for record in piece)
        core.download_statistics(piece, statistics)
        await asyncio.sleep(0)
    return clients, _totals(statistics)
