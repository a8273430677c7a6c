"""A signed package for the content store's tests: its bytes, manifest and manifest file."""

from __future__ import annotations

import random

from shoal.core.manifest import Manifest
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey

CHUNK = 65536
SIGNER = SigningKey.generate()


def make_package(size: int, seed: int = 1) -> tuple[bytes, Manifest, bytes]:
    data = random.Random(seed).randbytes(size)
    manifest = pack_bytes(data, CHUNK)
    return data, manifest, SIGNER.sign(manifest).encode()
