"""The JSON shapes of the console API (pydantic models, published in the OpenAPI document).

Every input type is constrained (lengths, ranges, patterns) so that bad input is refused
with a 422 that names the field, before it reaches the database.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StringConstraints

from shoal import ports as default_ports
from shoal.core.changes import ChangeKind

Item = TypeVar("Item")
MAX_ID = 2**31 - 1
MAX_BYTES = 2**62

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
]
ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
NewPassword = Annotated[
    str, StringConstraints(min_length=12, max_length=1000, pattern=r"^[^\x00]+$")
]
ContentIdText = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PublicKeyText = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
ByteCount = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Port = Annotated[int, Field(ge=1, le=65535)]
Kbps = Annotated[int, Field(ge=1, le=100_000_000)]
Address = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[0-9A-Fa-f.:]+$")
]
Cidr = Annotated[
    str, StringConstraints(min_length=4, max_length=64, pattern=r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")
]


class Page(BaseModel, Generic[Item]):
    """One page of a list: ``limit`` items from ``offset``, of ``total`` that match."""

    items: list[Item]
    total: int
    limit: int
    offset: int


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """Every error answer: ``detail`` says what is wrong in one sentence."""

    detail: str


class LoginRequest(Strict):
    username: ShortText
    password: Password


class AdminOut(BaseModel):
    username: str
    authenticated_by: str


class PasswordChange(Strict):
    current_password: Password
    new_password: NewPassword


class NewAdmin(Strict):
    username: ShortText
    password: NewPassword


class AdminListed(BaseModel):
    id: int
    username: str
    created_at: datetime


class TokenRequest(Strict):
    name: ShortText


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once: send it as 'Authorization: Bearer TOKEN'.")


class LicenceOut(BaseModel):
    state: str
    active: bool
    customer: str | None
    seats: int
    seats_used: int
    seats_over: int
    overage: bool
    expires: str | None
    days_left: int | None
    message: str


class LicenceSave(Strict):
    key: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class VersionOut(BaseModel):
    id: int
    application_id: int
    application: str
    version: str
    confidential: bool
    content_id: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    created_at: datetime
    encrypted: bool = False
    """Packed encrypted (confidential): size, sha256 and chunks describe the ciphertext."""
    plaintext_size: int | None = None
    plaintext_sha256: str | None = None
    install: dict[str, Any] | None = Field(
        default=None, description="the install specification, or null: none"
    )


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
    bandwidth: Annotated[list[BandwidthPolicy], Field(max_length=100_000)] = []


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
    """The console page where it is handled (``#servers``, ``#licence``, ...)."""


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


class ServerRegistration(Strict):
    server_id: ShortText
    name: Name
    address: Address
    public_key: PublicKeyText | None = Field(
        default=None, description="the server's X25519 public key (hex): the console certifies it"
    )


class RegistrationOut(BaseModel):
    server_id: str
    console_version: str
    console_key: str = Field(description="raw Ed25519 public key (hex) that signs manifests")
    activated: bool
    licence: LicenceOut
    message: str
    certificate: str | None = Field(
        default=None, description="the server's certificate (hex), signed by the console key"
    )


class EnrollmentBundle(BaseModel):
    """What a device needs to join a P2P server (``shoal client enroll BUNDLE``)."""

    format: str = "shoal-enrollment-1"
    console_key: str = Field(description="raw Ed25519 public key (hex): pinned by the device")
    console_cert_sha256: str | None = Field(
        default=None,
        description="SHA-256 fingerprint of the console's TLS certificate (none behind a "
        "TLS-terminating proxy), shown by `shoal client enroll`",
    )
    enrollment_token: str = Field(description="secret: keep it out of argv and logs")
    server: str = Field(description="the P2P server's IP address")
    server_port: int = Field(description="the P2P server's control port")
    ports: PortSet | None = Field(
        default=None, description="the P2P ports the console set; the device starts on them"
    )


class ChangeOut(BaseModel):
    seq: int
    kind: ChangeKind
    subject: str | None


class ChangeBatch(BaseModel):
    changes: list[ChangeOut]
    last_seq: int
    more: bool


class ClientContent(Strict):
    content_id: ContentIdText
    bytes_done: ByteCount
    complete: bool


INSTALL_REPORTED_STATES = (
    "installing",
    "installed",
    "failed",
    "reboot_required",
    "uninstalling",
    "uninstalled",
    "uninstall_failed",
)
InstallReportedState = Literal[
    "installing",
    "installed",
    "failed",
    "reboot_required",
    "uninstalling",
    "uninstalled",
    "uninstall_failed",
]
InstallState = Literal[
    "pending",
    "downloading",
    "downloaded",
    "installing",
    "installed",
    "failed",
    "reboot_required",
    "uninstalling",
    "uninstalled",
    "uninstall_failed",
]


class ClientInstall(Strict):
    """A device's newest install report for one content, as its P2P server relays it."""

    content_id: ContentIdText
    state: InstallReportedState
    attempts: Annotated[int, Field(ge=0, le=16)]
    exit_code: Annotated[int, Field(ge=-(2**31), lt=2**32)] | None = None
    output_tail: Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")] = ""


class ClientRecord(Strict):
    device_id: ShortText
    hostname: Name
    address: Address
    subnet: Cidr
    version: Annotated[str, StringConstraints(max_length=40, pattern=r"^\d+\.\d+\.\d+\S*$")]
    content: Annotated[list[ClientContent], Field(max_length=100_000)] = []
    public_key: PublicKeyText | None = None
    installs: Annotated[list[ClientInstall], Field(max_length=256)] = []


MAX_REPORT_RECORDS = 100_000


class ClientReport(Strict):
    """A P2P server's client registry.

    Only the envelope is validated as a whole; each record is validated on its own by
    the route (``SkipValidation``), so one bad record is refused and named while the
    others are applied. The published schema still shows every record's constraints.
    """

    clients: Annotated[list[SkipValidation[ClientRecord]], Field(max_length=MAX_REPORT_RECORDS)]


class ClientPlaced(BaseModel):
    device_id: str
    office: str | None
    licensed: bool
    message: str | None


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path inside the record, e.g. content.0.bytes_done")
    message: str


class RecordRefused(BaseModel):
    """A record of a report that was not applied, and why (the others were)."""

    index: int = Field(description="position of the record in the list sent, from 0")
    id: str | None = Field(
        description="the record's device_id (clients) or content_id (stats), when readable"
    )
    problems: list[FieldProblem]


class ClientReportOut(BaseModel):
    clients: list[ClientPlaced] = Field(description="the records applied, in order")
    refused: list[RecordRefused] = Field(
        default=[], description="the records refused, each with its field and reason"
    )
    licence: LicenceOut


class StatEntry(Strict):
    content_id: ContentIdText
    office: Name
    bytes_from_peers: ByteCount
    bytes_from_server: ByteCount


class StatReport(Strict):
    """Running download totals; each entry is validated on its own, like ``ClientReport``."""

    entries: Annotated[list[SkipValidation[StatEntry]], Field(max_length=MAX_REPORT_RECORDS)]


class StatReportOut(BaseModel):
    applied: int = Field(description="how many entries were applied")
    refused: list[RecordRefused] = Field(
        default=[], description="the entries refused, each with its field and reason"
    )


class RotationStatementOut(BaseModel):
    statement: str = Field(description="canonical JSON: format, number, old_key, new_key, created")
    signature: str = Field(description="Ed25519 signature of statement by old_key, hex")


class SignedAssignments(BaseModel):
    document: str = Field(
        description="canonical JSON of the assignments, with format, sequence and expires"
    )
    signature: str = Field(description="Ed25519 signature of document, hex")
    key_id: str
    rotations: list[RotationStatementOut] = Field(
        default_factory=list,
        description="the console's key rotation statements, oldest first",
    )


class ConsoleKeyOut(BaseModel):
    key: str = Field(description="the console's current Ed25519 public key, hex (raw 32 B)")
    key_id: str
    rotations: int = Field(description="how many times the key was rotated")
    previous_key: str | None = Field(
        default=None, description="the key this rotation retired (rotate only)"
    )
    document_sequence: int | None = Field(
        default=None, description="sequence number of the current assignment document"
    )
    document_expires: datetime | None = None


class InstallSpecIn(Strict):
    """An install specification (``shoal.install_spec``): validated field by field by
    the same code that the clients run, so what is stored is what they accept."""

    command: str = Field(description="run with {file} = the staged file, e.g. dpkg -i {file}")
    extension: str = Field(default="", description="the staged file's extension, e.g. .deb")
    success_codes: list[int] = Field(default=[0], description="exit codes meaning installed")
    reboot_codes: list[int] = Field(
        default=[3010], description="exit codes meaning installed, reboot required"
    )
    timeout_seconds: int = Field(default=3600, description="then the process tree is killed")
    detect: str | None = Field(default=None, description="exit code 0 = already installed")
    uninstall: str | None = Field(default=None, description="run when the assignment is removed")


class InstallSpecOut(BaseModel):
    version_id: int
    application: str
    version: str
    content_id: str
    install: dict[str, Any] | None = Field(description="the specification, or null: none")


class InstallResultOut(BaseModel):
    """Where one assigned version stands on one device."""

    assignment_id: int | None = Field(
        description="null: an uninstall after the assignment was removed"
    )
    device_id: str
    hostname: str
    office: str | None
    application: str
    version: str
    version_id: int | None
    content_id: str
    state: InstallState = Field(
        description="pending, downloading, downloaded (held, nothing to install), "
        "installing, installed, failed, reboot_required, uninstalling, uninstalled, "
        "uninstall_failed"
    )
    attempts: int
    exit_code: int | None
    output_tail: str
    updated_at: datetime | None
