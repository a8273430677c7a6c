"""A download's rendezvous lease: what the server's answer makes of the server as a source.

The server answers each ``LEASE`` (``shoal.server.rendezvous``) with a decision:

* ``GRANTED``: this client holds stripes of the office's WAN copy; the server is an
  origin of the chunks of those stripes only (``shoal.core.stripes``), and the lease is
  renewed after ``lease_renew_fraction`` of its validity;
* ``REDIRECTED``: peers only; requests to the server are withdrawn and the client asks
  again when the lease it was told of may lapse;
* ``DIRECT``: the office does not share (VPN, or no office): every chunk from the server,
  and no renewal.

A download asks for its lease in the same round trip as its manifest; an answer that
comes before the manifest is stored is kept (``EarlyLeases``) and applied when the
download starts, its validity counted from when it came.

A ``BUSY`` refusal from the server (``server_refused``) holds that one chunk back from
the server for a while (``shoal.client.server_origin``) and asks for the lease again
(our stripes may have moved); the server's other answers come on as they are.

The rest of a chunk we hold a prefix of is asked of the server off the lease too, even
when redirected (``shoal.client.resume_asks``, ``ServerOrigin.resuming``).
"""

from __future__ import annotations

from shoal.client.download import Download
from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.core.stripes import stripe_chunks
from shoal.protocol.transfer import Address
from shoal.wire.control import LeaseDecision, LeaseReply

MIN_RENEWAL = 0.5
"""Seconds: a granted lease is renewed no sooner than this (a very short validity)."""
MIN_REDIRECT_WAIT = 1.0
"""Seconds: a redirected client asks again no sooner than this."""


def apply_lease(
    download: Download,
    reply: LeaseReply,
    valid: float,
    server: Address,
    renew_fraction: float,
    now: float,
) -> list[int]:
    """Make the server an origin of what ``reply`` grants (``valid`` seconds left of it);
    returns the chunks whose requests to the server must be cancelled (redirected)."""
    picker = download.picker
    assert picker is not None
    download.source = reply.decision
    full = ChunkSet.full(picker.have.count)
    if reply.decision is LeaseDecision.REDIRECTED:
        download.origin.grant(None)
        download.lease_due = now + max(valid, MIN_REDIRECT_WAIT)
        download.note = f"rendezvous point of the office: {reply.holder[0]}"
        resuming = download.origin.resuming
        if not resuming:
            return picker.peer_gone(server)
        # The rests of chunks we hold prefixes of are still asked (``resume_asks``).
        released = [
            chunk_index
            for asked, chunk_index in download.requests.values()
            if asked == server and chunk_index not in resuming
        ]
        for chunk_index in released:
            picker.failed(chunk_index, server)
        offer_server(download, server)
        return released
    if reply.decision is LeaseDecision.GRANTED:  # the server serves its stripes only
        download.origin.grant(stripe_chunks(full.count, reply.stripes, reply.stripe_mask))
        download.lease_due = now + max(valid * renew_fraction, MIN_RENEWAL)
        download.note = "this client is the office's rendezvous point"
    else:
        download.origin.grant(full)
        download.lease_due = float("inf")
        download.note = "this office does not share: downloading from the server"
    offer_server(download, server)
    return []


def offer_server(download: Download, server: Address) -> None:
    """Tell the picker what the server may be asked for now (the lease's chunks and the
    rests resumed off it, but those held back after a refusal); requests in flight to it
    stay as they are."""
    picker = download.picker
    if picker is not None:
        offered = download.origin.offered(picker.have.count)
        if offered is not None:
            picker.peer_has(server, offered, origin=True)


def server_refused(download: Download, chunk_index: int, server: Address, now: float) -> None:
    """The server refused ``chunk_index`` BUSY: not asked of it again for a while (see
    ``shoal.client.server_origin``), and the lease asked again (our stripes may have
    moved). Our other requests to the server are left alone: a chunk it is sending
    comes on, and one queued there is answered there, never asked twice."""
    download.origin.refused(chunk_index, now)
    offer_server(download, server)
    download.lease_due = min(download.lease_due, now)


def release_held(download: Download, server: Address, now: float) -> None:
    """Chunks whose hold is over may be asked of the server again."""
    if download.origin.release_due(now):
        offer_server(download, server)


class EarlyLeases:
    """Lease answers that came before their download's manifest was stored."""

    def __init__(self) -> None:
        self._answers: dict[ContentId, tuple[LeaseReply, float]] = {}

    def __contains__(self, content_id: ContentId) -> bool:
        return content_id in self._answers

    def keep(self, reply: LeaseReply, now: float) -> None:
        self._answers[reply.content_id] = (reply, now)

    def forget(self, content_id: ContentId) -> None:
        self._answers.pop(content_id, None)

    def take(self, content_id: ContentId, now: float) -> tuple[LeaseReply, float] | None:
        """The answer kept for ``content_id`` and the seconds of it left, if any are."""
        kept = self._answers.pop(content_id, None)
        if kept is None:
            return None
        reply, at = kept
        left = reply.valid_ms / 1000 - (now - at)
        return (reply, left) if left > 0 else None
