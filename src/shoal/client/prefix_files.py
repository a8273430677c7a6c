"""The received prefixes of chunks in flight, kept on disk as they grow (issue 9).

``shoal.client.partials`` keeps the prefix of a chunk whose request ended, in memory; a
client process that is killed mid-chunk loses it. So the client also writes each chunk's
contiguous received prefix to its partial file (``shoal.store.partials``):

* after each input the agent looks at its requests in flight
  (``TransferEngine.received_prefix``, a view of the receive buffer: a look-up per request
  and poll, nothing per DATA datagram) and, for each chunk whose prefix grew by
  ``STEP_SEGMENTS`` whole segments or more since its last write, emits a
  ``WritePartial`` of the new bytes only, at their offset (a segment is never written
  twice), run by the disk thread in order with the chunk writes;
* the chunk's write removes the file (the store, in the same batch); a chunk that fails
  (``ChunkCorrupted``) gets a ``DropPartial``; a request that ends otherwise leaves it;
* when a download starts (a restart), ``LoadPartials`` reads its chunks' partial files
  off the loop, and their prefixes go to ``Partials`` (held here): the first request for each chunk
  asks the rest only. The download asks for no chunk until they are loaded.

Nothing on disk is trusted: the receiver uses whole segments only and hashes the whole
chunk once complete; a resumed chunk that fails is asked whole and its sender not blamed.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.client.disk import (
    DropPartial,
    LoadPartials,
    PartialsLoaded,
    StoreUpdate,
    WritePartial,
)
from shoal.client.download import Download
from shoal.client.partials import Partials
from shoal.core.ids import ContentId
from shoal.protocol.transfer import Mode, TransferEngine

STEP_SEGMENTS = 16
"""Whole segments a prefix grows by before it is written again (22 KB): what a killed
holder may lose per chunk in flight, against the writes' CPU (a write per segment cost
the lab's slow-link clients ~12% more CPU, per 16 ~2-3%: docs/network.md, "Resumable
chunks on disk")."""


class PrefixFiles:
    """What each chunk's partial file holds (as written or queued) and its effects."""

    def __init__(self, effects: list[StoreUpdate], step_segments: int = STEP_SEGMENTS) -> None:
        self.step_segments = step_segments
        #: The prefixes of chunks asked again (memory; this class's loads add to it).
        self.partials = Partials()
        #: Bytes of each chunk's partial file, written or queued (the next write's offset).
        self._written: dict[tuple[ContentId, int], int] = {}
        #: Contents whose partial files are being loaded: nothing is asked for them yet.
        self.loading: set[ContentId] = set()
        #: The downloads' queue of store updates (run in order, before the chunk writes).
        self._effects = effects

    def load(self, content_id: ContentId) -> None:
        """A download starts: read its partial files before its first request."""
        self.loading.add(content_id)
        self._effects.append(LoadPartials(content_id))

    def loaded(self, result: PartialsLoaded) -> None:
        """Their prefixes go to ``partials``, taken by each chunk's next request (whose
        receiver uses their whole segments only: a torn tail is written again)."""
        self.loading.discard(result.content_id)
        for chunk_index, prefix in result.prefixes.items():
            self._written[(result.content_id, chunk_index)] = len(prefix)
            self.partials.keep(result.content_id, chunk_index, prefix)

    def note_growth(
        self, downloads: Iterable[Download], engines: dict[Mode, TransferEngine]
    ) -> None:
        """After an input: write the new whole segments of each prefix that grew a step."""
        written = self._written
        for download in downloads:
            if not download.requests:
                continue
            engine = engines[download.mode]
            step_unit = engine.config.segment_size
            step = self.step_segments * step_unit
            for request_id, (_, chunk_index) in download.requests.items():
                prefix = engine.received_prefix(request_id)
                if prefix is None:
                    continue
                key = (download.content_id, chunk_index)
                start = written.get(key, 0)
                start -= start % step_unit  # a loaded file's torn tail: written again
                if len(prefix) - start >= step:
                    # A view, not a copy: those bytes of the buffer are never written again.
                    data = prefix[start:]
                    self._effects.append(WritePartial(key[0], chunk_index, start, data))
                    written[key] = len(prefix)

    def chunk_done(self, content_id: ContentId, chunk_index: int) -> None:
        """The chunk arrived: no prefix of it is of use (its write removes the file)."""
        self.partials.drop(content_id, chunk_index)
        self._written.pop((content_id, chunk_index), None)

    def chunk_failed(self, content_id: ContentId, chunk_index: int) -> None:
        """The chunk failed its hash: its partial file goes (its bytes may be bad)."""
        self._written.pop((content_id, chunk_index), None)
        self._effects.append(DropPartial(content_id, chunk_index))

    def forget(self, content_id: ContentId) -> None:
        """The content is no longer assigned: its files stay (loaded if it comes back)."""
        self.loading.discard(content_id)
        for key in [key for key in self._written if key[0] == content_id]:
            del self._written[key]
