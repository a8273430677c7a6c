"""Peers whose process died: our requests to them end at once, and they wait.

When the network answers a datagram we sent a peer with ICMP port unreachable
(``PeerPortClosed``, RFC 1122 §4.1.3.3), nothing listens at its data port: its process
died, and every request we had made of it died with it. Nothing else would end them
soon: a request whose chunk was halfway through waits for data that never comes (the
transfer engine's idle timeout, 5 s of silence, and none at all once a restarted
process at that address talks to us again), its chunk asked of nobody else until the
endgame finds the request late. In the simulator's churned cells those requests held
back 33 chunk-seconds after the killed clients came back (cell 12, seed 1).

So the requests end now, their chunks go back to the picker (asked of other holders at
once), and the peer is asked nothing for ``HOLD`` seconds, or until discovery hears from
it again (a restarted process searches at once). A source address can be forged, an
ICMP error too: one costs the requests it ends (asked again) and a peer left aside for
at most ``HOLD``; the table is bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from shoal.client.download import Download
from shoal.client.partials import Partials
from shoal.protocol.transfer import Address, Mode, TransferEngine

HOLD = 1.0
"""Seconds a peer whose port was found closed is asked nothing, unless discovery hears
from it first: one request, and one ICMP error, a second to a process that stays dead."""
MAX_CLOSED = 256
"""Peers remembered at once (forged errors cannot grow the table beyond this)."""


class ClosedPorts:
    """Peers whose port was found closed, and until when they are left aside."""

    def __init__(self) -> None:
        self._until: OrderedDict[Address, float] = OrderedDict()

    def closed(
        self,
        peer: Address,
        downloads: Iterable[Download],
        engines: dict[Mode, TransferEngine],
        server: Callable[[Mode], Address],
        partials: Partials,
        now: float,
    ) -> int:
        """``peer``'s port is closed: end our requests to it (not to the server, whose
        restart the lease handles; what each held of its chunk is kept in ``partials``,
        to be resumed from whoever is asked next) and leave it aside. Returns how many
        ended."""
        self._until[peer] = now + HOLD
        self._until.move_to_end(peer)
        while len(self._until) > MAX_CLOSED:
            self._until.popitem(last=False)
        ended = 0
        for download in downloads:
            if download.picker is None or peer == server(download.mode):
                continue
            ended_requests = download.end_requests_to(peer, engines[download.mode], partials, now)
            for chunk_index in ended_requests:
                download.picker.failed(chunk_index, peer)
                ended += 1
            download.picker.busy(peer, now + HOLD)
        return ended

    def heard(self, peer: Address, downloads: Iterable[Download], now: float) -> None:
        """Discovery heard from ``peer``: if it was left aside, it is asked again now."""
        if self._until.pop(peer, 0.0) <= now:
            return
        for download in downloads:
            if download.picker is not None:
                download.picker.busy(peer, now)
