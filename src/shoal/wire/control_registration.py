"""Control messages of enrollment and registration (``shoal.wire.control``): HELLO,
CERTIFICATE, REGISTER and REGISTERED, with their codecs."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.wire.buffer import Buffer
from shoal.wire.control_fields import (
    ADDRESS_TOKEN_SIZE,
    HEADER_SIZE,
    HELLO_SIZE,
    MAX_CERTIFICATE,
    PUBLIC_KEY_SIZE,
    TAG_SIZE,
    LicenceState,
    OfficeType,
    pull_str,
    push_str,
    push_token,
)
from shoal.wire.errors import MalformedDatagram
from shoal.wire.messages import pull_enum


@dataclass(frozen=True, slots=True)
class Hello:
    """A client asks for the server's certificate (padded: see ``HELLO_SIZE``)."""

    padding: int = HELLO_SIZE - HEADER_SIZE - TAG_SIZE


@dataclass(frozen=True, slots=True)
class Certificate:
    """The server's certificate, signed by the console (``shoal.core.server_cert``), and
    a token that proves, when a REGISTER echoes it, that the asker receives there."""

    certificate: bytes
    address_token: bytes = bytes(ADDRESS_TOKEN_SIZE)


@dataclass(frozen=True, slots=True)
class Register:
    public_key: bytes
    version: str
    hostname: str
    subnet_prefix: int
    address_token: bytes = bytes(ADDRESS_TOKEN_SIZE)
    """Echoed from the server's CERTIFICATE: the device receives at its source address."""


@dataclass(frozen=True, slots=True)
class Registered:
    version: str
    office: str
    office_type: OfficeType
    checkin_seconds: int
    discovery_port: int
    data_port: int
    background_port: int
    licence_state: LicenceState
    seats_over: int
    alternative_ports: tuple[int, int, int, int] = (0, 0, 0, 0)
    foreground_kbps: int = 0
    background_kbps: int = 0
    max_downloads: int = 0


def pull_hello(buf: Buffer) -> Hello:
    padding = buf.remaining
    buf.pull_bytes(padding)
    return Hello(padding)


def push_hello(buf: Buffer, body: Hello) -> None:
    buf.push_bytes(bytes(body.padding))


def pull_certificate(buf: Buffer) -> Certificate:
    length = buf.pull_uint16()
    if length > MAX_CERTIFICATE:
        raise MalformedDatagram(f"certificate of {length} bytes is too long")
    return Certificate(buf.pull_bytes(length), buf.pull_bytes(ADDRESS_TOKEN_SIZE))


def push_certificate(buf: Buffer, body: Certificate) -> None:
    if len(body.certificate) > MAX_CERTIFICATE:
        raise ValueError(f"a certificate has at most {MAX_CERTIFICATE} bytes")
    buf.push_uint16(len(body.certificate))
    buf.push_bytes(body.certificate)
    push_token(buf, body.address_token)


def pull_register(buf: Buffer) -> Register:
    public_key = buf.pull_bytes(PUBLIC_KEY_SIZE)
    version, hostname = pull_str(buf), pull_str(buf)
    prefix = buf.pull_uint8()
    if prefix > 32:
        raise MalformedDatagram(f"subnet prefix /{prefix} is not IPv4")
    return Register(public_key, version, hostname, prefix, buf.pull_bytes(ADDRESS_TOKEN_SIZE))


def push_register(buf: Buffer, body: Register) -> None:
    if len(body.public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a device public key has {PUBLIC_KEY_SIZE} bytes")
    buf.push_bytes(body.public_key)
    push_str(buf, body.version)
    push_str(buf, body.hostname)
    buf.push_uint8(body.subnet_prefix)
    push_token(buf, body.address_token)


def pull_registered(buf: Buffer) -> Registered:
    version, office = pull_str(buf), pull_str(buf)
    office_type = pull_enum(buf, OfficeType)
    checkin, discovery, data, background = (buf.pull_uint16() for _ in range(4))
    licence_state, seats_over = pull_enum(buf, LicenceState), buf.pull_uint32()
    alt = (buf.pull_uint16(), buf.pull_uint16(), buf.pull_uint16(), buf.pull_uint16())
    return Registered(
        version,
        office,
        office_type,
        checkin,
        discovery,
        data,
        background,
        licence_state,
        seats_over,
        alt,
        buf.pull_uint32(),
        buf.pull_uint32(),
        buf.pull_uint16(),
    )


def push_registered(buf: Buffer, body: Registered) -> None:
    push_str(buf, body.version)
    push_str(buf, body.office)
    buf.push_uint8(body.office_type)
    for port in (body.checkin_seconds, body.discovery_port, body.data_port, body.background_port):
        buf.push_uint16(port)
    buf.push_uint8(body.licence_state)
    buf.push_uint32(body.seats_over)
    for port in body.alternative_ports:
        buf.push_uint16(port)
    buf.push_uint32(body.foreground_kbps)
    buf.push_uint32(body.background_kbps)
    buf.push_uint16(body.max_downloads)
