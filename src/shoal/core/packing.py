"""Build a manifest by streaming a package once.

The package is read in fixed 1 MiB blocks into two reused buffers, so memory stays
flat whatever the package or chunk size. Two SHA-256 computations run over the same
bytes, the per-chunk hashes and the whole-file hash; the whole-file hash runs on a
worker thread (hashlib releases the GIL on large buffers), so on two cores packing
runs at the speed of one SHA-256 pass.

``pack_sealed_stream`` packs a confidential package the same way while encrypting it
(``shoal.core.sealing``): it reads one plaintext chunk at a time, writes the ciphertext
to a sink, and the manifest it returns describes the ciphertext.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from shoal.core.chunking import DEFAULT_CHUNK_SIZE, MIB, validate_chunk_size
from shoal.core.manifest import Manifest
from shoal.core.sealing import ChunkCipher

READ_BLOCK_SIZE = 1 * MIB
ProgressCallback = Callable[[int], None]


def _read_full(stream: BinaryIO, buffer: bytearray | memoryview) -> int:
    """Fill ``buffer`` from ``stream``; return the byte count (short only at EOF)."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return filled


def pack_stream(
    stream: BinaryIO,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: ProgressCallback | None = None,
) -> Manifest:
    """Read ``stream`` to its end and return its manifest.

    ``on_progress`` is called with the number of bytes read so far after each block.
    """
    validate_chunk_size(chunk_size)
    whole_file = hashlib.sha256()
    chunk_hashes: list[bytes] = []
    chunk_hasher = hashlib.sha256()
    chunk_filled = 0
    total = 0
    buffers = (bytearray(READ_BLOCK_SIZE), bytearray(READ_BLOCK_SIZE))
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-pack") as pool:
        block_number = 0
        while True:
            # The buffer filled now was last hashed two blocks ago; that work was
            # awaited one block ago, so it is free.
            buffer = buffers[block_number % 2]
            got = _read_full(stream, buffer)
            if got == 0:
                break
            block = memoryview(buffer)[:got]
            if pending is not None:
                pending.result()
            pending = pool.submit(whole_file.update, block)
            position = 0
            while position < got:
                take = min(got - position, chunk_size - chunk_filled)
                chunk_hasher.update(block[position : position + take])
                chunk_filled += take
                position += take
                if chunk_filled == chunk_size:
                    chunk_hashes.append(chunk_hasher.digest())
                    chunk_hasher = hashlib.sha256()
                    chunk_filled = 0
            total += got
            block_number += 1
            if on_progress is not None:
                on_progress(total)
            if got < READ_BLOCK_SIZE:
                break
        if pending is not None:
            pending.result()
    if chunk_filled:
        chunk_hashes.append(chunk_hasher.digest())
    return Manifest(
        size=total,
        sha256=whole_file.digest(),
        chunk_size=chunk_size,
        chunk_hashes=tuple(chunk_hashes),
    )


@dataclass(frozen=True, slots=True)
class SealedPackage:
    """What packing a confidential package gives: the ciphertext's manifest, and the
    plaintext's size and SHA-256 (for the device that decrypts it)."""

    manifest: Manifest
    plaintext_size: int
    plaintext_sha256: bytes


def pack_sealed_stream(
    source: BinaryIO,
    sink: BinaryIO,
    cipher: ChunkCipher,
    on_progress: ProgressCallback | None = None,
) -> SealedPackage:
    """Encrypt ``cipher.plaintext_size`` bytes of ``source`` into ``sink``, chunk by chunk.

    Memory stays flat: two plaintext and two ciphertext buffers of one chunk each,
    reused. The plaintext hash and the ciphertext's whole-file hash run on two worker
    threads (one each: a hash takes its blocks in order) while the next chunk is read,
    encrypted and hashed: three SHA-256 passes over two or more cores. Raises
    ``ValueError`` if ``source`` ends early.
    """
    plaintext_hash = hashlib.sha256()
    whole_file = hashlib.sha256()
    chunk_hashes: list[bytes] = []
    step = cipher.plaintext_chunk_size
    buffers = (bytearray(step), bytearray(step))
    sealed_buffers = (bytearray(cipher.chunk_size), bytearray(cipher.chunk_size))
    pending: tuple[Future[None], Future[None]] | None = None
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-seal-p") as plain_pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-seal-c") as sealed_pool,
    ):
        for chunk_index in range(cipher.chunk_count):
            buffer = buffers[chunk_index % 2]
            want = cipher.plaintext_length(chunk_index)
            got = _read_full(source, memoryview(buffer)[:want])
            if got != want:
                raise ValueError(
                    f"the package ended after {chunk_index * step + got} bytes, "
                    f"{cipher.plaintext_size} expected"
                )
            plaintext = memoryview(buffer)[:want]
            sealed = memoryview(sealed_buffers[chunk_index % 2])
            ciphertext = sealed[: cipher.encrypt_into(chunk_index, plaintext, sealed)]
            chunk_hashes.append(hashlib.sha256(ciphertext).digest())
            sink.write(ciphertext)
            if pending is not None:
                for hashed in pending:
                    hashed.result()  # frees the other buffers for the next chunk
            pending = (
                plain_pool.submit(plaintext_hash.update, plaintext),
                sealed_pool.submit(whole_file.update, ciphertext),
            )
            if on_progress is not None:
                on_progress(chunk_index * step + want)
        if pending is not None:
            for hashed in pending:
                hashed.result()
    manifest = Manifest(
        size=cipher.sealed_size,
        sha256=whole_file.digest(),
        chunk_size=cipher.chunk_size,
        chunk_hashes=tuple(chunk_hashes),
    )
    return SealedPackage(manifest, cipher.plaintext_size, plaintext_hash.digest())


def pack_bytes(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Manifest:
    """The manifest of an in-memory package (tests and small payloads)."""
    validate_chunk_size(chunk_size)
    hashes = tuple(
        hashlib.sha256(data[offset : offset + chunk_size]).digest()
        for offset in range(0, len(data), chunk_size)
    )
    return Manifest(
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        chunk_size=chunk_size,
        chunk_hashes=hashes,
    )
