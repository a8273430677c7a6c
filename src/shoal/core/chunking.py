"""Fixed-size chunking: which byte ranges of a package form which chunk.

A package of ``size`` bytes is cut into ``ceil(size / chunk_size)`` chunks; every chunk
is ``chunk_size`` bytes except a shorter last one. A zero-byte package has no chunks.
Chunk sizes are powers of two so that chunk boundaries line up with read blocks and
with each other, and small enough that blame for a bad chunk falls on one peer.

The default chunk size (``chunk_size_for``) gives a package enough chunks for a swarm
to pipeline: a peer passes a chunk on only once it holds it whole and verified, so each
hop through an office costs one chunk time on the sender's uplink (a 1 MiB chunk takes
0.42 s on a 20 Mbit/s uplink), and an office of N clients can keep every uplink busy
only when the package has many more chunks than N.
"""

from __future__ import annotations

from shoal.core.errors import InvalidChunkSize

KIB = 1024
MIB = 1024 * KIB
MIN_CHUNK_SIZE = 64 * KIB
MAX_CHUNK_SIZE = 16 * MIB
DEFAULT_CHUNK_SIZE = 1 * MIB
ALLOWED_CHUNK_SIZES: tuple[int, ...] = tuple(
    1 << shift for shift in range(MIN_CHUNK_SIZE.bit_length() - 1, MAX_CHUNK_SIZE.bit_length())
)


def validate_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` if allowed, else raise ``InvalidChunkSize`` saying why."""
    if chunk_size not in ALLOWED_CHUNK_SIZES:
        raise InvalidChunkSize(
            f"chunk size {chunk_size} is not allowed: use a power of two from "
            f"{MIN_CHUNK_SIZE} (64 KiB) to {MAX_CHUNK_SIZE} (16 MiB)"
        )
    return chunk_size


#: Most chunks a package should have: one HAVE datagram announces a peer's chunks as a
#: bitmap, so the chunk count stays well under what fits (see ``wire.messages``).
MAX_CHUNKS_PER_PACKAGE = 8192


#: Fewest chunks the default chunk size aims at, for packages below
#: ``MIN_CHUNKS_PER_PACKAGE x DEFAULT_CHUNK_SIZE``: enough pieces for an office of a few
#: dozen clients to pipeline (see the module docstring; docs/network.md has the figures).
MIN_CHUNKS_PER_PACKAGE = 128
#: The smallest default chunk size. Each chunk costs its requester a request and its
#: sender a tail (a tail-loss probe when the acknowledgement is late, which it is behind
#: a busy uplink): below 128 KiB those cost more than 1% of the WAN's bytes, and the WAN
#: must carry the package about once (1.05 x F).
MIN_DEFAULT_CHUNK_SIZE = 128 * KIB


def chunk_size_for(size: int) -> int:
    """The default chunk size for a package of ``size`` bytes.

    The largest power of two up to 1 MiB that still cuts the package into
    ``MIN_CHUNKS_PER_PACKAGE`` chunks (``MIN_DEFAULT_CHUNK_SIZE`` at the least: 16 MiB and
    less), so a small package still has enough chunks for a swarm; from 128 MiB, 1 MiB,
    or the smallest
    larger power of two that keeps the package within ``MAX_CHUNKS_PER_PACKAGE`` chunks
    (8 GiB and beyond), up to 16 MiB.
    """
    if chunk_count(size, DEFAULT_CHUNK_SIZE) < MIN_CHUNKS_PER_PACKAGE:
        fitting = [
            chunk_size
            for chunk_size in ALLOWED_CHUNK_SIZES
            if MIN_DEFAULT_CHUNK_SIZE <= chunk_size <= DEFAULT_CHUNK_SIZE
            and chunk_count(size, chunk_size) >= MIN_CHUNKS_PER_PACKAGE
        ]
        return max(fitting, default=MIN_DEFAULT_CHUNK_SIZE)
    for chunk_size in ALLOWED_CHUNK_SIZES:
        if chunk_size >= DEFAULT_CHUNK_SIZE and chunk_count(size, chunk_size) <= (
            MAX_CHUNKS_PER_PACKAGE
        ):
            return chunk_size
    return MAX_CHUNK_SIZE


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1048576``, ``64K``, ``64KiB``, ``1M`` or ``16MiB``."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    multiplier = 1
    for suffix, factor in (("K", KIB), ("M", MIB), ("G", 1024 * MIB)):
        if cleaned.endswith(suffix):
            cleaned, multiplier = cleaned[:-1], factor
            break
    if not cleaned.isdigit():
        raise InvalidChunkSize(f"not a size: {text!r} (examples: 65536, 64K, 1M, 16MiB)")
    return int(cleaned) * multiplier


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of chunks of a package of ``size`` bytes."""
    return -(-size // chunk_size)


def chunk_offset(chunk_index: int, chunk_size: int) -> int:
    """Byte offset of chunk ``chunk_index`` in the package."""
    return chunk_index * chunk_size


def chunk_length(size: int, chunk_size: int, chunk_index: int) -> int:
    """Length in bytes of chunk ``chunk_index``; raises IndexError when out of range."""
    count = chunk_count(size, chunk_size)
    if not 0 <= chunk_index < count:
        raise IndexError(f"chunk index {chunk_index} out of range 0..{count - 1}")
    return min(chunk_size, size - chunk_index * chunk_size)
