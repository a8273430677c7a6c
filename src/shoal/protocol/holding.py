"""What one client holds of a content, who asked about it, and whom to tell: the
bounded-neighbour policy of discovery (``shoal.protocol.discovery``'s theory of
operation says why).

A ``Holding`` is pure bookkeeping, no I/O: ``DiscoveryMachine`` asks it whom a push
round reaches (``push_targets``), whether to answer a query (``answers``) and whether a
peer already knows what we hold (``knows``), and sends the datagrams itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.core.address import Address
from shoal.core.chunkset import ChunkSet
from shoal.protocol.fanout import fanout_score

#: Peers remembered per content: interested ones, and holders we heard of.
MAX_PEERS = 1024
#: Chunks new in the office whose designated fetchers one push round seeks out.
MAX_FRESH_CHUNKS = 8


@dataclass(slots=True)
class Holding:
    chunks: ChunkSet
    push_due: float | None = None
    pushed_at: float = float("-inf")  # the last push round (one per ``push_interval``)
    #: Peer -> when it last asked (pushes go to those that asked recently).
    interested: dict[Address, float] = field(default_factory=dict)
    #: Peers (IPs) that told us they hold chunks of it (forged ones among them, maybe).
    holders: set[str] = field(default_factory=set)
    #: Of those, the ones whose address is proven (they echoed our token): how many
    #: answer a query (``answers``). A forged source proves nothing, so forged HAVEs
    #: cannot make us think the office full of holders and answer nobody.
    proven_holders: set[str] = field(default_factory=set)
    #: Bumped whenever ``chunks`` changes; interested peer -> the version we last told
    #: it and when (a peer is not told again what it knows, see ``knows``).
    version: int = 0
    informed: dict[Address, tuple[int, float]] = field(default_factory=dict)
    #: Chunks gained since the last push that no peer of the office held (from the
    #: server over the WAN): their designated fetchers must hear of them.
    fresh: list[int] = field(default_factory=list)
    #: We received a chunk from the server over the WAN: once we hold every chunk, we
    #: answer every query (``answers``).
    origin_copy: bool = False
    #: Interested peer -> the query ID it last asked with (a new one: a new search).
    query_ids: dict[Address, int] = field(default_factory=dict)
    #: Interested peer -> when a new query ID of it last renewed it (``asked_with``).
    renewed: dict[Address, float] = field(default_factory=dict)

    def replace(self, chunks: ChunkSet) -> None:
        self.chunks = chunks
        self.version += 1

    def add(self, chunk_index: int, *, new_in_office: bool) -> bool:
        """One more chunk held; False if we held it already."""
        if chunk_index in self.chunks:
            return False
        self.chunks.add(chunk_index)
        self.version += 1
        if new_in_office:
            self.origin_copy = True
            if len(self.fresh) < MAX_FRESH_CHUNKS:
                self.fresh.append(chunk_index)
        return True

    def note_holder(self, peer_ip: str, *, proven: bool) -> None:
        """``peer_ip`` told us it holds chunks; ``proven``: from a proven address."""
        if len(self.holders) < MAX_PEERS:
            self.holders.add(peer_ip)
        if proven and len(self.proven_holders) < MAX_PEERS:
            self.proven_holders.add(peer_ip)

    def address_proven(self, peer_ip: str) -> None:
        """``peer_ip`` echoed our token: a holder we heard of at that address is real."""
        if peer_ip in self.holders and len(self.proven_holders) < MAX_PEERS:
            self.proven_holders.add(peer_ip)

    def told(self, addr: Address, now: float) -> None:
        """We sent ``addr`` a HAVE of what we hold now."""
        if addr in self.interested:  # bounded with it
            self.informed[addr] = (self.version, now)

    def forget(self, addr: Address) -> None:
        del self.interested[addr]
        self.informed.pop(addr, None)
        self.query_ids.pop(addr, None)
        self.renewed.pop(addr, None)

    def asked_with(self, addr: Address, query_id: int, now: float, interval: float) -> bool:
        """``addr`` asked with ``query_id``: True if it asked before with another (its
        search started anew, in a restarted process: what we told it is forgotten, it is
        answered and asked back). At most once per ``interval`` per address: the source
        can be forged, and fresh IDs from a peer's address must not make us answer and
        ask that peer again and again. A new ID refused so is not recorded, so the
        peer's real new search renews once the interval has passed."""
        if addr not in self.interested:  # bounded with it
            return False
        before = self.query_ids.setdefault(addr, query_id)
        if before == query_id:
            return False
        renewed = self.renewed.get(addr)
        if renewed is not None and now - renewed < interval:
            return False
        self.query_ids[addr] = query_id
        self.renewed[addr] = now
        self.informed.pop(addr, None)
        return True

    def knows(self, addr: Address, now: float, window: float) -> bool:
        """Did we tell ``addr`` what we hold now, within ``window`` seconds? Then an
        answer or a push would repeat it (the echo of a token we just pushed, a refresh
        query). Within that window only: a datagram may have been lost."""
        told = self.informed.get(addr)
        return told is not None and told[0] == self.version and now - told[1] < window

    def answers(self, target: int, rng: random.Random) -> bool:
        """Do we answer a query? With probability ``target`` / (proven holders we know
        of, us included): the asker expects about ``target`` answers however many hold
        the content (we know of no more holders than there are, so never fewer), not one
        per holder. As in mDNS's answer suppression (RFC 6762 §7), what one asker
        needs is a few answers; the others record its interest and push to it. Only
        proven holders count: forged HAVEs from a thousand addresses would otherwise
        make every real holder answer almost nothing (and the askers stall).

        A holder that received chunks from the server (``origin_copy``) and holds them
        all answers every query: it may be the office's only holder of its last WAN
        chunks, which it pushed to ``neighbours`` peers only and, complete, never pushes
        again, and the server's delivery ledger refuses them to the others for a lease
        period only. In the simulator's estate-faults-100m (seed 2) two downloaders that
        took over its stripes heard of none of its last 3 chunks within that time and
        fetched them over the WAN again (1.068 F). Such holders are few (one per stripe)."""
        if self.origin_copy and self.chunks.complete:
            return True
        known = len(self.proven_holders) + 1
        return known <= target or rng.random() * known < target

    def push_targets(
        self,
        neighbours: int,
        fanout: int,
        window: float,
        now: float,
        rng: random.Random,
        proven: Callable[[Address], bool],
    ) -> list[Address]:
        """Up to ``neighbours`` of the interested peers that do not know what we hold,
        beside the designated fetchers of the fresh chunks (``designated``):
        O(neighbours) datagrams per round whatever the office's size. Proven addresses
        first (drawn at random among them), so the pushes settle on a few neighbours
        each (as BitTorrent's peer sets) and each pair proves its address once, not
        every pair of the office; the others at random fill the rest."""
        fresh, self.fresh = self.fresh, []
        targets = [peer for peer in self.interested if not self.knows(peer, now, window)]
        if len(targets) <= neighbours:
            return targets
        designated = self.designated(fresh, targets, fanout)
        rest = [peer for peer in targets if peer not in designated]
        if len(rest) <= neighbours:
            return designated + rest
        sure = [peer for peer in rest if proven(peer)]
        if len(sure) >= neighbours:
            return designated + rng.sample(sure, neighbours)
        others = [peer for peer in rest if not proven(peer)]
        return designated + sure + rng.sample(others, neighbours - len(sure))

    def designated(self, fresh: list[int], targets: list[Address], fanout: int) -> list[Address]:
        """For each chunk new in the office, the ``fanout`` targets that rank highest for
        it (``fanout_score`` of their IP, the picker's key), and as many of those not
        known to hold anything (the picker's empty-handed first): the downloaders that
        fetch it from us first, while the others wait for them (``ChunkPicker``'s
        fan-out limit). Unaware of it, they would leave it waiting ``fanout_grace``."""
        chosen: list[Address] = []
        for chunk_index in fresh:
            ranked = sorted(targets, key=lambda peer: -fanout_score(chunk_index, peer[0]))
            empty_handed = [peer for peer in ranked if peer[0] not in self.holders]
            for peer in (*ranked[:fanout], *empty_handed[:fanout]):
                if peer not in chosen:
                    chosen.append(peer)
        return chosen
