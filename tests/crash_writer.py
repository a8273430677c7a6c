"""A download that writes chunks into a store until it is killed (see test_store_crash.py).

``fork_writer`` forks the test process (which has imported the store already, so a
writer is at work within milliseconds instead of after a Python start-up) and returns
the child's pid and the read end of a pipe on which it writes ``ACK <chunk_index>``
after each ``write_chunk`` returns, ``DONE`` when the package is whole, or
``ERROR <what>`` if something it did went wrong.
"""

from __future__ import annotations

import os
import random
import traceback
from collections.abc import Callable
from pathlib import Path

from shoal.core.errors import ChunkHashMismatch
from shoal.core.manifest import decode_manifest_file
from shoal.store.content_store import ContentStore


def write_until_killed(
    store_dir: Path, package: bytes, manifest_file: bytes, seed: int, say: Callable[[str], object]
) -> None:
    """Add the package to the store and write its missing chunks in a random order, each
    one preceded, one time in five, by a corrupt copy that must be refused."""
    rng = random.Random(seed)
    manifest = decode_manifest_file(manifest_file).manifest
    store = ContentStore(store_dir)
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
                say("ERROR a corrupt chunk was accepted\n")
                return
        store.write_chunk(manifest.content_id, chunk_index, data)
        say(f"ACK {chunk_index}\n")
    say("DONE\n")


def fork_writer(
    store_dir: Path, package: bytes, manifest_file: bytes, seed: int
) -> tuple[int, int]:
    """Start ``write_until_killed`` in a forked child: (its pid, the read end of its pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test process
        status = 1
        try:
            os.close(read_end)
            write_until_killed(
                store_dir,
                package,
                manifest_file,
                seed,
                lambda line: os.write(write_end, line.encode()),
            )
            status = 0
        except BaseException:  # reported to the parent, which fails the test
            os.write(write_end, f"ERROR {traceback.format_exc()!r}\n".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end
