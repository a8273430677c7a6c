"""Shapes of what administrators manage: applications, devices, assignments, the topology
and the P2P settings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from shoal import ports as default_ports
from shoal.console.schemas.admins import VersionOut
from shoal.console.schemas.common import Kbps, Name, Port, RowId, Strict


class ApplicationOut(BaseModel):
    id: int
    name: str
    confidential: bool
    created_at: datetime
    versions: list[VersionOut]


class ApplicationChange(Strict):
    confidential: bool


class CachedContent(BaseModel):
    content_id: str
    bytes_done: int
    complete: bool


class DeviceOut(BaseModel):
    id: str
    hostname: str
    address: str
    subnet: str
    office: str | None
    version: str
    server_id: str
    licensed: bool
    status: str = Field(description="online when seen within the online window, else offline")
    first_seen: datetime
    last_seen: datetime
    cached_content: list[CachedContent]


class TargetKind(StrEnum):
    DEVICE = "device"
    OFFICE = "office"
    EVERYONE = "everyone"


class AssignmentRequest(Strict):
    version_id: RowId
    target_kind: TargetKind
    target: Name | None = Field(
        default=None, description="device ID or office name; empty for everyone"
    )
    background: bool = False


class Progress(BaseModel):
    devices_targeted: int
    devices_complete: int
    bytes_done: int
    bytes_total: int
    percent: float


class OfficeProgress(BaseModel):
    """An assignment's progress in one office (offices without targeted devices left out)."""

    office: str | None
    devices_targeted: int
    devices_complete: int
    bytes_done: int
    bytes_total: int
    percent: float


class AssignmentOut(BaseModel):
    id: int
    version_id: int
    application: str
    version: str
    content_id: str
    target_kind: str
    target: str | None
    target_label: str = ""
    """What the target is called: the device's host name, the office, or "everyone"."""
    background: bool
    created_at: datetime
    progress: Progress
    offices: list[OfficeProgress] | None = None
    """Per-office progress: in the answer for one assignment, not in lists."""


class OfficeOut(BaseModel):
    office: str
    parent: str | None
    type: str
    subnets: list[str]
    auto_generated: bool
    devices: int
    children: int = 0
    bytes_from_peers: int = 0
    """Bytes its devices received from peers in the office (all content, all servers)."""
    bytes_from_server: int = 0
    """Bytes its devices received over the WAN from a P2P server."""
    package_bytes: int = 0
    """The sizes of the packages its devices downloaded, each counted once: with one WAN
    copy per package, ``bytes_from_server`` is close to this."""


class OfficeIn(Strict):
    office: Name
    parent: Name | None = None
    type: Annotated[str, StringConstraints(max_length=20)] = "Default"
    subnets: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=1000)
    ]


class TopologyIn(Strict):
    offices: Annotated[list[OfficeIn], Field(max_length=100_000)]


class TopologyOut(BaseModel):
    offices: list[OfficeOut]


class PortSet(Strict):
    """The API's spelling of ``shoal.ports.PortSet`` (``data`` is ``foreground_data``
    here): it validates the numbers, and converts to and from the one type."""

    discovery: Port
    control: Port
    foreground_data: Port
    background_data: Port

    @classmethod
    def of(cls, ports: default_ports.PortSet) -> PortSet:
        return cls.model_validate(ports.to_console())

    def to_ports(self) -> default_ports.PortSet:
        return default_ports.PortSet.from_console(self.model_dump(), default_ports.PortSet())


class BandwidthPolicy(Strict):
    office: Name
    foreground_kbps: Kbps | None = Field(default=None, description="cap; none = unlimited")
    background_kbps: Kbps | None = Field(default=None, description="cap; none = unlimited")
    max_concurrent_downloads: Annotated[int, Field(ge=1, le=10_000)] | None = None


class P2PSettings(Strict):
    ports: PortSet = PortSet.of(default_ports.PortSet())
    alternative_ports: PortSet | None = Field(
        default=None, description="used by clients when the main ports are blocked or taken"
    )
    bandwidth: Annotated[list[BandwidthPolicy], Field(max_length=100_000)] = []  # noqa: RUF012 (a pydantic model: defaults are copied)
