"""Crash consistency: SIGKILL a writer process at random points, then check the store.

After every kill: the store opens (no corrupt sidecar), no chunk is marked verified
whose bytes on disk do not match the manifest, and no acknowledged chunk is lost.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.store.content_store import ContentStore

WRITER = Path(__file__).with_name("crash_writer.py")
ITERATIONS = 60
KILLS_PER_PACKAGE = 3
CHUNK = 65536


def test_sigkill_at_random_points_never_corrupts_or_loses_chunks(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    signer = SigningKey.generate()
    store_dir = tmp_path / "store"
    acknowledged: dict[bytes, set[int]] = {}
    manifests = {}
    package_path = tmp_path / "package"
    manifest_path = tmp_path / "manifest"
    for iteration in range(ITERATIONS):
        if iteration % KILLS_PER_PACKAGE == 0:
            package = rng.randbytes(384 * CHUNK - rng.randrange(CHUNK))
            manifest = pack_bytes(package, CHUNK)
            package_path.write_bytes(package)
            manifest_path.write_bytes(signer.sign(manifest).encode())
            manifests[manifest.content_id.digest] = manifest
            acknowledged[manifest.content_id.digest] = set()
        writer = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                str(store_dir),
                str(package_path),
                str(manifest_path),
                str(iteration),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.03, 0.5))
        writer.send_signal(signal.SIGKILL)
        output, _ = writer.communicate(timeout=30)
        acks = {int(line.split()[1]) for line in output.splitlines() if line.startswith("ACK")}
        acknowledged[manifest.content_id.digest] |= acks

        store = ContentStore(store_dir)  # strict: a corrupt sidecar fails here
        try:
            for info in store.entries():
                expected = manifests[info.content_id.digest]
                verified = store.verified(info.content_id)
                data = store.data_path(info.content_id).read_bytes()
                for chunk_index in verified:
                    start = chunk_index * CHUNK
                    piece = data[start : start + expected.chunk_length(chunk_index)]
                    assert hashlib.sha256(piece).digest() == expected.chunk_hashes[chunk_index], (
                        f"iteration {iteration}: chunk {chunk_index} marked verified, bytes wrong"
                    )
                lost = acknowledged[info.content_id.digest] - set(verified)
                assert not lost, f"iteration {iteration}: acknowledged chunks lost: {lost}"
            held = {info.content_id.digest for info in store.entries()}
            for digest, acks in acknowledged.items():
                assert digest in held or not acks, f"iteration {iteration}: a package vanished"
        finally:
            store.close()
    assert sum(len(acks) for acks in acknowledged.values()) > 0, "the writer never got going"
