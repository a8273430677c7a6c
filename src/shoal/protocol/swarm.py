"""Chunk scheduling for a swarm download: which chunk to ask which peer for next.

Theory of operation
-------------------
The picker knows which chunks we hold, which chunks each peer holds, and which requests
are in flight. It is not responsible for sending or receiving anything (Kraken's piece
request manager): the agent asks ``next_requests()`` for ``(peer, chunk_index)`` pairs,
sends them, and reports back with ``received``/``failed``.

* **Rarest first**: a peer is asked for the missing chunk that the fewest peers hold,
  ties broken by a fixed random order, so that chunks spread through the office fast
  and no chunk ends up held by a single peer.
* **Per-peer pipeline**: at most ``max_in_flight_per_peer`` requests to one peer.
* **Endgame**: once every missing chunk is in flight, an idle peer may be asked for a
  chunk requested elsewhere (at most ``endgame_duplicates`` requests per chunk), with
  ``now``, once every request for it is late (``shoal.protocol.endgame``; ``next_wake``
  says when), or for our last missing chunk while none of its requests is served. The
  first to be served wins (``started`` says whose requests to cancel), else the first
  to arrive (``received``): eager duplicates cost a slow-uplink office 10% of its uploads.
* **Bans**: a peer that served a bad chunk is banned for this content: its requests
  are released and it is never asked again.
* **Origin of last resort**: a peer added with ``origin=True`` (the P2P server, over
  the WAN) is asked only for chunks that no other peer holds, and never for endgame
  duplicates, so the office's WAN link carries each chunk once. Rarity counts only
  the other peers.
* **Fan-out limit** (``shoal.protocol.fanout``): a chunk that one peer alone holds when
  we first see it is fetched from that source by ``fanout`` downloaders (more if fast)
  (with ``me`` given and ``now`` passed to ``next_requests``); the others take it from
  them, or from the source ``fanout_grace`` seconds later (sooner from a fast source).
* **Measured rates** (with ``rate_horizon`` and ``now``): each peer's delivery rate is
  an estimate (chunks per second, from request to arrival, so it counts the time a
  request waits in the peer's upload queue). Peers are filled in the order of when a
  new request would arrive, ``(in flight + 1) / rate`` (an unmeasured peer first, to
  measure it), and a peer is sent at most what it delivers in ``rate_horizon`` seconds,
  plus one (two while unmeasured; never more than ``max_in_flight_per_peer``): a peer
  on a slow uplink is not given requests it would serve late.
* **Empty-handed first** (with ``me`` and ``peer_searching``): a client that holds
  nothing yet has an idle uplink, and one that holds a chunk already uploads it. The
  fan-out designation ranks the downloaders known to search for the content
  (``peer_searching``: a discovery query in the last ``searching_horizon`` seconds)
  that hold nothing first: beside the downloader the hash designates, the top-ranked
  empty-handed downloader fetches a new chunk from its source, so the source gives the
  office a new uploader first instead of only a second chunk to a busy one.
* **Busy peers**: a peer that refused BUSY (its upload slots are full, see
  ``shoal.protocol.serving.UploadSlots``) is not asked again until ``busy(peer, until)``
  says; its chunks go to other holders meanwhile. One that refused BUSY while it held
  a request of ours is asked one chunk at a time until ``one_turn(peer, until)`` says
  (``shoal.protocol.busy_peers``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable
from itertools import compress
from typing import Generic, TypeVar

from shoal.core.chunkset import ChunkSet
from shoal.protocol.busy_peers import BusyPeers
from shoal.protocol.chunk_masks import asks_alike, chunk_bits, mask_of
from shoal.protocol.endgame import RequestTimes
from shoal.protocol.fanout import FanoutLimit, fanout_score

Peer = TypeVar("Peer", bound=Hashable)

MAX_SEARCHING_ONLY = 256
"""Peers a picker keeps that it knows only from their discovery queries (forged sources
cannot grow the table beyond this; an office's real downloaders fit many times over)."""


class ChunkPicker(Generic[Peer]):
    """Rarest-first chunk scheduling over a set of peers, with an endgame."""

    def __init__(
        self,
        have: ChunkSet,
        *,
        max_in_flight_per_peer: int = 4,
        endgame_duplicates: int = 2,
        endgame_after: float | None = 3.0,
        rng: random.Random | None = None,
        me: Peer | None = None,
        key: Callable[[Peer], str] = repr,
        fanout: int = 1,
        fanout_grace: float = 0.5,
        rate_horizon: float | None = None,
        searching_horizon: float = 2.5,
    ) -> None:
        self._have = have.copy()
        self._count = have.count
        self.max_in_flight_per_peer = max_in_flight_per_peer
        self.endgame_duplicates = endgame_duplicates
        self.endgame_after = endgame_after
        tie_break = list(range(self._count))
        (rng or random.Random(0)).shuffle(tie_break)
        self._tie_break = tie_break
        self._availability: dict[Peer, ChunkSet] = {}
        self._holders = [0] * self._count
        self._in_flight: dict[int, set[Peer]] = {}
        self._peer_load: dict[Peer, int] = {}
        self._banned: set[Peer] = set()
        self._origins: set[Peer] = set()
        self._order: list[int] | None = None
        self._me = me
        self._key = key
        self._fanout = FanoutLimit(fanout, fanout_grace, self._downloaders_ahead, self.rate)
        self.rate_horizon = rate_horizon
        self._times: RequestTimes[Peer] = RequestTimes()  # rates, lateness (``endgame``)
        self._rates = self._times.rates  # chunks per second, smoothed
        self.busy_peers: BusyPeers[Peer] = BusyPeers()  # BUSY refusals
        self.searching_horizon = searching_horizon
        self._searching: dict[Peer, float] = {}  # peer -> when it last searched
        self._last_chunk = False  # one chunk missing (set by ``next_requests``)
        self._woken = float("-inf")  # the last ``wake``: lateness deadlines after it count
        # The same sets as bit masks (chunk i is bit ``_width - 1 - i``, the order of
        # ``ChunkSet.to_bytes``), kept in step at every change: a peer with nothing we
        # could ask is skipped in one AND instead of a scan of every missing chunk, and
        # an availability answer adjusts the holder counts of the chunks that changed.
        self._width = (self._count + 7) // 8 * 8
        self._chunk_bits = chunk_bits(self._count)
        self._unheld = 0  # how many chunks at the head of ``_order`` nobody else holds
        self._have_mask = mask_of(self._have)
        self._all_mask = mask_of(ChunkSet.full(self._count))
        self._availability_mask: dict[Peer, int] = {}
        self._in_flight_mask = 0
        # Decisions are pure functions of the state above and of time: the agent asks
        # after every datagram, and most asks find nothing. ``_idle_until``: the last
        # ask left nothing to ask (not cut by its limit, its picks only shrank what is
        # askable) and nothing changed since, so until then (``next_wake``: the first
        # deadline that time alone passes) every ask finds nothing. ``_changed`` drops
        # it (and ``next_wake``'s answer) at every change but a known peer's HAVE (same
        # role) that changes no ask (``asks_alike``; issue 10: such HAVEs ran a full ask).
        self._idle_until: float | None = None
        self._wake_at: float | _Unknown | None = _UNKNOWN

    def _changed(self) -> None:
        """The state changed: the cached answers no longer hold."""
        self._idle_until = None
        self._wake_at = _UNKNOWN

    # ------------------------------------------------------------ knowledge

    @property
    def have(self) -> ChunkSet:
        return self._have.copy()

    @property
    def complete(self) -> bool:
        return self._have.complete

    @property
    def peers(self) -> list[Peer]:
        return list(self._availability)

    def holders(self, chunk_index: int) -> int:
        return self._holders[chunk_index]  # peers known to hold it, origins aside

    def in_flight(self, peer: Peer) -> int:
        return self._peer_load.get(peer, 0)

    def rate(self, peer: Peer) -> float | None:
        """The peer's measured delivery rate in chunks per second (None: unmeasured)."""
        return self._rates.get(peer)

    def busy(self, peer: Peer, until: float) -> None:
        """``peer`` refused BUSY: ask it nothing before ``until`` (``next_wake``)."""
        if peer in self._availability:
            self._changed()
            self.busy_peers.wait(peer, until)

    def one_turn(self, peer: Peer, until: float) -> None:
        """``peer`` refused BUSY while it holds a request of ours (one turn per
        downloader while contended): ask it one chunk at a time before ``until``."""
        if peer in self._availability:
            self._changed()
            self.busy_peers.one_at_a_time(peer, until)

    def peer_searching(self, peer: Peer, now: float) -> None:
        """``peer`` searches for this content (a discovery query): a downloader of the
        office, which may hold nothing yet (``peer_has`` says what it holds).

        A query's source address is not proven, so peers known only from queries are
        bounded (``MAX_SEARCHING_ONLY``): a flood of forged queries costs a bounded table,
        and a searcher that fell silent for ``searching_horizon`` makes room."""
        if peer in self._banned or peer in self._origins:
            return
        if peer not in self._availability and not self._room_for_searcher(now):
            return
        if peer in self._searching and peer in self._availability:
            # Only the time of its search moves, read by a fan-out choice; an ask that
            # found nothing kept every choice it needed, so it would find nothing again
            # (an office's queries reach every downloader: this ran the whole picker).
            self._searching[peer] = now
            return
        self._changed()
        self._searching[peer] = now
        if peer not in self._availability:
            self._availability[peer] = ChunkSet(self._count)
            self._availability_mask[peer] = 0
            self._peer_load.setdefault(peer, 0)
            self._fanout.downloaders_changed()  # the downloaders changed

    def _room_for_searcher(self, now: float) -> bool:
        """Is there room for one more peer known only from its queries (it announced
        nothing, so it was never asked for a chunk)? Searchers silent for
        ``searching_horizon`` are forgotten first."""
        only_searching = [p for p in self._searching if not self._availability_mask.get(p, 0)]
        if len(only_searching) < MAX_SEARCHING_ONLY:
            return True
        stale = [p for p in only_searching if now - self._searching[p] > self.searching_horizon]
        for peer in stale:
            self.peer_gone(peer)
        return len(only_searching) - len(stale) < MAX_SEARCHING_ONLY

    def _empty_handed(self, peer: Peer, now: float) -> bool:
        """Does ``peer`` search for the content and hold nothing of it (as far as we know)?"""
        searched = self._searching.get(peer)
        return (
            searched is not None
            and now - searched <= self.searching_horizon
            and not self._availability_mask.get(peer, 0)
        )

    def peer_has(self, peer: Peer, availability: ChunkSet, *, origin: bool = False) -> None:
        """Replace what ``peer`` is known to hold (an availability answer); ``origin``: it is
        the origin of last resort (see the module docstring)."""
        if peer in self._banned:
            return
        if availability.count != self._count:
            raise ValueError(f"availability for {availability.count} chunks, not {self._count}")
        known, mask = peer in self._availability, mask_of(availability)
        if not known:
            self._fanout.downloaders_changed()  # the downloaders changed
        before = self._availability_mask.get(peer, 0)
        alike = asks_alike(before, mask, self._have_mask, self._in_flight_mask, self._all_mask)
        if not known or origin != (peer in self._origins) or not alike:
            self._changed()  # not for chunks we hold or ask already (see ``_idle_until``)
        counted = known and peer not in self._origins
        self._count_holders(before if counted else 0, 0 if origin else mask)
        self._origins.discard(peer)
        self._availability.pop(peer, None)  # to the end: ties among peers go by this order
        self._availability[peer] = availability.copy()
        self._availability_mask[peer] = mask
        self._peer_load.setdefault(peer, 0)
        if origin:
            self._origins.add(peer)

    def _count_holders(self, before: int, after: int) -> None:
        """A counted peer held ``before`` and now holds ``after`` (masks): only the
        chunks that changed move their holder counts (and the candidate order)."""
        holders, top = self._holders, self._width - 1
        gained, lost = after & ~before, before & ~after
        for changed, step in ((gained, 1), (lost, -1)):
            while changed:
                lowest = changed & -changed
                holders[top - lowest.bit_length() + 1] += step
                changed ^= lowest
        if (gained | lost) & ~self._have_mask:  # held chunks are not in the order
            self._order = None

    def peer_has_chunk(self, peer: Peer, chunk_index: int) -> None:
        """``peer`` announced one more chunk (it finished it)."""
        if peer in self._banned:
            return
        availability = self._availability.get(peer)
        if availability is None:
            self._changed()
            availability = self._availability[peer] = ChunkSet(self._count)
            self._availability_mask[peer] = 0
            self._peer_load.setdefault(peer, 0)
            self._fanout.downloaders_changed()
        if availability.add(chunk_index):
            if not self._have_mask & self._chunk_bits[chunk_index]:
                self._changed()  # not for a chunk we hold (see ``_idle_until``)
            self._availability_mask[peer] |= self._chunk_bits[chunk_index]
            if peer not in self._origins:
                self._holders[chunk_index] += 1
                if not self._have_mask & self._chunk_bits[chunk_index]:
                    self._order = None

    def peer_gone(self, peer: Peer) -> list[int]:
        """Forget ``peer``; return the chunk indexes whose requests to it are released."""
        self._changed()
        previous = self._availability.pop(peer, None)
        mask = self._availability_mask.pop(peer, 0)
        if previous is not None and peer not in self._origins:
            self._count_holders(mask, 0)
        self._origins.discard(peer)
        self._fanout.downloaders_changed()
        released = [index for index, peers in self._in_flight.items() if peer in peers]
        for chunk_index in released:
            self._release(chunk_index, peer)
        self._peer_load.pop(peer, None)
        self._times.forget_peer(peer, self._origins)
        self.busy_peers.forget(peer)
        self._searching.pop(peer, None)
        return released

    def ban(self, peer: Peer) -> list[int]:
        """Never ask ``peer`` again for this content (it served a bad chunk)."""
        self._banned.add(peer)
        return self.peer_gone(peer)

    # ------------------------------------------------------------- outcomes

    def received(self, chunk_index: int, peer: Peer, now: float | None = None) -> list[Peer]:
        """A verified chunk arrived (with ``now``, the time since it was asked is a sample
        of ``peer``'s rate); return the peers whose duplicate requests to cancel."""
        self._changed()
        others = self._in_flight.pop(chunk_index, set())
        self._in_flight_mask &= ~self._chunk_bits[chunk_index]
        for holder in others:
            self._peer_load[holder] = self._peer_load.get(holder, 1) - 1
            asked_at = self._times.forget(chunk_index, holder)
            if holder == peer and asked_at is not None and now is not None:
                self._times.sample(peer, 1.0 / max(now - asked_at, 1e-3), self._origins)
        self.busy_peers.delivered(peer)
        others.discard(peer)
        if self._have.add(chunk_index):
            self._have_mask |= self._chunk_bits[chunk_index]
            if self._order is not None:  # still in rank order without it
                self._order.remove(chunk_index)
                if not self._holders[chunk_index]:
                    self._unheld -= 1
        self._fanout.forget(chunk_index)
        return sorted(others, key=repr)

    def started(self, chunk_index: int, peer: Peer, now: float) -> list[Peer]:
        """``peer`` began to serve ``chunk_index``: return the peers whose requests for
        it, not started (in an uploader's line: no byte wasted), are released to cancel."""
        asked = self._in_flight.get(chunk_index)
        if asked is None or peer not in asked:
            return []
        self._changed()  # its lateness counts from now
        self._times.started(chunk_index, peer, now)
        losers = [other for other in asked if not self._times.has_started(chunk_index, other)]
        for loser in losers:
            self._release(chunk_index, loser)
        return sorted(losers, key=repr)

    def lost(self, chunk_index: int) -> None:
        """A chunk ``received`` earlier could not be kept (its write failed): want it again."""
        if chunk_index in self._have:
            self._changed()
            self._have.discard(chunk_index)
            self._have_mask &= ~self._chunk_bits[chunk_index]
            self._order = None

    def failed(self, chunk_index: int, peer: Peer) -> None:
        """A request timed out or was refused: ask someone (maybe the same peer) again."""
        self._release(chunk_index, peer)

    def _release(self, chunk_index: int, peer: Peer) -> None:
        peers = self._in_flight.get(chunk_index)
        if peers is None or peer not in peers:
            return
        self._changed()
        peers.discard(peer)
        if not peers:
            del self._in_flight[chunk_index]
            self._in_flight_mask &= ~self._chunk_bits[chunk_index]
        self._peer_load[peer] = self._peer_load.get(peer, 1) - 1
        self._times.forget(chunk_index, peer)

    # ------------------------------------------------------------- decisions

    def _candidate_order(self) -> list[int]:
        """The missing chunks, rarest first, ties by the fixed random order; the first
        ``_unheld`` of them no counted peer holds (only an origin may be asked those)."""
        if self._order is None:
            count, holders, have = self._count, self._holders, self._have_mask
            # Chunk i's bit is character i of the mask in binary: the missing ones in C.
            missing = list(compress(range(count), map("0".__eq__, f"{have:0{self._width}b}")))
            # (holders, tie break) as one int: the tie break is a permutation of range(count)
            rank = [held * count + tie for held, tie in zip(holders, self._tie_break, strict=True)]
            missing.sort(key=rank.__getitem__)
            unheld = 0
            for index in missing:
                if holders[index]:
                    break
                unheld += 1
            self._order, self._unheld = missing, unheld
        return self._order

    def nothing_to_ask(self, now: float) -> bool:
        """Will ``next_requests(limit, now)`` ask nothing? True when nothing changed
        since an ask left nothing to ask and no deadline passed since (a cheap look: the
        agent asks after every input); False when that is not known."""
        return self._idle_until is not None and now < self._idle_until

    def next_requests(
        self, limit: int | None = None, now: float | None = None
    ) -> list[tuple[Peer, int]]:
        """Requests to send now, filling every peer's pipeline (at most ``limit``);
        without ``now`` the fan-out limit is off."""
        if now is not None and self.nothing_to_ask(now):
            return []
        self._changed()
        requests: list[tuple[Peer, int]] = []
        if now is not None:
            self.wake(now)
        if limit is not None and limit <= 0:
            return requests
        missing = self._all_mask & ~self._have_mask
        self._last_chunk = missing.bit_count() == 1  # duplicated at once (endgame)
        unasked = missing & ~self._in_flight_mask  # before the endgame: their holders only
        peers = self._peers_in_order(now, unasked or missing)
        order = self._candidate_order() if peers else []
        for duplicates_allowed in (1, self.endgame_duplicates):
            if duplicates_allowed > 1 and unasked:  # the first pass asked the last ones
                peers = self._peers_in_order(now, missing, requests)
                order = self._candidate_order()
            for peer, cap in peers:
                if self._peer_load[peer] >= cap:
                    continue
                # What ``_pick`` could choose at all: missing chunks the peer holds, not
                # yet asked of anyone unless duplicates are allowed (never of an origin).
                askable = self._availability_mask[peer] & missing
                if duplicates_allowed == 1 or peer in self._origins:
                    askable &= ~self._in_flight_mask
                if not askable:
                    continue
                while self._peer_load[peer] < cap:
                    chunk_index = self._pick(order, askable, peer, duplicates_allowed, now)
                    if chunk_index is None:
                        break
                    self._in_flight.setdefault(chunk_index, set()).add(peer)
                    self._in_flight_mask |= self._chunk_bits[chunk_index]
                    self._peer_load[peer] += 1
                    if now is not None:
                        self._times.asked(chunk_index, peer, now)
                    requests.append((peer, chunk_index))
                    if limit is not None and len(requests) >= limit:
                        return requests
            if missing & ~self._in_flight_mask:
                break  # not endgame yet: unrequested chunks remain, nobody idle has them
        if now is not None:  # not cut by ``limit``: nothing is left to ask now
            wake_at = self.next_wake()
            self._idle_until = float("inf") if wake_at is None else wake_at
        return requests

    def _peers_in_order(
        self, now: float | None, missing: int, asked: list[tuple[Peer, int]] | None = None
    ) -> list[tuple[Peer, int]]:
        """Peers to fill, with their caps, the soonest to deliver a new request
        first (see the module docstring), by their loads before ``asked`` (this ask's
        first pass); peers that said BUSY wait their turn. Only peers that could be asked
        something (below their cap, holding a chunk in ``missing``): the others would be
        skipped, and a stable sort of the rest keeps their order."""
        load, masks = self._peer_load, self._availability_mask
        load = Counter(load) - Counter(peer for peer, _index in asked) if asked else load
        timed = self.rate_horizon is not None and now is not None
        busy = self.busy_peers.waiting if timed else None
        one_turn = self.busy_peers.one_turn if timed else None
        # A peer's cap: what it delivers in ``rate_horizon``, plus one (two while
        # unmeasured; an origin's is the pipeline). Inline: this runs over every peer.
        most, horizon = self.max_in_flight_per_peer, self.rate_horizon
        origins, rates = self._origins, self._rates
        askable = []
        for peer in self._availability:  # its order, not the masks': ties go by it
            if not masks[peer] & missing:
                continue
            if busy and busy.get(peer, now) > now:  # type: ignore[operator]
                continue
            if horizon is None or peer in origins:
                cap = most
            else:
                rate = rates.get(peer)
                cap = max(1, min(most, 2 if rate is None else 1 + int(rate * horizon)))
                if one_turn and one_turn.get(peer, now) > now:  # type: ignore[operator]
                    cap = 1
            if load[peer] < cap:
                askable.append((peer, cap))
        if not timed:
            askable.sort(key=lambda pair: load.get(pair[0], 0))
            return askable
        askable.sort(
            key=lambda pair: (
                (load.get(pair[0], 0) + 1) / rates[pair[0]] if pair[0] in rates else 0.0,
                load.get(pair[0], 0),
            ),
        )
        return askable

    def _pick(
        self,
        order: list[int],
        askable: int,
        peer: Peer,
        duplicates_allowed: int,
        now: float | None,
    ) -> int | None:
        """The first chunk of ``order`` among ``askable`` (a mask of missing chunks the
        peer holds) that the rules let us ask of ``peer``.

        An origin is asked only chunks nobody else holds: the head of ``order``
        (``_unheld`` chunks); any other peer holds only chunks that someone (itself)
        holds, so its search starts after that head."""
        bits, in_flight, unheld = self._chunk_bits, self._in_flight, self._unheld
        holders, limit = self._holders, (self._fanout if self._me is not None else None)
        if peer in self._origins:
            for position in range(unheld):
                chunk_index = order[position]
                if askable & bits[chunk_index] and chunk_index not in in_flight:
                    return chunk_index
            return None
        for position in range(unheld, len(order)):
            chunk_index = order[position]
            if not askable & bits[chunk_index]:
                continue
            asked = in_flight.get(chunk_index)
            if asked is None:
                if now is None or limit is None:
                    return chunk_index
                if limit.may_fetch(chunk_index, peer, holders[chunk_index] == 1, now):
                    return chunk_index
                continue
            if peer not in asked and len(asked) < duplicates_allowed:
                late = (self._late_at(chunk_index, holder) for holder in asked)
                # Our last chunk at once, unless it is being served (it ends sooner so).
                eager = self._last_chunk and not any(
                    self._times.has_started(chunk_index, holder) for holder in asked
                )
                if now is None or eager or all(d is None or d <= now for d in late):
                    return chunk_index
        return None

    def _late_at(self, chunk_index: int, holder: Peer) -> float | None:
        """When the request for ``chunk_index`` to ``holder`` is late (None: already;
        ``shoal.protocol.endgame``)."""
        origin = holder in self._origins
        return self._times.late_at(chunk_index, holder, self.endgame_after, origin)

    # ------------------------------------------------------------- fan-out

    def _downloaders_ahead(self, chunk_index: int, holder: Peer, now: float) -> int:
        """How many downloaders rank above us for fetching the chunk from ``holder``:
        those whose key ranks higher, among those that answered discovery; 0 when we
        hold nothing and fewer than ``fanout`` downloaders known to hold nothing rank
        above us (empty-handed first, see the module docstring).

        Both, not the empty-handed alone: a downloader known only from its search may be
        gone (a killed client searches no more but is not known to be gone), and a chunk
        designated to it alone would wait ``fanout_grace`` for nobody.
        """
        assert self._me is not None
        mine = fanout_score(chunk_index, self._key(self._me))
        empty_handed_me = not self._have_mask
        higher, higher_empty = 0, 0
        for other in self._availability:
            if other == holder or other in self._origins or other in self._banned:
                continue
            if fanout_score(chunk_index, self._key(other)) <= mine:
                continue
            empty_handed = not self._availability_mask[other]
            if not (empty_handed and other in self._searching):
                higher += 1  # it answered discovery (or was given with ``peer_has``)
            if empty_handed and (other not in self._searching or self._empty_handed(other, now)):
                higher_empty += 1
        return 0 if empty_handed_me and higher_empty < self._fanout.fanout else higher

    def next_wake(self) -> float | None:
        """When a held-back chunk may be asked of its source by anyone, a busy peer
        asked again or a contended one more than one chunk at a time (``wake``), or,
        in the endgame, a chunk's requests are all late.

        Only a deadline that ``wake`` has not passed yet: once a chunk's grace is over,
        whether it can be asked depends on its source's free request slots, which change
        on ``received``/``failed``, not with time (a deadline returned after that would
        fire again and again at the same instant).
        """
        if not isinstance(self._wake_at, _Unknown):
            return self._wake_at
        waiting = self._fanout.waiting(self._have_mask | self._in_flight_mask, self._chunk_bits)
        waiting.extend(self.busy_peers.deadlines())
        if self._in_flight and not (self._all_mask & ~self._have_mask & ~self._in_flight_mask):
            for chunk_index, asked in self._in_flight.items():  # endgame: when late
                dues = [self._late_at(chunk_index, holder) for holder in asked]
                due = max((d for d in dues if d is not None), default=self._woken)
                if len(asked) < self.endgame_duplicates and due > self._woken:
                    waiting.append(due)
        self._wake_at = min(waiting, default=None)
        return self._wake_at

    def wake(self, now: float) -> None:
        """Release the held-back chunks whose grace is over, and the busy peers whose
        wait is over (``next_wake`` moves on)."""
        chunks_due = self._fanout.release_due(now)
        peers_due = self.busy_peers.release_due(now)
        self._woken = max(self._woken, now)
        if chunks_due or peers_due or (isinstance(self._wake_at, float) and self._wake_at <= now):
            self._changed()


class _Unknown:
    """A cached answer not computed yet (None is an answer of ``next_wake``)."""


_UNKNOWN = _Unknown()
