"""A download that writes chunks into a store until it is killed (see test_store_crash.py).

Usage: python crash_writer.py STORE_DIR PACKAGE MANIFEST SEED
Prints ``ACK <chunk_index>`` after each ``write_chunk`` returns.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from shoal.core.errors import ChunkHashMismatch
from shoal.core.manifest import decode_manifest_file
from shoal.store.content_store import ContentStore


def main() -> None:
    store_dir, package_path, manifest_path, seed_text = sys.argv[1:5]
    rng = random.Random(int(seed_text))
    manifest_file = Path(manifest_path).read_bytes()
    manifest = decode_manifest_file(manifest_file).manifest
    package = Path(package_path).read_bytes()
    store = ContentStore(Path(store_dir))
    store.add(manifest_file, pinned=True)
    missing = list(store.verified(manifest.content_id).missing())
    rng.shuffle(missing)
    for chunk_index in missing:
        start = chunk_index * manifest.chunk_size
        data = package[start : start + manifest.chunk_length(chunk_index)]
        if rng.random() < 0.2:
            try:
                store.write_chunk(manifest.content_id, chunk_index, bytes(reversed(data)))
            except ChunkHashMismatch:
                pass
            else:
                raise SystemExit("a corrupt chunk was accepted")
        store.write_chunk(manifest.content_id, chunk_index, data)
        print(f"ACK {chunk_index}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
