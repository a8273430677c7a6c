"""Partial files: the received prefix of each chunk in flight, so that a killed client
resumes its chunk from disk (issue 9).

Theory of operation
-------------------
While a chunk arrives, the client writes its contiguous received prefix to
``<content-id>.<chunk>.part`` in the store directory, a step at a time, each write at its
offset and only the new bytes (``ContentStore.write_partial``, run by the client's disk
thread with the chunk writes). Nothing is fsynced: a killed process loses no written
page; after a power loss the tail may be torn or zeroed. So nothing in a partial file is
trusted: the receiver uses only its whole segments as a prefix and hashes the whole
chunk, prefix included, once complete; a resumed chunk that fails is asked whole, its
sender not blamed, and its partial file removed.

A partial file is removed when its chunk is written (in the same batch, after the
sidecar marks it verified), when the chunk fails, and with its content; at open, those
of content not in the store, of a chunk already verified or not of the content, and of
a whole chunk's length or more are removed. Bounded: a file grows only from its end (no
hole), stays shorter than its chunk, and all of them together hold at most
``MAX_PARTIAL_BYTES``; a write past the cap is refused (that prefix is just not durable).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shoal.core.ids import ContentId
from shoal.store.disk import pwrite_all

SUFFIX = "part"
MAX_PARTIAL_BYTES = 16 * 1024 * 1024
"""Most bytes of partial files at once (a client's chunks in flight, 16 x 1 MiB at most)."""


class PartialFiles:
    """The partial files of one store directory and their sizes (not thread-safe: the
    content store calls it under its lock)."""

    def __init__(self, root: Path, max_bytes: int = MAX_PARTIAL_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._sizes: dict[ContentId, dict[int, int]] = {}
        self.held_bytes = 0

    def path(self, content_id: ContentId, chunk_index: int) -> Path:
        return self.root / f"{content_id.hex}.{chunk_index}.{SUFFIX}"

    def scan(self, chunk_length: Callable[[ContentId, int], int]) -> None:
        """At open: keep the partial files whose chunk ``chunk_length`` gives a length for
        (0: not wanted) and that are shorter than it, newest first within the cap; remove
        the rest."""
        found: list[tuple[float, ContentId, int, int, Path]] = []
        for path in self.root.glob(f"*.{SUFFIX}"):
            content_hex, _, index_text = path.stem.partition(".")
            try:
                content_id = ContentId.from_hex(content_hex)
                chunk_index = int(index_text)
                stats = path.stat()
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
                continue
            if path != self.path(content_id, chunk_index):  # not a name we write
                path.unlink(missing_ok=True)
                continue
            if not 0 < stats.st_size < chunk_length(content_id, chunk_index):
                path.unlink(missing_ok=True)
                continue
            found.append((stats.st_mtime, content_id, chunk_index, stats.st_size, path))
        found.sort(key=lambda item: item[0], reverse=True)
        for _, content_id, chunk_index, size, path in found:
            if self.held_bytes + size > self.max_bytes:
                path.unlink(missing_ok=True)
                continue
            self._sizes.setdefault(content_id, {})[chunk_index] = size
            self.held_bytes += size

    def size(self, content_id: ContentId, chunk_index: int) -> int:
        return self._sizes.get(content_id, {}).get(chunk_index, 0)

    def chunks(self, content_id: ContentId) -> list[int]:
        """The chunks of ``content_id`` with a partial file."""
        return sorted(self._sizes.get(content_id, ()))

    def write(
        self,
        content_id: ContentId,
        chunk_index: int,
        offset: int,
        data: bytes | bytearray | memoryview,
        chunk_length: int,
    ) -> bool:
        """Write ``data`` at ``offset`` of the chunk's partial file; False (nothing
        written) for a hole (``offset`` past the file's end), a whole chunk's length or
        more, or past the cap."""
        size = self.size(content_id, chunk_index)
        end = offset + len(data)
        if not data or not 0 <= offset <= size or end >= chunk_length:
            return False
        grown = max(end - size, 0)
        if self.held_bytes + grown > self.max_bytes:
            return False
        path = self.path(content_id, chunk_index)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                pwrite_all(descriptor, data, offset)
            finally:
                os.close(descriptor)
        except OSError:  # disk full, removed meanwhile: that prefix is just not durable
            self.remove(content_id, chunk_index)
            path.unlink(missing_ok=True)
            return False
        self._sizes.setdefault(content_id, {})[chunk_index] = size + grown
        self.held_bytes += grown
        return True

    def read(self, content_id: ContentId, chunk_index: int) -> bytes:
        """The partial file's bytes (b"" if none or unreadable): untrusted."""
        size = self.size(content_id, chunk_index)
        if not size:
            return b""
        try:
            with open(self.path(content_id, chunk_index), "rb") as partial:
                return partial.read(size)
        except OSError:
            return b""

    def remove(self, content_id: ContentId, chunk_index: int) -> None:
        """Remove the chunk's partial file (a look-up only when there is none)."""
        sizes = self._sizes.get(content_id)
        if sizes is None or chunk_index not in sizes:
            return
        self.held_bytes -= sizes.pop(chunk_index)
        if not sizes:
            del self._sizes[content_id]
        self.path(content_id, chunk_index).unlink(missing_ok=True)

    def remove_content(self, content_id: ContentId) -> None:
        for chunk_index in self.chunks(content_id):
            self.remove(content_id, chunk_index)
