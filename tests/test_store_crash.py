"""Crash consistency: SIGKILL a writer process at random points, then check the store.

After every kill: the store opens (no corrupt sidecar), no chunk is marked verified
whose bytes on disk do not match the manifest, and no acknowledged chunk is lost.

The writer is a fork of the test process (``crash_writer.fork_writer``): it is at work
at once, not after a Python start-up. Each kill comes after a random number of its
acknowledgements (0: while it adds the entry) and a random fraction of a chunk write
more, so the kills land all over the store's code (adding the entry, writing a chunk,
replacing the sidecar) however fast or loaded the machine is.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

from crash_writer import fork_writer
from shoal.core.manifest import Manifest
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.store.content_store import ContentStore

ITERATIONS = 60
KILLS_PER_PACKAGE = 3
CHUNK = 65536
CHUNKS = 24  # 3 kills x 0..12 acknowledgements: some packages are finished, most not
MAX_ACKS_BEFORE_KILL = 12
MAX_EXTRA_S = 0.03  # a chunk write is a pwrite and three fsyncs: ~1-40 ms


def kill_after(pid: int, output_pipe: int, acks: int, extra: float) -> str:
    """SIGKILL the writer ``extra`` seconds after its ``acks``-th acknowledgement (or when
    it is done); return all it wrote."""
    lines = []
    with os.fdopen(output_pipe, "r") as output:
        try:
            while sum(line.startswith("ACK") for line in lines) < acks:
                line = output.readline()
                lines.append(line)
                if line in ("", "DONE\n") or line.startswith("ERROR"):
                    break
            time.sleep(extra)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        lines.append(output.read())
    return "".join(lines)


def check_verified_bytes(store: ContentStore, manifest: Manifest, iteration: int) -> set[int]:
    """Every chunk the store marks verified has the right bytes on disk; returns them."""
    verified = set(store.verified(manifest.content_id))
    with store.data_path(manifest.content_id).open("rb") as data:
        for chunk_index in sorted(verified):
            piece = os.pread(data.fileno(), manifest.chunk_length(chunk_index), chunk_index * CHUNK)
            assert hashlib.sha256(piece).digest() == manifest.chunk_hashes[chunk_index], (
                f"iteration {iteration}: chunk {chunk_index} marked verified, bytes wrong"
            )
    return verified


def test_sigkill_at_random_points_never_corrupts_or_loses_chunks(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    signer = SigningKey.generate()
    store_dir = tmp_path / "store"
    acknowledged: dict[bytes, set[int]] = {}
    manifests: dict[bytes, Manifest] = {}
    last_verified: dict[bytes, set[int]] = {}
    for iteration in range(ITERATIONS):
        if iteration % KILLS_PER_PACKAGE == 0:
            # Every chunk differs (a chunk written at another's offset is caught); the
            # last one is short.
            block = rng.randbytes(CHUNK)
            package = b"".join(i.to_bytes(4, "big") + block[4:] for i in range(CHUNKS))
            package = package[: len(package) - rng.randrange(1, CHUNK)]
            manifest = pack_bytes(package, CHUNK)
            manifest_file = signer.sign(manifest).encode()
            manifests[manifest.content_id.digest] = manifest
            acknowledged[manifest.content_id.digest] = set()
        pid, output_pipe = fork_writer(store_dir, package, manifest_file, iteration)
        output = kill_after(
            pid, output_pipe, rng.randint(0, MAX_ACKS_BEFORE_KILL), rng.uniform(0, MAX_EXTRA_S)
        )
        assert "ERROR" not in output, f"iteration {iteration}: the writer failed: {output}"
        acks = {int(line.split()[1]) for line in output.splitlines() if line.startswith("ACK")}
        acknowledged[manifest.content_id.digest] |= acks

        # The checker's own store need not fsync (durable=False only affects its close).
        store = ContentStore(store_dir, durable=False)  # strict: a corrupt sidecar fails here
        try:
            held = {info.content_id.digest for info in store.entries()}
            for digest, acks in acknowledged.items():
                assert digest in held or not acks, f"iteration {iteration}: a package vanished"
            for digest in held:
                expected = manifests[digest]
                if digest == manifest.content_id.digest:  # the one the writer touched
                    verified = check_verified_bytes(store, expected, iteration)
                else:  # checked when it was written; a later writer must leave it alone
                    verified = set(store.verified(expected.content_id))
                    assert verified == last_verified[digest], f"iteration {iteration}: changed"
                lost = acknowledged[digest] - verified
                assert not lost, f"iteration {iteration}: acknowledged chunks lost: {lost}"
                last_verified[digest] = verified
        finally:
            store.close()
    assert sum(len(acks) for acks in acknowledged.values()) > 0, "the writer never got going"
    with ContentStore(store_dir) as store:  # and every package's bytes, once more at the end
        for info in store.entries():
            check_verified_bytes(store, manifests[info.content_id.digest], ITERATIONS)
