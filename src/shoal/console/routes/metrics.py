"""``/metrics``: the console's Prometheus metrics (``shoal console --no-metrics`` hides it).

No authentication, as Prometheus expects: the figures are counts and office names; an
organisation that holds them private restricts ``/metrics`` at its proxy or firewall.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shoal.console.auth import Console
from shoal.console.metrics import ConsoleCollector
from shoal.console.state import ConsoleState

router = APIRouter(tags=["status"])

_registries: dict[int, CollectorRegistry] = {}


def _registry(state: ConsoleState) -> CollectorRegistry:
    # One registry per opened console (tests open several in one process).
    registry = _registries.get(id(state))
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ConsoleCollector(state))
        _registries.clear()
        _registries[id(state)] = registry
    return registry


@router.get("/metrics", response_class=Response)
def metrics(state: Console) -> Response:
    """Prometheus text format: bytes from peers and servers per office and content, WAN
    savings, licence seats, devices, downloads, servers' last contact, feed length."""
    if not state.config.metrics:
        raise HTTPException(404, "metrics are off (shoal console --no-metrics)")
    return Response(generate_latest(_registry(state)), media_type=CONTENT_TYPE_LATEST)
