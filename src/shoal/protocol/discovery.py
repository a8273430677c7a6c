"""Discovery: which peers of my office hold which chunks of a content.

Theory of operation
-------------------
A client that wants a content *searches* for it: every ``query_interval`` seconds it
sends ``WHO_HAS(content ID)``, by broadcast on its subnet (Default offices) or by
unicast to the peers the server listed (WiFi offices). Only the content ID travels,
never a name. A client holding any verified chunk of that content answers the asker
by unicast with ``HAVE``: its chunk bitmap. An answer becomes a ``PeerAvailable``
event; the agent feeds it to the chunk picker.

Bitmaps go stale while the office downloads, so besides the periodic re-query a holder
*pushes* a fresh ``HAVE`` to every peer that asked about the content in the last
``interest_seconds`` when it gains chunks, at most once per ``push_interval``. A unicast
search adds every peer that asks it for the same content to its list and asks it back,
so two peers that found each other in one direction only still hear of each other's
chunks.

Answers from addresses outside ``scope`` (the office's subnets) are dropped and
counted: peers outside a client's office are never used. Datagrams from our own
addresses (a broadcast comes back to its sender) are ignored. A query in a protocol
version we do not speak gets an explicit ``VERSION_ERROR``; other malformed datagrams
are counted and dropped. All state is bounded.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import (
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    Have,
    VersionError,
    WhoHas,
    decode_datagram,
    encode_datagram,
)

Address = tuple[str, int]
MAX_INTERESTED_PEERS = 1024
MAX_SEARCHES = 256
MAX_EVENTS = 4096


@dataclass(frozen=True, slots=True)
class PeerAvailable:
    """``peer`` (its IP) holds ``chunks`` of ``content_id``; it answered from ``port``
    (the discovery port it runs on, which tells its data ports: main or alternative)."""

    peer: str
    content_id: ContentId
    chunks: ChunkSet
    port: int = 0


@dataclass(frozen=True, slots=True)
class PeerVersionRejected:
    """A peer answered our query with a version error: it speaks ``min..max`` only."""

    peer: str
    min_version: int
    max_version: int


DiscoveryEvent = PeerAvailable | PeerVersionRejected


@dataclass(slots=True)
class DiscoveryCounters:
    queries_sent: int = 0
    queries_answered: int = 0
    answers_received: int = 0
    pushes_sent: int = 0
    out_of_scope: int = 0
    own_datagrams: int = 0
    wrong_magic: int = 0
    unsupported_version: int = 0
    malformed: int = 0
    unexpected: int = 0
    events_dropped: int = 0


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    port: int
    broadcast_address: str
    scope: tuple[str, ...]
    local_addresses: tuple[str, ...] = ()
    extra_broadcast_ports: tuple[int, ...] = ()
    """Also broadcast queries to these ports (peers running on the alternative ports)."""
    query_interval: float = 1.0
    push_interval: float = 0.02
    interest_seconds: float = 5.0


@dataclass(slots=True)
class _Search:
    unicast_peers: tuple[str, ...] | None
    next_query: float
    query_id: int


@dataclass(slots=True)
class _Holding:
    chunks: ChunkSet
    push_due: float | None = None
    interested: dict[Address, float] = field(default_factory=dict)


class DiscoveryMachine:
    """Sans-I/O discovery for one client, bound to the discovery port."""

    def __init__(self, config: DiscoveryConfig, now: float) -> None:
        self.config = config
        self.counters = DiscoveryCounters()
        self._scope = [ipaddress.ip_network(subnet, strict=False) for subnet in config.scope]
        self._local = set(config.local_addresses)
        self._listed_peers: set[str] = set()
        self._searches: dict[ContentId, _Search] = {}
        self._holdings: dict[ContentId, _Holding] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[DiscoveryEvent] = deque()
        self._next_query_id = 1
        self._now = now

    # ----------------------------------------------------------- user calls

    def search(
        self, content_id: ContentId, now: float, unicast_peers: Iterable[str] | None = None
    ) -> None:
        """Look for holders of ``content_id`` now and every ``query_interval``.

        With ``unicast_peers`` (WiFi offices) the query goes to those peers only;
        calling again replaces the list.
        """
        peers = tuple(unicast_peers) if unicast_peers is not None else None
        if peers is not None:
            self._listed_peers.update(peers[:MAX_INTERESTED_PEERS])  # the server vouches
        search = self._searches.get(content_id)
        if search is None:
            if len(self._searches) >= MAX_SEARCHES:
                raise ValueError(f"at most {MAX_SEARCHES} searches at once")
            search = self._searches[content_id] = _Search(peers, now, self._next_query_id)
            self._next_query_id = (self._next_query_id + 1) & 0xFFFFFFFF
        search.unicast_peers = peers
        search.next_query = min(search.next_query, now)
        self._run_due(now)

    def stop_search(self, content_id: ContentId) -> None:
        self._searches.pop(content_id, None)

    def set_holding(self, content_id: ContentId, chunks: ChunkSet, now: float) -> None:
        """What we hold of ``content_id`` (replaces; an empty set stops answering)."""
        holding = self._holdings.get(content_id)
        if not chunks:
            if holding is not None:
                holding.chunks = ChunkSet(0)  # stop answering, keep the interest
            return
        if holding is None:
            self._holdings[content_id] = _Holding(chunks.copy())
            return
        holding.chunks = chunks.copy()
        self._schedule_push(holding, now)

    def chunk_added(
        self, content_id: ContentId, chunk_index: int, chunk_count: int, now: float
    ) -> None:
        """We verified one more chunk: interested peers hear of it soon."""
        holding = self._holdings.get(content_id)
        if holding is None:
            holding = self._holdings[content_id] = _Holding(ChunkSet(chunk_count))
        elif holding.chunks.count != chunk_count:
            holding.chunks = ChunkSet(chunk_count)  # interest recorded before our first chunk
        holding.chunks.add(chunk_index)
        self._schedule_push(holding, now)

    def _schedule_push(self, holding: _Holding, now: float) -> None:
        if holding.interested and holding.push_due is None:
            holding.push_due = now + self.config.push_interval

    # -------------------------------------------------------------- driving

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        counters = self.counters
        peer_ip = addr[0]
        if peer_ip in self._local:
            counters.own_datagrams += 1
            return
        try:
            message = decode_datagram(data)
        except WrongMagic:
            counters.wrong_magic += 1
            return
        except UnsupportedProtocolVersion:
            counters.unsupported_version += 1
            reply = VersionError(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION)
            self._outbox.append((encode_datagram(reply), addr))
            return
        except MalformedDatagram:
            counters.malformed += 1
            return
        if not self._in_scope(peer_ip):
            counters.out_of_scope += 1
            return
        if isinstance(message, WhoHas):
            self._on_who_has(message, addr, now)
        elif isinstance(message, Have):
            counters.answers_received += 1
            if message.content_id in self._searches:
                self._emit(PeerAvailable(peer_ip, message.content_id, message.chunks, addr[1]))
        elif isinstance(message, VersionError):
            self._emit(PeerVersionRejected(peer_ip, message.min_version, message.max_version))
        else:
            counters.unexpected += 1

    def _on_who_has(self, message: WhoHas, addr: Address, now: float) -> None:
        holding = self._holdings.get(message.content_id)
        search = self._searches.get(message.content_id)
        if holding is None and search is not None:
            # We want it too: remember the asker, so our first chunk reaches it at once.
            holding = self._holdings[message.content_id] = _Holding(ChunkSet(0))
        if search is not None and search.unicast_peers is not None:
            self._ask_back(message.content_id, search, addr[0])
        if holding is None:
            return
        if len(holding.interested) >= MAX_INTERESTED_PEERS:
            self._forget_stale_interest(holding, now)
        if len(holding.interested) < MAX_INTERESTED_PEERS:
            holding.interested[(addr[0], addr[1])] = now
        if not holding.chunks:
            return
        self.counters.queries_answered += 1
        self._outbox.append(
            (encode_datagram(Have(message.query_id, message.content_id, holding.chunks)), addr)
        )

    def _ask_back(self, content_id: ContentId, search: _Search, peer_ip: str) -> None:
        """A unicast search learns the peers that ask for the same content.

        The server's peer lists are snapshots: a peer that registered after ours was
        taken is missing from it, yet it may become the office's first holder. Asking it
        back at once registers our interest there, so its chunks are pushed to us.
        """
        assert search.unicast_peers is not None
        if peer_ip in search.unicast_peers or len(search.unicast_peers) >= MAX_INTERESTED_PEERS:
            return
        search.unicast_peers = (*search.unicast_peers, peer_ip)
        query = encode_datagram(WhoHas(search.query_id, content_id))
        self._outbox.append((query, (peer_ip, self.config.port)))

    def _forget_stale_interest(self, holding: _Holding, now: float) -> None:
        horizon = now - self.config.interest_seconds
        for peer in [peer for peer, seen in holding.interested.items() if seen < horizon]:
            del holding.interested[peer]

    def handle_timer(self, now: float) -> None:
        self._run_due(now)

    def _run_due(self, now: float) -> None:
        self._now = now
        port = self.config.port
        for content_id, search in self._searches.items():
            if search.next_query > now:
                continue
            query = encode_datagram(WhoHas(search.query_id, content_id))
            if search.unicast_peers is None:
                for broadcast_port in (port, *self.config.extra_broadcast_ports):
                    self._outbox.append((query, (self.config.broadcast_address, broadcast_port)))
            else:
                self._outbox.extend((query, (peer, port)) for peer in search.unicast_peers)
            self.counters.queries_sent += 1
            search.next_query = now + self.config.query_interval
        for content_id, holding in self._holdings.items():
            if holding.push_due is None or holding.push_due > now:
                continue
            holding.push_due = None
            self._forget_stale_interest(holding, now)
            answer = encode_datagram(Have(0, content_id, holding.chunks))
            for peer_address in holding.interested:
                self._outbox.append((answer, peer_address))
                self.counters.pushes_sent += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def get_timer(self) -> float | None:
        deadlines = [search.next_query for search in self._searches.values()]
        deadlines += [h.push_due for h in self._holdings.values() if h.push_due is not None]
        return min(deadlines, default=None)

    def next_event(self) -> DiscoveryEvent | None:
        return self._events.popleft() if self._events else None

    # -------------------------------------------------------------- helpers

    def _emit(self, event: DiscoveryEvent) -> None:
        if len(self._events) >= MAX_EVENTS:
            self.counters.events_dropped += 1
            return
        self._events.append(event)

    def _in_scope(self, peer_ip: str) -> bool:
        if peer_ip in self._listed_peers:
            return True
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in network for network in self._scope)
