"""WAN savings: the share of what devices received that came from peers (pure)."""

from __future__ import annotations

from collections.abc import Iterable

#: The help text of the per-office savings gauge of the console's and the server's /metrics.
SAVINGS_HELP = "Share of the bytes devices received from peers rather than over the WAN"


def wan_savings(from_peers: int, from_server: int) -> float:
    """Share of the bytes devices received that did not come over the WAN (0..1)."""
    total = from_peers + from_server
    return from_peers / total if total else 0.0


def savings_by_office(rows: Iterable[tuple[str, int, int]]) -> list[tuple[str, float]]:
    """``(office, wan_savings)`` per office, sorted by office, from rows of ``(office,
    bytes from peers, bytes from the server)`` (several rows per office add up)."""
    totals: dict[str, tuple[int, int]] = {}
    for office, from_peers, from_server in rows:
        peers, server = totals.get(office, (0, 0))
        totals[office] = (peers + from_peers, server + from_server)
    return [(office, wan_savings(*totals[office])) for office in sorted(totals)]
