"""How ``shoal server run`` was started: its options (``shoal server run --help``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal.server.limits import AbuseLimits
from shoal.server.stripe_plan import OfficeLinks


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How ``shoal server run`` was started (see ``shoal server run --help``)."""

    data_dir: Path
    console_url: str
    auth_key: str
    address: str
    name: str
    console_ca: Path | None = None
    database_url: str | None = None
    bind: str = "0.0.0.0"
    control_port: int | None = None  # None: the console's setting, else the default
    data_port: int | None = None
    background_port: int | None = None
    discovery_port: int | None = None
    checkin_seconds: int = 60
    lease_seconds: float = 10.0
    sync_seconds: float = 2.0
    report_seconds: float = 10.0
    direct_outside_offices: bool = True
    office_links: Mapping[str, OfficeLinks] = dataclasses.field(default_factory=dict)
    """Per office: its WAN and client uplink rates (``--office-links``)."""
    limits: AbuseLimits = dataclasses.field(default_factory=AbuseLimits)
    retry_max_seconds: float = 60.0
    """Longest wait between two attempts to reach an unreachable console (the waits
    double from ``sync_seconds``, with jitter, up to this)."""
    metrics: tuple[str, int] | None = None
    """Where the metrics and health listener listens (``--metrics``); None: off."""
