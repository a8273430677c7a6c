"""Console key rotation statements: the console's new Ed25519 key, signed by the old one.

A client pins the console's key at enrollment. When the console rotates its key it
signs a *rotation statement* with the key being retired::

    {"format": "shoal-key-rotation-1", "number": 1, "old_key": HEX, "new_key": HEX,
     "created": "2026-06-01T12:00:00+00:00"}

(canonical JSON; ``number`` counts rotations from 1). Every statement since the first
key travels with each signed assignment document, oldest first, so a client pinned to
any earlier key can walk the chain to the current one. A client follows a statement
only when it is signed by the key it trusts *now* (the last key of its chain); anything
else is ignored and counted. The ``format`` field keeps a statement from being mistaken
for any other document the console signs (and the other way round).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature

from shoal.core.errors import KeyFileError, ShoalError
from shoal.core.signing import SigningKey, VerifyKey

ROTATION_FORMAT = "shoal-key-rotation-1"


class RotationInvalid(ShoalError):
    """A rotation statement is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class RotationStatement:
    """One verified-syntax statement: ``old_key`` hands over to ``new_key``."""

    number: int
    old_key: bytes
    new_key: bytes
    created: str
    text: str
    signature: bytes

    def signed_by(self, key: bytes) -> bool:
        """Does ``key`` (raw Ed25519) sign this statement, and is it the statement's old key?"""
        if key != self.old_key:
            return False
        try:
            VerifyKey.from_raw(key).public_key.verify(self.signature, self.text.encode())
        except (InvalidSignature, KeyFileError):
            return False
        return True


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def sign_rotation(
    old: SigningKey, new_key: VerifyKey, number: int, created: datetime
) -> dict[str, str]:
    """The statement (canonical JSON text) and the old key's signature over it (hex)."""
    text = _canonical(
        {
            "format": ROTATION_FORMAT,
            "number": number,
            "old_key": old.verify_key.raw.hex(),
            "new_key": new_key.raw.hex(),
            "created": created.isoformat(),
        }
    )
    return {"statement": text, "signature": old.private_key.sign(text.encode()).hex()}


def read_rotation(entry: Any) -> RotationStatement:
    """Parse one ``{"statement", "signature"}`` entry (the signature is not checked here)."""
    try:
        text = entry["statement"]
        signature = bytes.fromhex(entry["signature"])
        fields = json.loads(text)
        if fields["format"] != ROTATION_FORMAT:
            raise ValueError(f"format {fields['format']!r} is not {ROTATION_FORMAT}")
        statement = RotationStatement(
            number=int(fields["number"]),
            old_key=bytes.fromhex(fields["old_key"]),
            new_key=bytes.fromhex(fields["new_key"]),
            created=str(fields["created"]),
            text=str(text),
            signature=signature,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise RotationInvalid(f"key rotation statement is malformed ({error})") from None
    if len(statement.old_key) != 32 or len(statement.new_key) != 32 or len(signature) != 64:
        raise RotationInvalid("key rotation statement: a key is not 32 bytes or bad signature")
    return statement
