"""What the server tells the console about its client registry: each device (host
name, address, subnet, version, public key, progress per content and install results)
and the download statistics per (content, office).

Computed on the loop thread from ``ServerCore``, which alone touches the registry; the
service sends it from a worker thread (``ConsoleLink.report_clients`` and
``report_stats``). The swarms' bans and holders: ``shoal.server.swarm_report``.
"""

from __future__ import annotations

from shoal.server.console_link import DownloadTotals, ReportedClient, ReportedInstall
from shoal.server.core import ServerCore


def registry_report(core: ServerCore) -> tuple[list[ReportedClient], list[DownloadTotals]]:
    """Every registered device, and the bytes from peers and from the server per
    (content, office)."""
    clients = []
    for record in core.clients.values():
        content = []
        for progress in record.content.values():
            complete = progress.chunk_count > 0 and progress.chunks_done == progress.chunk_count
            content.append((progress.content_id.hex, core.bytes_done(progress), complete))
        clients.append(
            ReportedClient(
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
        )
    totals = [
        DownloadTotals(content_id.hex, office or "(no office)", peers, server)
        for (content_id, office), (peers, server) in core.download_statistics().items()
    ]
    return clients, totals
