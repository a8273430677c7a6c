"""Shapes of what administrators read: P2P servers, download reports, WAN savings and the
summary."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from shoal.console.schemas.admins import LicenceOut


class ServerOut(BaseModel):
    id: str
    name: str
    address: str
    version: str
    registered_at: datetime
    last_seen: datetime
    activated: bool
    online: bool = True
    """Heard from within the online window (``--online-window``)."""


class ServerKeyOut(BaseModel):
    key: str


class DownloadReportRow(BaseModel):
    application: str | None = None
    """The application whose version has this content (None: deleted since)."""
    version: str | None = None
    content_id: str
    office: str
    bytes_from_peers: int
    bytes_from_server: int
    peer_share: float


class WanPoint(BaseModel):
    start: datetime
    bytes_from_peers: int
    bytes_from_server: int


class WanHistory(BaseModel):
    """Bytes received by source in each step of a period (the WAN-saved chart)."""

    period: str
    step_seconds: int
    points: list[WanPoint]


class Attention(BaseModel):
    """Something on the dashboard that needs a person."""

    kind: str
    """``overage``, ``licence``, ``server_offline``, ``version_mismatch``, ... (stable)."""
    severity: str
    """``error`` (something is broken or refused) or ``warning`` (act soon)."""
    message: str
    link: str = ""
    """The console page where it is handled (``#servers``, ``#licence``, ...;
    ``#offices/NAME``: the office view of NAME)."""


class CountOf(BaseModel):
    total: int
    online: int


class WanSaved(BaseModel):
    bytes_from_peers: int
    bytes_from_server: int
    saved_share: float
    """Bytes from peers / all bytes: the share of traffic that never crossed the WAN."""


class Summary(BaseModel):
    """What the dashboard shows, small enough to poll every few seconds.

    ``changed`` holds one token per kind of data: the UI refetches a list only when
    its token differs from the one it last saw.
    """

    version: str
    licence: LicenceOut
    devices: CountOf
    servers: CountOf
    offices: int
    applications: int
    assignments: int
    wan: WanSaved
    attention: list[Attention]
    changed: dict[str, str]


class StatusOut(BaseModel):
    version: str
    console_key_id: str
    tls_fingerprint: str | None
    licence: LicenceOut
    applications: int
    devices: int
    servers: int


# --- the console <-> P2P server link ---------------------------------------------------
