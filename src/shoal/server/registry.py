"""What the P2P server keeps about itself and its clients: its settings and policies,
the console's licence as last described, and one record per registered client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shoal import ports
from shoal.core.address import Address
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.stripes import DEFAULT_STRIPES
from shoal.server.limits import AbuseLimits
from shoal.server.stripe_plan import OfficeLinks
from shoal.wire.control import ContentProgress, InstallReport


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the server tells its clients, and its policies."""

    enrollment_token: bytes
    """What enrolled devices hold (``client_key_for``): mixed into every control key."""
    identity: DeviceKey
    """The server's own X25519 key, certified by the console."""
    checkin_seconds: int = 60
    discovery_port: int = ports.DISCOVERY
    data_port: int = ports.FOREGROUND_DATA
    background_port: int = ports.BACKGROUND_DATA
    lease_seconds: float = 10.0
    max_stripes: int = DEFAULT_STRIPES
    """At most this many clients of an office fetch a content over the WAN at once, each
    its own stripe of the chunks (``shoal.server.rendezvous``); 1: one rendezvous point."""
    office_links: Mapping[str, OfficeLinks] = field(default_factory=dict)
    """Per office name: its WAN and client uplink rates, if known; they decide how many
    stripes its WAN copy is split in (``shoal.server.stripe_plan``)."""
    direct_outside_offices: bool = True
    alternative_ports: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Discovery, control, data, background ports to use when the main ones are taken."""
    bandwidth: Mapping[str, BandwidthLimit] = field(default_factory=dict)
    """Per office name: the console's bandwidth policy, passed on to its clients."""
    limits: AbuseLimits = field(default_factory=AbuseLimits)


@dataclass(frozen=True, slots=True)
class BandwidthLimit:
    """An office's caps (0 = none): foreground and background kbit/s, downloads at once."""

    foreground_kbps: int = 0
    background_kbps: int = 0
    max_downloads: int = 0


@dataclass(slots=True)
class ClientRecord:
    """One client as the server knows it (reported to the console)."""

    device_id: bytes
    hostname: str
    version: str
    ip: str
    subnet: str
    first_seen: float
    last_seen: float
    content: dict[ContentId, ContentProgress] = field(default_factory=dict)
    control_address: Address | None = None
    """Where its control datagrams come from (nudges go there); not kept across restarts:
    a restarted server nudges the clients that have spoken to it since."""
    public_key: bytes = b""
    """The device's X25519 public key (its device ID is derived from it)."""
    last_counter: int = 0
    """The highest counter accepted from it (kept with the registry: replays refused)."""
    control_key: bytes | None = None
    installs: dict[ContentId, InstallReport] = field(default_factory=dict)
    """The newest install report per content (relayed to the console)."""


@dataclass(slots=True)
class LicenceView:
    """The licence as the console last described it."""

    active: bool = False
    expired: bool = False
    seats_over: int = 0
    message: str = "the P2P server is not activated: save the licence key in the console"
