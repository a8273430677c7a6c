"""Which chunks the server has delivered into each office: one WAN copy, not two.

Theory of operation
-------------------
The stripes (``shoal.server.rendezvous``) say which holder may fetch which chunk over
the WAN; a holder's picker then asks the server only for chunks no peer of the office
holds, *as far as it knows*. A client that has just (re)started, or that has just taken
over a stripe, may not know yet who in the office holds what (discovery answers a
moment later), and would fetch a second WAN copy of chunks the office already has: the
estate-faults runs showed it after a server restart (a holder restarted on its cache
asked for its new stripe's chunks within 0.2 s of its lease) and after holders that
completed released their stripes to a holder that did not know they had them.

So the server remembers, per (office, content), who each chunk was delivered to in full
(the transfer engine's ``ChunkDelivered``: every byte acknowledged, so the receiver
verified it). A request for a chunk already delivered into the office to another client
that is still there (``present``: seen lately and not banned) is refused ``BUSY``, as
a request outside the asker's stripes is: the asker asks for its lease again (one round
trip) and takes the chunk from that peer once discovery tells it (it searches every
``query_interval``, 1 s; in the estate-faults runs this added 4 control datagrams of
691). The refusal is bounded: once the office has been refused a
chunk for ``hold_seconds`` (the lease period), the server serves it again, so a chunk
lost with its receiver (a crash between the acknowledgement and the disk, a receiver
that left) costs at most that delay, never the download. A ban forgets what was
delivered to the banned peer (``forget_device``): what it holds is worthless to its
office, and the next holder fetches it again.

Time is passed in; state is bounded by the chunks of the contents being distributed
(one entry per chunk and office), and dropped ``keep_seconds`` after the last delivery.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal.core.ids import ContentId


class Presence(Protocol):
    def __call__(self, device: str) -> bool:
        """Is ``device`` still in the office (seen lately, not banned)?"""
        ...


class _Held(Protocol):
    refused_since: float | None


def hold_lasts(held: _Held, now: float, hold_seconds: float) -> bool:
    """A chunk held for one device is refused to another: the first refusal starts the
    hold, which lasts ``hold_seconds`` (the ledger's deliveries, ``cut_chunks``' cuts)."""
    if held.refused_since is None:
        held.refused_since = now
        return True
    return now - held.refused_since < hold_seconds


@dataclass(slots=True)
class _Delivery:
    device: str
    refused_since: float | None = None
    """When the server first refused this chunk to another client of the office."""


@dataclass(slots=True)
class _Ledger:
    chunks: dict[int, _Delivery] = field(default_factory=dict)
    last_delivery: float = 0.0


class DeliveryLedger:
    """Per (office, content ID): the client each chunk was delivered to over the WAN."""

    def __init__(self, hold_seconds: float = 10.0, keep_seconds: float = 600.0) -> None:
        self.hold_seconds = hold_seconds
        self.keep_seconds = keep_seconds
        self._ledgers: dict[tuple[str, ContentId], _Ledger] = {}
        self.refused = 0
        """Requests refused because the chunk was already in the office."""
        self.changes = 0
        """Deliveries and forgotten ones: the state store saves the ledger when it moved."""

    def delivered(
        self, office: str, content_id: ContentId, device: str, chunk_index: int, now: float
    ) -> None:
        """The server delivered ``chunk_index`` to ``device`` in full (acknowledged)."""
        ledger = self._ledgers.setdefault((office, content_id), _Ledger())
        ledger.chunks[chunk_index] = _Delivery(device)
        ledger.last_delivery = now
        self.changes += 1

    def in_office(
        self,
        office: str,
        content_id: ContentId,
        device: str,
        chunk_index: int,
        now: float,
        present: Presence,
    ) -> bool:
        """Should ``device``'s request for ``chunk_index`` be refused, because another
        client of the office, still present, received it from the server already (and the
        office has not been refused it for ``hold_seconds`` yet)?"""
        ledger = self._ledgers.get((office, content_id))
        delivery = ledger.chunks.get(chunk_index) if ledger is not None else None
        if delivery is None or delivery.device == device or not present(delivery.device):
            return False
        if not hold_lasts(delivery, now, self.hold_seconds):
            return False  # the office could not get it from its receiver: serve it again
        self.refused += 1
        return True

    def forget_device(self, office: str, device: str) -> None:
        """``device`` was banned in ``office``: what it received is lost to the office."""
        for (ledger_office, _), ledger in self._ledgers.items():
            if ledger_office == office:
                for chunk_index in [i for i, d in ledger.chunks.items() if d.device == device]:
                    del ledger.chunks[chunk_index]
                    self.changes += 1

    def expire(self, now: float) -> None:
        """Forget contents with no delivery into the office for ``keep_seconds``."""
        horizon = now - self.keep_seconds
        for key in [key for key, led in self._ledgers.items() if led.last_delivery < horizon]:
            del self._ledgers[key]
            self.changes += 1

    def chunk_indices(self, office: str, content_id: ContentId) -> Collection[int]:
        """The chunks delivered to the office (a live view, not a copy)."""
        ledger = self._ledgers.get((office, content_id))
        return ledger.chunks.keys() if ledger is not None else ()

    def chunks(self, office: str, content_id: ContentId) -> dict[int, str]:
        """Chunk index -> the device it was delivered to (a copy)."""
        ledger = self._ledgers.get((office, content_id))
        return {i: d.device for i, d in ledger.chunks.items()} if ledger is not None else {}

    # ------------------------------------------------------------ persistence

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Plain values (JSON) to survive a server restart: per office and content, each
        device and the chunks delivered to it (a hex bit mask), and how long ago."""
        saved = []
        for (office, content_id), ledger in self._ledgers.items():
            masks: dict[str, int] = {}
            for chunk_index, delivery in ledger.chunks.items():
                masks[delivery.device] = masks.get(delivery.device, 0) | 1 << chunk_index
            saved.append(
                {
                    "office": office,
                    "content_id": content_id.hex,
                    "age_s": round(now - ledger.last_delivery, 3),
                    "devices": {device: format(mask, "x") for device, mask in masks.items()},
                }
            )
        return saved

    def restore(self, saved: list[dict[str, Any]], now: float, elapsed: float) -> None:
        """Take back a ``snapshot`` written ``elapsed`` seconds ago."""
        for entry in saved:
            ledger = _Ledger(last_delivery=now - elapsed - float(entry["age_s"]))
            for device, mask_hex in entry["devices"].items():
                mask = int(mask_hex, 16)
                while mask:
                    low = mask & -mask
                    ledger.chunks[low.bit_length() - 1] = _Delivery(device)
                    mask ^= low
            self._ledgers[(entry["office"], ContentId.from_hex(entry["content_id"]))] = ledger
