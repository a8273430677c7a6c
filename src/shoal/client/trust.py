"""What a client trusts, kept on its disk: the pinned console key, the newest document seen.

The console's public key is pinned at enrollment (from the enrollment bundle) and only a
statement signed by a pinned key can replace it (key rotation); nothing a P2P server or
a peer sends on the LAN changes it. ``highest_sequence`` is the sequence number of the
newest signed assignment document accepted, so an older one (a replay) is refused even
after a restart.

The state is one small JSON file, replaced atomically (write, fsync, rename, fsync the
directory): a crash leaves the old state or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from shoal.core.errors import ShoalError
from shoal.core.signing import VerifyKey

TRUST_FILE = "trust.json"
_FORMAT = "shoal-trust-1"


class TrustStateError(ShoalError):
    """The trust file is missing, unreadable or malformed: the device must be enrolled."""


@dataclass(frozen=True, slots=True)
class TrustState:
    """The pinned console keys (newest last) and the newest accepted document's sequence."""

    console_keys: tuple[bytes, ...]
    highest_sequence: int = 0

    @property
    def console_key(self) -> VerifyKey:
        """The console key that signs what this client accepts now."""
        return VerifyKey.from_raw(self.console_keys[-1])

    def with_sequence(self, sequence: int) -> TrustState:
        return replace(self, highest_sequence=max(self.highest_sequence, sequence))

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "console_keys": [key.hex() for key in self.console_keys],
                "highest_sequence": self.highest_sequence,
            },
            sort_keys=True,
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> TrustState:
        try:
            document = json.loads(text)
            if document.get("format") != _FORMAT:
                raise ValueError(f"format {document.get('format')!r} is not {_FORMAT}")
            keys = tuple(bytes.fromhex(key) for key in document["console_keys"])
            sequence = int(document["highest_sequence"])
            if not keys or any(len(key) != 32 for key in keys) or sequence < 0:
                raise ValueError("no console key, a key not of 32 bytes, or a negative sequence")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise TrustStateError(f"trust state is malformed ({error})") from None
        return cls(keys, sequence)

    @classmethod
    def load(cls, path: Path) -> TrustState:
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise TrustStateError(
                f"{path}: this device is not enrolled (run `shoal client enroll BUNDLE`)"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise TrustStateError(f"{path}: cannot read the trust state ({error})") from None

    def save(self, path: Path) -> None:
        """Replace the file atomically."""
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as trust_file:
            trust_file.write(self.to_json())
            trust_file.flush()
            os.fsync(trust_file.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
