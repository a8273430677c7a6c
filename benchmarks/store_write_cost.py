"""What storing one verified chunk costs a client's writer thread (issue 9).

    .venv/bin/python benchmarks/store_write_cost.py [--size-mb 8] [--chunk-kib 64 128 1024]
        [--dir DIR]

For each chunk size, with and without ``durable`` (the client's default: ``fdatasync``
of the data, the sidecar ``fsync``ed and its directory), writes a package into a fresh
``ContentStore`` one chunk per batch, as the client's writer thread does when chunks
arrive one at a time (``ContentStore.write_verified_chunks``: no hashing, the engine
did it), and prints the thread's CPU and the wall time per chunk. ``--dir`` puts the
store on the disk to measure (default: the system's temporary directory). Figures, not
assertions: docs/network.md, "A slow disk".
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.store.content_store import ContentStore


def measure(
    data: bytes, chunk_size: int, durable: bool, directory: Path | None
) -> tuple[float, float, int]:
    """CPU and wall seconds per chunk, and the chunk count."""
    manifest = pack_bytes(data, chunk_size)
    manifest_file = SigningKey.generate().sign(manifest).encode()
    with tempfile.TemporaryDirectory(dir=directory) as root:
        store = ContentStore(Path(root), durable=durable)
        store.add(manifest_file, pinned=True)
        view = memoryview(data)
        cpu, wall = time.thread_time(), time.perf_counter()
        for index in range(manifest.chunk_count):
            chunk = view[index * chunk_size : (index + 1) * chunk_size]
            store.write_verified_chunks(manifest.content_id, [(index, chunk)])
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        store.close()
    return cpu / manifest.chunk_count, wall / manifest.chunk_count, manifest.chunk_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=8)
    parser.add_argument("--chunk-kib", type=int, nargs="+", default=[64, 128, 1024])
    parser.add_argument("--dir", type=Path, help="where to put the store (default: temp)")
    args = parser.parse_args()
    data = random.Random(1).randbytes(args.size_mb * 1024 * 1024)
    print("chunk KiB  durable  chunks  CPU ms/chunk  wall ms/chunk")
    for chunk_kib in args.chunk_kib:
        for durable in (True, False):
            cpu, wall, count = measure(data, chunk_kib * 1024, durable, args.dir)
            print(f"{chunk_kib:9}  {durable!s:7}  {count:6}  {cpu * 1e3:12.3f}  {wall * 1e3:13.3f}")


if __name__ == "__main__":
    main()
