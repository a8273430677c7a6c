"""``make demo``: show what shoal does today, on this machine.

The demo grows with the project. Today it walks through the content model and the
device cache: an administrator's package is packed and signed; a device verifies the
manifest, fills its cache chunk by chunk from peers in any order, refuses a corrupt
chunk from a bad peer, survives a restart mid-download, and ends with the exact file.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

from shoal import __version__
from shoal.core.errors import ChunkHashMismatch, ManifestTampered
from shoal.core.packing import pack_stream
from shoal.core.signing import SigningKey, verify_manifest_file
from shoal.store.content_store import ContentStore

DEMO_DIR = Path("demo-data")
PACKAGE_SIZE = 24 * 1024 * 1024 + 12345
CHUNK_SIZE = 1 << 20


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> None:
    print(f"shoal {__version__} demo (stage: content model and device cache)")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    package = DEMO_DIR / "SampleApp-1.0.msi"
    package.write_bytes(random.Random(1).randbytes(PACKAGE_SIZE))

    step("console: pack and sign the package (the network never sees its name)")
    console_key = SigningKey.generate()
    with open(package, "rb") as stream:
        manifest = pack_stream(stream, CHUNK_SIZE)
    manifest_file = console_key.sign(manifest).encode()
    for field, value in manifest.summary().items():
        print(f"   {field:<11} {value}")
    key_id = console_key.verify_key.key_id.hex()
    print(f"   manifest    {len(manifest_file)} bytes, signed by key {key_id}")

    step("device: refuse a manifest changed in transit, accept the signed one")
    tampered = bytearray(manifest_file)
    tampered[60] ^= 1
    try:
        verify_manifest_file(bytes(tampered), [console_key.verify_key])
    except ManifestTampered as error:
        print(f"   refused: {error}")
    verify_manifest_file(manifest_file, [console_key.verify_key])
    print("   accepted: signature matches the console's key")

    step("device: download chunks from peers in any order; a bad peer is caught")
    cache_dir = DEMO_DIR / "device-cache"
    store = ContentStore(cache_dir)
    store.add(manifest_file, pinned=True)
    order = list(range(manifest.chunk_count))
    random.Random(2).shuffle(order)
    data = package.read_bytes()

    def chunk(index: int) -> bytes:
        return data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]

    half = len(order) // 2
    for position, index in enumerate(order[:half]):
        if position == 3:
            try:
                store.write_chunk(manifest.content_id, index, b"\x00" * len(chunk(index)))
            except ChunkHashMismatch as error:
                print(f"   peer 10.1.0.66 sent a bad chunk: {error}; it would be banned")
        store.write_chunk(manifest.content_id, index, chunk(index))
    print(f"   {len(store.verified(manifest.content_id))}/{manifest.chunk_count} chunks verified")

    step("device: the agent restarts mid-download; verified chunks are kept")
    store.close()
    store = ContentStore(cache_dir)
    print(f"   after restart: {store.info(manifest.content_id).verified_chunks} chunks verified")
    for index in store.verified(manifest.content_id).missing():
        store.write_chunk(manifest.content_id, index, chunk(index))
    info = store.info(manifest.content_id)
    digest = hashlib.sha256(store.data_path(manifest.content_id).read_bytes()).hexdigest()
    print(f"   complete={info.complete}  sha256={digest}")
    print(f"   matches the original: {digest == hashlib.sha256(data).hexdigest()}")
    store.close()

    step("what is next")
    print("   wire protocol and UDP transfer, the console, the P2P server and client agents;")
    print(f"   the demo's files are in {DEMO_DIR.resolve()}{os.sep}")


if __name__ == "__main__":
    main()
