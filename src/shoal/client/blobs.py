"""Documents fetched from the server's data port as single verified chunks ("blobs").

The signed assignment document and each signed manifest are fetched like a chunk whose
SHA-256 the server announced (``CheckInReply``, ``ManifestReply``), so the transfer
engine verifies the bytes before anyone reads them; the console's signature is checked
after. ``BlobFetcher`` asks for them and remembers which request is which blob, so the
agent can tell a blob's outcome from a chunk's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal.core.ids import ContentId
from shoal.protocol.transfer import Mode, TransferEngine
from shoal.protocol.transfer.events import Address


@dataclass(frozen=True, slots=True)
class AssignmentsBlob:
    """The signed assignment document the server relays, by its SHA-256."""

    digest: bytes


@dataclass(frozen=True, slots=True)
class ManifestBlob:
    """The signed manifest of ``content_id``, by the SHA-256 of its file."""

    digest: bytes
    content_id: ContentId


Blob = AssignmentsBlob | ManifestBlob


class BlobFetcher:
    """Blob requests in flight on the foreground engine, by request ID."""

    def __init__(self, engines: Mapping[Mode, TransferEngine]) -> None:
        # The agent's engines by mode, looked up at each request: whoever drives the
        # agent may swap them (the simulator's flow-level engines) before it starts.
        self._engines = engines
        self._in_flight: dict[int, Blob] = {}

    def fetch(self, blob: Blob, length: int, server: Address, now: float) -> None:
        request_id = self._engines[Mode.FOREGROUND].request_chunk(
            server, ContentId(blob.digest), 0, length, blob.digest, Mode.FOREGROUND, now
        )
        self._in_flight[request_id] = blob

    def fetching_assignments(self) -> bool:
        """Is an assignment document on its way (one at a time)?"""
        return any(isinstance(blob, AssignmentsBlob) for blob in self._in_flight.values())

    def take(self, mode: Mode, request_id: int) -> Blob | None:
        """The blob this request was for (forgotten from now on), or None: a chunk's."""
        if mode is not Mode.FOREGROUND:
            return None
        return self._in_flight.pop(request_id, None)
