"""Errors of the wire codecs, named by cause.

Decoding any datagram that is not a well-formed shoal message raises
``MalformedDatagram`` and nothing else; subclasses say what was wrong when the
caller must react differently (an unsupported protocol version gets a reply).
"""

from __future__ import annotations

from shoal.core.errors import ShoalError


class MalformedDatagram(ShoalError):
    """The bytes are not a well-formed shoal datagram (truncated, bad field, too long)."""


class WrongMagic(MalformedDatagram):
    """The datagram does not start with shoal's magic: not ours at all."""


class UnsupportedProtocolVersion(MalformedDatagram):
    """A shoal datagram of a protocol version this build does not speak."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unsupported shoal protocol version {version}")
        self.version = version
