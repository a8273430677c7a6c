"""Shapes of the P2P servers' swarm reports (peers banned per office, rendezvous holders)
and of what the dashboard and the office view show of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, SkipValidation

from shoal.console.schemas.common import ContentIdText, IpText, Name, ShortText, Strict
from shoal.console.schemas.estate import OfficeOut
from shoal.console.schemas.server_link import RecordRefused

UnixSeconds = Annotated[float, Field(ge=0, le=253_402_300_799)]  # up to 9999-12-31 UTC
MAX_SWARM_RECORDS = 100_000


class SwarmBan(Strict):
    """A peer banned in an office now: devices reported bad chunks from it."""

    office: Name
    peer_ip: IpText
    device_id: ShortText | None = Field(
        default=None, description="the device at that address, when the server knows it"
    )
    content_id: ContentIdText = Field(description="the content whose chunks were bad")
    reporters: Annotated[int, Field(ge=1, le=1_000_000)]
    since: UnixSeconds
    until: UnixSeconds


class SwarmHolders(Strict):
    """The live rendezvous stripe holders of a content in an office (who brings it over
    the WAN), in stripe order."""

    office: Name
    content_id: ContentIdText
    devices: Annotated[list[ShortText], Field(min_length=1, max_length=64)]


class SwarmReport(Strict):
    """A P2P server's bans and holders now: replaces what it reported before. Each
    record is validated on its own, like ``ClientReport``."""

    banned: Annotated[list[SkipValidation[SwarmBan]], Field(max_length=MAX_SWARM_RECORDS)] = []  # noqa: RUF012 (a pydantic model: defaults are copied)
    holders: Annotated[list[SkipValidation[SwarmHolders]], Field(max_length=MAX_SWARM_RECORDS)] = []  # noqa: RUF012 (a pydantic model: defaults are copied)


class SwarmReportOut(BaseModel):
    banned: int = Field(description="how many bans were recorded")
    holders: int = Field(description="how many holders were recorded")
    refused: list[RecordRefused] = Field(
        default=[], description="the records refused, each with its field and reason"
    )


class BannedPeerOut(BaseModel):
    """A banned peer as the dashboard shows it: by device name, with the cause."""

    office: str
    peer_ip: str
    device_id: str | None
    hostname: str | None = Field(description="the device's host name (null: not known)")
    application: str | None = Field(description="the application whose chunks were bad")
    version: str | None
    content_id: str
    reporters: int
    since: datetime
    until: datetime
    server: str = Field(description="the P2P server that banned it (its name)")


class HolderOut(BaseModel):
    device_id: str
    hostname: str | None


class OfficeDownload(BaseModel):
    """One content in one office: bytes by source against its size, and who brings it
    over the WAN now."""

    application: str | None
    version: str | None
    content_id: str
    size: int | None = Field(description="the package's size (null: deleted since)")
    bytes_from_peers: int
    bytes_from_server: int
    wan_copies: float | None = Field(
        description="bytes over the WAN / the package size: 1.0 is one copy for the office"
    )
    devices_complete: int = Field(description="devices of the office holding all of it")
    holders: list[HolderOut] = Field(
        description="the rendezvous holders now (empty: no download in progress)"
    )


class OfficeDetail(BaseModel):
    office: OfficeOut
    downloads: list[OfficeDownload]
    banned: list[BannedPeerOut]
