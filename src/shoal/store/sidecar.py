"""The sidecar of a stored content (``<content-id>.state``): which chunks are verified,
whether the content is complete and pinned, and when it was last used; what the store
keeps of one entry in memory, and the views it gives of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.store.errors import SidecarCorrupt

SIDECAR_FORMAT = 1


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the store knows of one content ID, for status views."""

    content_id: ContentId
    size: int
    chunk_count: int
    verified_chunks: int
    complete: bool
    pinned: bool
    last_used: float


@dataclass(frozen=True, slots=True)
class SidecarProblem:
    """A sidecar found unreadable when the store was opened."""

    content_id: ContentId
    path: Path
    reason: str


@dataclass(slots=True)
class Entry:
    manifest: Manifest
    verified: ChunkSet
    complete: bool
    pinned: bool
    last_used: float
    descriptor: int

    def info(self) -> EntryInfo:
        return EntryInfo(
            content_id=self.manifest.content_id,
            size=self.manifest.size,
            chunk_count=self.manifest.chunk_count,
            verified_chunks=len(self.verified),
            complete=self.complete,
            pinned=self.pinned,
            last_used=self.last_used,
        )


def encode_sidecar(entry: Entry) -> bytes:
    """The sidecar of ``entry`` (read back by ``parse_sidecar``)."""
    state = {
        "format": SIDECAR_FORMAT,
        "content_id": entry.manifest.content_id.hex,
        "chunks": entry.manifest.chunk_count,
        "verified": entry.verified.to_bytes().hex(),
        "complete": entry.complete,
        "pinned": entry.pinned,
        "last_used": entry.last_used,
    }
    return json.dumps(state, sort_keys=True).encode()


def parse_sidecar(path: Path, content_id: ContentId, manifest: Manifest) -> dict[str, Any]:
    """Read and validate a sidecar; ``SidecarCorrupt`` names what is wrong."""
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise SidecarCorrupt(f"{path}: sidecar is not readable JSON ({error})") from None
    if not isinstance(state, dict):
        raise SidecarCorrupt(f"{path}: sidecar is not a JSON object")
    if state.get("format") != SIDECAR_FORMAT:
        raise SidecarCorrupt(f"{path}: unknown sidecar format {state.get('format')!r}")
    if state.get("content_id") != content_id.hex or manifest.content_id != content_id:
        raise SidecarCorrupt(f"{path}: sidecar belongs to another content ID")
    if state.get("chunks") != manifest.chunk_count:
        raise SidecarCorrupt(f"{path}: chunk count does not match the manifest")
    try:
        verified = ChunkSet.from_bytes(manifest.chunk_count, bytes.fromhex(state["verified"]))
    except (KeyError, TypeError, ValueError) as error:
        raise SidecarCorrupt(f"{path}: verified-chunk bitmap is invalid ({error})") from None
    complete, pinned, last_used = (
        state.get("complete"),
        state.get("pinned"),
        state.get("last_used"),
    )
    if not isinstance(complete, bool) or not isinstance(pinned, bool):
        raise SidecarCorrupt(f"{path}: 'complete' and 'pinned' must be true or false")
    if not isinstance(last_used, int | float):
        raise SidecarCorrupt(f"{path}: 'last_used' must be a number")
    if complete and not verified.complete:
        raise SidecarCorrupt(f"{path}: marked complete with chunks missing")
    return {
        "verified": verified,
        "complete": complete,
        "pinned": pinned,
        "last_used": float(last_used),
    }
