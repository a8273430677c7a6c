"""Chunks cut on their way to a holder: held for it when its stripe passes on (issues 9
and 10).

Theory of operation
-------------------
A holder whose process survives a cut (the office's WAN went down, the server
restarted) keeps what it had received of the chunk the server was sending it, as a
prefix (``shoal.client.partials``), and asks the rest with an offset once it can reach
the server again; ``shoal.server.resumes`` serves that rest even if the chunk's stripe
is now another holder's. But the cut is often longer than the holder's lease: its
stripe passes to another client (``shoal.server.rendezvous``), which asks the chunk
*whole* before the holder is back, and the prefix's bytes crossed the WAN for nothing
(estate-faults-100m: 4 of the 6 offices over 1.05 F were the offices whose WAN was cut,
the cut chunks fetched whole by the stripes' new holders 1-3 s before their prefixes'
holders asked the rest; ``docs/network.md``, "Cut chunks held for their holder").

So the server remembers, per (office, content, chunk), the device it last began to send
the chunk to (``served``), until the chunk is delivered into the office (``delivered``).
A request for one of the ``SENDING`` oldest such chunks of a device (those that may have
reached it in part; the ones queued behind them were not sent yet) by *another* device
is refused ``BUSY`` (``held_for_other``) while the device it was cut from is present
(``Presence``: seen within two check-in periods, not banned, not reported by the asker),
for ``hold_seconds`` (the lease period, as the delivery ledger's hold) from the first
such refusal at most: the new holder's client holds the chunk back and asks the rest of
its stripe first (``shoal.client.server_origin``), so it is given the cut chunk last,
and is given it once the hold is over; a holder that left for good delays those few
chunks by the hold, never the download. The device the chunk was cut from asks the
rest with an offset and is served (``resumes``, which then holds that chunk for it);
that it asks shows it is back, so nothing else is held for it. The hold ends at once
when that device asks the chunk *whole* (it holds no prefix of it, ``asked_whole``).

A device whose process died (the server learns it from an ICMP port unreachable,
``process_gone``) keeps its holds: a client writes each chunk's received prefix to disk
(``shoal.client.prefix_files``), and its restarted process asks the rest of every chunk
it holds a prefix of as soon as its lease is answered, stripe or not
(``shoal.client.resume_asks``). But a prefix shorter than a write step is not on disk, so
the hold lasts until ``BACK_GRACE`` after the restarted process's first lease
(``leased``), not longer: what it did not ask by then it does not hold. (Measured in
the default sim grid's churn cells: ending every hold at the port unreachable cost cells
11 and 12 0.026-0.051 F once the restarted client asks, its offset refused and the chunk
fetched whole by the new holder; keeping the holds until they ran out cost cell 20 T_last
5.9 -> 8.5 s, its killed holders with no prefix on disk never asking; 1.0 s after the
lease, 6.4 s; 0.5 s, 5.9 s: ``docs/network.md``, "Cut chunks across a restart".)

Why the record is made when an upload starts, not when it ends without delivery: the end
is an event of the process that was sending (``RequestCancelled`` after an ICMP port
unreachable, ``TransferTimedOut``), and when the server itself restarts (the
estate-faults runs: the server dies while the outage office's flows are stalled) no
process hears it. A chunk begun and not delivered is what the restarted server can know;
it is saved with the leases and the delivery ledger (``snapshot``/``restore``).

Bounded: ``PER_DEVICE`` chunks per (office, content, device) (a client asks the server
for a few chunks at a time; the oldest record is dropped first), ``MAX_CHUNKS`` in all
(the oldest first), and a record not delivered for ``keep_seconds`` is dropped
(``expire``). A device can make the server hold back at most ``PER_DEVICE`` chunks of a
content from the office, each once, for ``hold_seconds``, and only chunks it was sent.
Time is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from shoal.core.ids import ContentId
from shoal.server.deliveries import Presence, hold_lasts

__all__ = ["BACK_GRACE", "MAX_CHUNKS", "PER_DEVICE", "SENDING", "CutChunks"]

PER_DEVICE = 8
"""Chunks of one content remembered per device (twice what a client asks the server for
at once, ``max_in_flight``)."""
SENDING = 2
"""Of a device's chunks begun and not delivered, the oldest ones that may have reached
it in part: a sender sends its oldest chunk first (``protocol/transfer/sender.py``), and
the one before it may be whole at the receiver with its last acknowledgements lost in
the cut. Those queued behind them were not sent yet: holding them would only delay the
stripe's new holder."""
MAX_CHUNKS = 4096
"""Chunks remembered in all (the oldest forgotten first)."""
BACK_GRACE = 0.5
"""Seconds a device whose process died has, from its restarted process's first lease,
to ask the rest of the chunks held for it (it asks at the lease's answer: a round trip,
and its partial files read; 2.5 times a 200 ms WAN round trip). Bounded state: a device
is remembered only while it has holds (``expire`` forgets the others)."""

_Key = tuple[str, ContentId, int]


@dataclass(slots=True)
class _Cut:
    device: str
    served_at: float
    refused_since: float | None = None
    """When the server first refused the chunk to another device for it."""
    back_by: float | None = None
    """Its device's process died: held until then (infinity until it leases again)."""


class CutChunks:
    """Per (office, content, chunk): the device the server last began to send it to, until
    it is delivered into the office."""

    def __init__(self, hold_seconds: float = 10.0, keep_seconds: float = 600.0) -> None:
        self.hold_seconds = hold_seconds
        self.keep_seconds = keep_seconds
        self._chunks: OrderedDict[_Key, _Cut] = OrderedDict()
        self._by_device: dict[tuple[str, ContentId, str], list[int]] = {}
        #: Devices whose process died and that have not leased since, (office, device).
        self._gone: set[tuple[str, str]] = set()
        self.refused = 0
        """Requests refused because the chunk was held for the device it was cut from."""
        self.changes = 0
        """Records made and dropped: the state store saves them when this moved."""

    def __len__(self) -> int:
        return len(self._chunks)

    def served(
        self,
        office: str,
        content_id: ContentId,
        device: str,
        chunk_index: int,
        now: float,
        resumed: bool = False,
    ) -> None:
        """The server began to send ``chunk_index`` to ``device`` (``resumed``: the rest
        of it). A resumed chunk is ``resumes``' to hold, and its device is back: it asks
        the rest of what it holds a prefix of, so nothing else is held for it."""
        key = (office, content_id, chunk_index)
        self._drop(key)
        if resumed:
            for held in list(self._by_device.get((office, content_id, device), ())):
                self._drop((office, content_id, held))
            return
        self._chunks[key] = _Cut(device, now)
        mine = self._by_device.setdefault((office, content_id, device), [])
        mine.append(chunk_index)
        self.changes += 1
        if len(mine) > PER_DEVICE:
            self._drop((office, content_id, mine[0]))
        while len(self._chunks) > MAX_CHUNKS:
            self._drop(next(iter(self._chunks)))

    def delivered(self, office: str, content_id: ContentId, chunk_index: int) -> None:
        """The chunk is in the office (every byte acknowledged): nothing to hold."""
        self._drop((office, content_id, chunk_index))

    def asked_whole(
        self, office: str, content_id: ContentId, device: str, chunk_index: int
    ) -> None:
        """``device`` asks the chunk whole: if it was cut from it, it holds no prefix of
        it (a new process), so the chunk is held for it no longer."""
        cut = self._chunks.get((office, content_id, chunk_index))
        if cut is not None and cut.device == device:
            self._drop((office, content_id, chunk_index))

    def held_for_other(
        self,
        office: str,
        content_id: ContentId,
        device: str,
        chunk_index: int,
        now: float,
        present: Presence,
    ) -> bool:
        """Should ``device``'s request for the chunk be refused, because it was cut on its
        way to another device of the office that is still present (and the office has
        not been refused it for ``hold_seconds`` yet)?"""
        key = (office, content_id, chunk_index)
        cut = self._chunks.get(key)
        if cut is None or cut.device == device:
            return False
        if chunk_index not in self._by_device[(office, content_id, cut.device)][:SENDING]:
            return False  # queued behind the ones being sent: its device has none of it
        if not present(cut.device) or (cut.back_by is not None and now >= cut.back_by):
            self._drop(key)  # gone, or back and did not ask the rest: it has no prefix
            return False
        if not hold_lasts(cut, now, self.hold_seconds):
            self._drop(key)  # its device did not ask the rest: the next holder fetches it
            return False
        self.refused += 1
        return True

    def process_gone(self, office: str, device: str) -> None:
        """``device``'s process died (ICMP port unreachable): its holds last until
        ``BACK_GRACE`` after its restarted process's first lease (``leased``)."""
        for cut in self._cuts_of(office, device):
            if cut.back_by is None:
                cut.back_by = float("inf")
                self._gone.add((office, device))

    def leased(self, office: str, device: str, now: float) -> None:
        """``device`` asked a lease: if its process had died, it is back, and asks the
        rest of what it holds a prefix of at the answer."""
        if (office, device) in self._gone:
            self._gone.discard((office, device))
            for cut in self._cuts_of(office, device):
                if cut.back_by == float("inf"):
                    cut.back_by = now + BACK_GRACE

    def _cuts_of(self, office: str, device: str) -> list[_Cut]:
        return [
            self._chunks[(office, content_id, chunk_index)]
            for (held_office, content_id, held_device), chunks in self._by_device.items()
            if held_office == office and held_device == device
            for chunk_index in chunks
        ]

    def expire(self, now: float) -> None:
        """Forget records begun ``keep_seconds`` ago and never delivered."""
        horizon = now - self.keep_seconds
        for key in [key for key, cut in self._chunks.items() if cut.served_at < horizon]:
            self._drop(key)
        holding = {(office, device) for office, _, device in self._by_device}
        self._gone &= holding

    def _drop(self, key: _Key) -> None:
        cut = self._chunks.pop(key, None)
        if cut is None:
            return
        office, content_id, chunk_index = key
        device_key = (office, content_id, cut.device)
        mine = self._by_device[device_key]
        mine.remove(chunk_index)
        if not mine:
            del self._by_device[device_key]
        self.changes += 1

    # ------------------------------------------------------------ persistence

    def snapshot(self, now: float) -> list[list[Any]]:
        """Plain values (JSON): ``[office, content ID hex, chunk, device, age_s]`` each."""
        return [
            [office, content_id.hex, chunk_index, cut.device, round(now - cut.served_at, 3)]
            for (office, content_id, chunk_index), cut in self._chunks.items()
        ]

    def restore(self, saved: list[list[Any]], now: float, elapsed: float) -> None:
        """Take back a ``snapshot`` written ``elapsed`` seconds ago (holds start anew)."""
        for office, content_hex, chunk_index, device, age in saved[-MAX_CHUNKS:]:
            content_id = ContentId.from_hex(str(content_hex))
            self.served(str(office), content_id, str(device), int(chunk_index), now)
            self._chunks[(str(office), content_id, int(chunk_index))].served_at = (
                now - elapsed - float(age)
            )
