"""WAN savings: the share of what devices received that came from peers (pure)."""

from __future__ import annotations


def wan_savings(from_peers: int, from_server: int) -> float:
    """Share of the bytes devices received that did not come over the WAN (0..1)."""
    total = from_peers + from_server
    return from_peers / total if total else 0.0
