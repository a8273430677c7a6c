"""Chunk prefixes kept for a resumed request (``shoal.client.partials``): what a peer can
make a client keep is bounded, and a chunk's prefix lives only until it is asked again
or arrives."""

from __future__ import annotations

import hashlib

from shoal.client.download import Download
from shoal.client.partials import Partials
from shoal.core.ids import ContentId
from shoal.protocol.transfer import Mode, TransferEngine

CONTENT = ContentId(hashlib.sha256(b"content").digest())


def test_a_prefix_is_handed_to_the_next_request_once_and_the_longer_one_is_kept() -> None:
    partials = Partials()
    partials.keep(CONTENT, 3, b"a" * 2760)
    partials.keep(CONTENT, 3, b"b" * 1380)  # a shorter one (a later, cut request): ignored
    partials.keep(CONTENT, 4, b"")  # nothing held: nothing kept
    assert len(partials) == 1
    assert partials.take(CONTENT, 3) == b"a" * 2760
    assert partials.take(CONTENT, 3) == b""  # the request has it now
    partials.keep(CONTENT, 5, b"c" * 1380)
    partials.drop(CONTENT, 5)  # the chunk arrived
    assert partials.take(CONTENT, 5) == b"" and partials.held_bytes == 0


def test_prefixes_are_bounded_in_bytes_the_oldest_dropped_first() -> None:
    partials = Partials(max_bytes=10_000)
    for chunk_index in range(100):  # a peer cutting chunk after chunk
        partials.keep(CONTENT, chunk_index, bytes(4_000))
    assert partials.held_bytes <= 10_000
    assert partials.take(CONTENT, 99) and not partials.take(CONTENT, 0)
    partials.keep(CONTENT, 1, bytes(20_000))  # larger than the bound: not kept
    assert partials.take(CONTENT, 1) == b""


def test_requests_ended_because_their_peer_went_away_keep_what_they_held() -> None:
    engine = TransferEngine(now=0.0)
    download = Download(CONTENT, False, 0.0)
    peer = ("10.1.0.2", 41442)
    chunk = bytes(range(256)) * 100
    request_id = engine.request_chunk(
        peer, CONTENT, 7, len(chunk), hashlib.sha256(chunk).digest(), Mode.FOREGROUND, 0.0,
        chunk[:2760],
    )  # fmt: skip
    download.requests[request_id] = (peer, 7)
    partials = Partials()
    assert download.end_requests_to(peer, engine, partials, 0.0) == [7]
    assert partials.take(CONTENT, 7) == chunk[:2760]
