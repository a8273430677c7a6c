"""Discovery's events (``shoal.protocol.discovery``): what the agent feeds the picker."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId


@dataclass(frozen=True, slots=True)
class PeerAvailable:
    """``peer`` (its IP) holds ``chunks`` of ``content_id``; it answered from ``port``
    (the discovery port it runs on, which tells its data ports: main or alternative)."""

    peer: str
    content_id: ContentId
    chunks: ChunkSet
    port: int = 0


@dataclass(frozen=True, slots=True)
class PeerSearching:
    """``peer`` (its IP) asked for ``content_id``, which we search too, from ``port``:
    a downloader of the office, known even while it holds nothing (it answers no query
    then). It may hold chunks: a ``PeerAvailable`` says what."""

    peer: str
    content_id: ContentId
    port: int = 0


@dataclass(frozen=True, slots=True)
class PeerVersionRejected:
    """A peer answered our query with a version error: it speaks ``min..max`` only."""

    peer: str
    min_version: int
    max_version: int


DiscoveryEvent = PeerAvailable | PeerSearching | PeerVersionRejected
