"""Shapes of the console <-> P2P server link: registration, enrollment bundles, the change
feed, client and statistics reports, signed documents and install specifications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SkipValidation, StringConstraints

from shoal.console.schemas.admins import LicenceOut
from shoal.console.schemas.common import (
    ByteCount,
    Cidr,
    ContentIdText,
    IpText,
    Name,
    PublicKeyText,
    ShortText,
    Strict,
)
from shoal.console.schemas.estate import PortSet
from shoal.core.changes import ChangeKind
from shoal.wire.control_fields import InstallStatus


class ServerRegistration(Strict):
    server_id: ShortText
    name: Name
    address: IpText
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


#: What a device reports of an install: the wire's ``InstallStatus`` by name, as the
#: P2P server relays it (``InstallReportedState`` spells the same for the schema).
INSTALL_REPORTED_STATES = tuple(status.name.lower() for status in InstallStatus)
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
    address: IpText
    subnet: Cidr
    version: Annotated[str, StringConstraints(max_length=40, pattern=r"^\d+\.\d+\.\d+\S*$")]
    content: Annotated[list[ClientContent], Field(max_length=100_000)] = []  # noqa: RUF012 (a pydantic model: defaults are copied)
    public_key: PublicKeyText | None = None
    installs: Annotated[list[ClientInstall], Field(max_length=256)] = []  # noqa: RUF012 (a pydantic model: defaults are copied)


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
    previous_key_id: str | None = Field(
        default=None, description="its key ID, the fingerprint shown before (rotate only)"
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
