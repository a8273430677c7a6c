"""Content IDs: the only name the peer-to-peer network ever knows a package by."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.errors import InvalidContentId

DIGEST_SIZE = 32


@dataclass(frozen=True, slots=True, order=True)
class ContentId:
    """SHA-256 of a canonical manifest body (see ``shoal.core.manifest``)."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise InvalidContentId(
                f"content ID must be {DIGEST_SIZE} bytes, got {len(self.digest)}"
            )

    @classmethod
    def from_hex(cls, text: str) -> ContentId:
        """Parse 64 hex digits; anything else raises ``InvalidContentId``."""
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            raise InvalidContentId(f"content ID is not hexadecimal: {text!r}") from None
        return cls(digest)

    @property
    def hex(self) -> str:
        return self.digest.hex()

    @property
    def short(self) -> str:
        """The first 12 hex digits, for logs and tables."""
        return self.digest.hex()[:12]

    def __str__(self) -> str:
        return self.hex

    # Written out rather than generated: a content ID keys the dicts that every datagram
    # and every poll look up (the generated ones build a tuple per call; bytes keep
    # their hash).
    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not ContentId:
            return NotImplemented
        return self.digest == other.digest
