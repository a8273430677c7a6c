"""Discovery: which peers of my office hold which chunks of a content.

Theory of operation
-------------------
A client that wants a content *searches* for it: every ``query_interval`` seconds it
sends ``WHO_HAS(content ID)``, by broadcast on its subnet (Default offices) or by
unicast to the peers the server listed (WiFi offices). Only the content ID travels,
never a name. A client holding any verified chunk of that content answers the asker
by unicast with ``HAVE``: its chunk bitmap. An answer becomes a ``PeerAvailable``
event; the agent feeds it to the chunk picker. A client holding nothing answers no
query, so a query for a content we search too becomes a ``PeerSearching`` event: the
picker then knows the downloaders of the office that hold nothing yet, and serves them
first (``ChunkPicker.peer_searching``).

Bitmaps go stale while the office downloads, so besides the periodic re-query a holder
*pushes* a fresh ``HAVE`` when it gains chunks, at most once per ``push_interval``, to
peers that asked about the content in the last ``interest_seconds``: at once after a
quiet spell (a chunk relayed through the office waits for no interval at each hop),
later chunks gathered into the next round; a chunk that fewer than ``rare_holders``
other peers of the office are known to hold (the chunk picker's count) is pushed at
once all the same: those that lack it have few sources, and the office's last chunks
wait for each hop's news (the relay's tail). A unicast search
adds every peer that asks it for the same content to its list and asks it back, so two
peers that found each other in one direction only still hear of each other's chunks.

*Bounded traffic in a large office.* Offices hold up to a hundred devices or more; had
every holder told every asker of every chunk, discovery would cost N^2 datagrams per
chunk (a broadcast storm). So (BitTorrent's bounded peer sets, mDNS's answer
suppression, RFC 6762 §7):

* a push round reaches at most ``neighbours`` of the interested peers that do not know
  what we hold yet (proven addresses first, drawn at random): O(neighbours) per chunk;
* nobody is told again what it already knows (``Holding.knows``: the same holding, told within
  ``interest_seconds``), so the echo of a token, or a refresh query, costs no answer;
* a query is answered by about ``answers_per_query`` holders: each answers with
  probability ``answers_per_query`` / (holders it knows of at proven addresses), a query
  proving its address always, and so does a complete holder that received chunks from
  the server (it pushes no more, and may be its last chunks' only holder:
  ``Holding.answers``). The asker's interest is recorded by every holder all the same;
* a search queries every ``query_interval`` while it holds nothing or has heard of no
  holder, then every ``settled_query_interval`` (jittered): pushes keep it informed, its
  query only keeps its interest alive. A settled unicast search asks ``neighbours``
  listed peers, not all;
* a chunk new in the office (``chunk_added(new_in_office=True)``: from the server) is
  pushed first to the downloaders the chunk picker's fan-out designates to fetch it
  from us (``fanout_score``): the others wait for them, so they must hear of it.

Forged answers cannot make a holder answer fewer queries: only holders whose address is
proven (they echoed our token) count (``Holding.answers``). A known asker's new query ID
(``Holding.asked_with``: it restarted) makes us answer it and ask it back at most once
per ``settled_query_interval``, and within 3x the query (below): forged from a peer's
address, fresh IDs reflect nothing more.

Answers from addresses outside ``scope`` (the office's subnets) are dropped and
counted: peers outside a client's office are never used. Datagrams from our own
addresses (a broadcast comes back to its sender) are ignored. A query in a protocol
version we do not speak gets an explicit ``VERSION_ERROR``; other malformed datagrams
are counted and dropped. All state is bounded.

*Address validation* (RFC 9000 §8.1). A source address can be forged, and a HAVE for
a large package is 35x a bare query, pushed again and again: without care, one forged
query would reflect hundreds of kilobytes to a victim. So nothing is sent to an address
that has not proven it receives there beyond 3x the bytes received from it (its
*credit*). The proof: every HAVE to an unproven address carries our token for it (a
keyed hash, ``AddressValidator``); the asker echoes it at once in a unicast WHO_HAS,
and from then on (for ``token_lifetime``) that address gets pushes and our periodic
queries without limit. A *reply* (an answer, an echo, a query back, a version error),
though, is within 3x the datagram it answers whoever sent it: a proven peer's address
can be forged too (``AddressCredit``). Queries are padded so that the answer fits: a
WHO_HAS is at least half the HAVE it asks for (``who_has_padding``), so the answer and
one query back (a unicast search asks the asker back) fit 3x. A datagram that would
exceed its budget is not sent, and counted. A unicast search queries the peers that
asked it (not listed by the server) within their credit until they prove their
address: a forged query must not enlist a victim for every later round.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.core.address import Address
from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.discovery_counters import DiscoveryCounters
from shoal.protocol.discovery_credit import MAX_TRACKED_ADDRESSES, AddressCredit
from shoal.protocol.discovery_events import DiscoveryEvent as DiscoveryEvent
from shoal.protocol.discovery_events import PeerAvailable as PeerAvailable
from shoal.protocol.discovery_events import PeerSearching as PeerSearching
from shoal.protocol.discovery_events import PeerVersionRejected as PeerVersionRejected
from shoal.protocol.holding import MAX_PEERS, Holding
from shoal.protocol.validation import DEFAULT_TOKEN_LIFETIME, AddressValidator
from shoal.wire.decoding import VERSION_ERROR_REPLY, Undecodable, decode_counted
from shoal.wire.messages import (
    HAVE_HEADER_SIZE,
    NO_TOKEN,
    Have,
    VersionError,
    WhoHas,
    encode_datagram,
    who_has_padding,
)
from shoal.wire.repeats import decode_remembered, encode_have

MAX_INTERESTED_PEERS = MAX_PEERS
MAX_SEARCHES = 256
MAX_EVENTS = 4096


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    port: int
    broadcast_address: str
    scope: tuple[str, ...]
    local_addresses: tuple[str, ...] = ()
    extra_broadcast_ports: tuple[int, ...] = ()
    """Also broadcast queries to these ports (peers running on the alternative ports)."""
    query_interval: float = 1.0
    """Between two queries of a search while it holds nothing or has heard of no holder."""
    settled_query_interval: float = 5.0
    """Between two queries once it holds a chunk and has heard of a holder: pushes keep
    it informed, the query only keeps its interest alive (``interest_seconds``)."""
    push_interval: float = 0.02
    rare_holders: int = 3
    """A chunk gained that fewer other peers are known to hold is pushed at once, not
    gathered into the next round (``chunk_added``'s ``holders``): at most one push round
    per chunk gained, so O(neighbours) datagrams per chunk as before."""
    interest_seconds: float = 12.0
    """How long a query registers interest (pushes); beyond two settled intervals."""
    answers_per_query: int = 4
    """Answers a query draws, about: each holder answers it with probability this over
    the holders it knows of (a query proving its address is always answered)."""
    fanout: int = 1
    """The chunk picker's fan-out (``ChunkPicker``'s ``fanout``): see ``shoal.protocol.fanout``."""
    neighbours: int = 8
    """Peers a push round reaches at most (drawn afresh each round from the interested
    ones), and peers a unicast search asks per settled query: O(neighbours) datagrams
    per chunk gained, whatever the office's size."""
    #: How long a token, and a validation proven with it, lasts (RFC 9000 §8.1.3).
    token_lifetime: float = DEFAULT_TOKEN_LIFETIME
    #: The first query ID; the client's is from the clock, so a restarted one's are new.
    first_query_id: int = 1


@dataclass(slots=True)
class _Search:
    unicast_peers: tuple[str, ...] | None
    next_query: float
    query_id: int
    #: Zero bytes each query carries, so that an unvalidated holder may answer it.
    padding: int = 0
    #: A holder answered with chunks: the search may settle (``settled_query_interval``).
    heard_of_holder: bool = False
    #: Before the next query while no holder answered (doubles up to the settled one).
    unanswered_interval: float = 0.0


class DiscoveryMachine:
    """Sans-I/O discovery for one client, bound to the discovery port."""

    def __init__(
        self,
        config: DiscoveryConfig,
        now: float,
        *,
        token_key: bytes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        #: Draws push targets and unicast query targets (seeded in the simulator).
        self._rng = rng or random.Random()
        self.counters = DiscoveryCounters()
        self._validator = AddressValidator(token_key, config.token_lifetime)
        #: Who proved their address; what the others, and any reply, may still receive.
        self._credit = AddressCredit(config.token_lifetime)
        #: Peer -> (its token for our address, when we last echoed it).
        self._tokens: OrderedDict[Address, tuple[bytes, float]] = OrderedDict()
        self._scope = [ipaddress.ip_network(subnet, strict=False) for subnet in config.scope]
        self._subnet_members: dict[str, bool] = {}
        self._local = set(config.local_addresses)
        self._listed_peers: set[str] = set()
        self._searches: dict[ContentId, _Search] = {}
        self._holdings: dict[ContentId, Holding] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[DiscoveryEvent] = deque()
        self._next_query_id = config.first_query_id
        self._now = now

    # ----------------------------------------------------------- user calls

    def search(
        self,
        content_id: ContentId,
        now: float,
        unicast_peers: Iterable[str] | None = None,
        chunk_count: int | None = None,
    ) -> None:
        """Look for holders of ``content_id`` now and every ``query_interval``.

        With ``unicast_peers`` (WiFi offices) the query goes to those peers only;
        calling again replaces the list. ``chunk_count`` (from the manifest) sizes the
        query's padding to the answer; unknown, it is padded for the largest answer.
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
        search.padding = who_has_padding(chunk_count)
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
                holding.replace(ChunkSet(0))  # stop answering, keep the interest
            return
        if holding is None:
            self._holdings[content_id] = Holding(chunks.copy())
            return
        holding.replace(chunks.copy())
        self._schedule_push(holding, now)

    def chunk_added(
        self,
        content_id: ContentId,
        chunk_index: int,
        chunk_count: int,
        now: float,
        *,
        new_in_office: bool = False,
        holders: int | None = None,
    ) -> None:
        """We verified one more chunk: interested peers hear of it soon. ``new_in_office``
        (it came over the WAN): the downloaders the chunk picker's fan-out designates to
        fetch it from us first (``fanout_score``) are among them. ``holders``: how many
        other peers of the office we know to hold it (None: not known); below
        ``rare_holders``, they hear of it at once."""
        holding = self._holdings.get(content_id)
        if holding is None:
            holding = self._holdings[content_id] = Holding(ChunkSet(chunk_count))
        elif holding.chunks.count != chunk_count:
            holding.chunks = ChunkSet(chunk_count)  # interest recorded before our first chunk
        if holding.add(chunk_index, new_in_office=new_in_office):
            self._schedule_push(holding, now)
            rare = holders is not None and holders < self.config.rare_holders
            if rare and holding.push_due is not None:
                holding.push_due = now

    def chunk_lost(self, content_id: ContentId, chunk_index: int, now: float) -> None:
        """A chunk we announced is not held after all (its write failed): interested
        peers hear what we hold now, without it."""
        holding = self._holdings.get(content_id)
        if holding is not None and chunk_index in holding.chunks:
            holding.chunks.discard(chunk_index)
            self._schedule_push(holding, now)

    def holder_proven(self, content_id: ContentId, peer_ip: str) -> None:
        """``peer_ip`` sent us a chunk of ``content_id`` that verified: it answered our
        unicast request with the content's bytes, a real holder at a real address. It
        counts in how often we answer (``Holding.answers``), as one that echoed our token."""
        holding = self._holdings.get(content_id)
        if holding is not None:
            holding.note_holder(peer_ip, proven=True)

    def _schedule_push(self, holding: Holding, now: float) -> None:
        if holding.interested and holding.push_due is None:  # at once, then rate-limited
            holding.push_due = max(now, holding.pushed_at + self.config.push_interval)

    # -------------------------------------------------------------- driving

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        counters = self.counters
        peer_ip = addr[0]
        if peer_ip in self._local:
            counters.own_datagrams += 1
            return
        self._credit.earn(addr, len(data))
        message = decode_counted(decode_remembered, data, counters)
        if message is Undecodable.UNSUPPORTED_VERSION:
            self._send(VERSION_ERROR_REPLY, addr, now, reply=True)  # 6 bytes for at least 4
            return
        if isinstance(message, Undecodable):
            return
        if not self._in_scope(peer_ip):
            counters.out_of_scope += 1
            return
        if isinstance(message, WhoHas):
            self._on_who_has(message, addr, now)
        elif isinstance(message, Have):
            counters.answers_received += 1
            search = self._searches.get(message.content_id)
            if search is not None:
                if message.chunks:
                    search.heard_of_holder = True
                self._emit(PeerAvailable(peer_ip, message.content_id, message.chunks, addr[1]))
                self._note_answerer(message.content_id, addr, now)
                if message.chunks:
                    proven = self._credit.is_validated(addr, now)
                    self._holdings[message.content_id].note_holder(peer_ip, proven=proven)
                if message.token != NO_TOKEN:
                    self._echo(message, search, addr, now)
        elif isinstance(message, VersionError):
            self._emit(PeerVersionRejected(peer_ip, message.min_version, message.max_version))
        else:
            counters.unexpected += 1

    def _on_who_has(self, message: WhoHas, addr: Address, now: float) -> None:
        proven = message.token != NO_TOKEN and self._validator.is_valid(message.token, addr, now)
        if proven:
            # The asker echoed what we sent only to this address: it receives here.
            self.counters.addresses_validated += 1
            self._credit.prove(addr, now)
            for known in self._holdings.values():  # a few contents
                known.address_proven(addr[0])
        holding = self._holdings.get(message.content_id)
        search = self._searches.get(message.content_id)
        if holding is None and search is not None:
            # We want it too: remember the asker, so our first chunk reaches it at once.
            holding = self._holdings[message.content_id] = Holding(ChunkSet(0))
        anew = False  # its search is new (it restarted): it forgot what we told it
        if holding is not None:
            self._note_interest(holding, addr, now)
            anew = holding.asked_with(
                addr, message.query_id, now, self.config.settled_query_interval
            )
            if (
                holding.chunks
                and not holding.knows(addr, now, self.config.interest_seconds)
                and (proven or self._answers(holding))
                and self._tell(holding, message.query_id, message.content_id, addr, now, reply=True)
            ):
                self.counters.queries_answered += 1
        if search is not None:
            self._emit(PeerSearching(addr[0], message.content_id, addr[1]))
            if search.unicast_peers is not None:
                self._ask_back(message.content_id, search, addr[0], now)
            elif anew:  # it restarted: our interest recorded there, it pushes to us
                self._send(self._query(search, message.content_id, addr), addr, now, reply=True)

    def _answers(self, holding: Holding) -> bool:
        if holding.answers(self.config.answers_per_query, self._rng):
            return True
        self.counters.answers_suppressed += 1
        return False

    def _tell(
        self,
        holding: Holding,
        query_id: int,
        content_id: ContentId,
        addr: Address,
        now: float,
        *,
        reply: bool,
    ) -> bool:
        """A HAVE of what we hold to ``addr``: an answer (``reply``), or a push
        (``query_id`` 0)."""
        if not self._send_have(query_id, content_id, holding.chunks, addr, now, reply=reply):
            return False
        holding.told(addr, now)
        return True

    def _note_answerer(self, content_id: ContentId, addr: Address, now: float) -> None:
        """A peer that answered our search holds the content and may still be fetching
        it: it hears of our chunks as it would had it asked us. Its own queries may have
        come before our search began (then we recorded no interest): without this, our
        first chunk would reach it only at its next periodic query, and until then it
        would take us for a downloader holding nothing (``PeerSearching``)."""
        holding = self._holdings.get(content_id)
        if holding is None:
            holding = self._holdings[content_id] = Holding(ChunkSet(0))
        if addr not in holding.interested:
            self._note_interest(holding, addr, now)

    def _note_interest(self, holding: Holding, addr: Address, now: float) -> None:
        """Remember that ``addr`` asked, for pushes; a full table keeps live interest, and
        a proven address takes the place of an unproven one."""
        interested = holding.interested
        if addr not in interested and len(interested) >= MAX_INTERESTED_PEERS:
            self._forget_stale_interest(holding, now)
            if len(interested) >= MAX_INTERESTED_PEERS:
                victim = None
                validated = self._credit.is_validated
                if validated(addr, now):
                    victim = next((peer for peer in interested if not validated(peer, now)), None)
                if victim is None:
                    self.counters.interest_dropped += 1
                    return
                holding.forget(victim)
        interested[addr] = now

    def _send_have(
        self,
        query_id: int,
        content_id: ContentId,
        chunks: ChunkSet,
        addr: Address,
        now: float,
        *,
        reply: bool,
    ) -> bool:
        """A HAVE to ``addr``, with our token for it until it has proven its address."""
        size = HAVE_HEADER_SIZE + (chunks.count + 7) // 8
        if not self._credit.fits(addr, size, now, reply=reply):
            # Over its credit: not even encoded (forged interest must not cost CPU either).
            self.counters.amplification_limited += 1
            return False
        validated = self._credit.is_validated(addr, now)
        token = NO_TOKEN if validated else self._validator.token(addr, now)
        have = encode_have(query_id, content_id, chunks, token)
        return self._send(have, addr, now, reply=reply)

    def _echo(self, message: Have, search: _Search, addr: Address, now: float) -> None:
        """Echo a holder's token in a unicast query: we prove we receive at our address,
        and its pushes reach us from then on (at most one echo per ``query_interval``)."""
        known = self._tokens.get(addr)
        if (
            known is not None
            and known[0] == message.token
            and now - known[1] < self.config.query_interval
        ):
            return
        self._tokens[addr] = (message.token, now)
        self._tokens.move_to_end(addr)
        if len(self._tokens) > MAX_TRACKED_ADDRESSES:
            self._tokens.popitem(last=False)
        # Padded for the HAVE it echoes, no more: within 3x of it (a forged HAVE of one
        # byte of bitmap draws no echo padded for a 10 GiB package).
        padding = min(search.padding, who_has_padding(message.chunks.count))
        query = WhoHas(search.query_id, message.content_id, message.token, padding)
        if self._send(encode_datagram(query), addr, now, reply=True):
            self.counters.echoes_sent += 1

    def _ask_back(self, content_id: ContentId, search: _Search, peer_ip: str, now: float) -> None:
        """A unicast search learns the peers that ask for the same content.

        The server's peer lists are snapshots: a peer that registered after ours was
        taken is missing from it, yet it may become the office's first holder. Asking it
        back at once registers our interest there, so its chunks are pushed to us.
        """
        assert search.unicast_peers is not None
        if peer_ip in search.unicast_peers or len(search.unicast_peers) >= MAX_INTERESTED_PEERS:
            return
        search.unicast_peers = (*search.unicast_peers, peer_ip)
        peer = (peer_ip, self.config.port)
        self._send(self._query(search, content_id, peer), peer, now, reply=True)

    def _forget_stale_interest(self, holding: Holding, now: float) -> None:
        horizon = now - self.config.interest_seconds
        for peer in [peer for peer, seen in holding.interested.items() if seen < horizon]:
            holding.forget(peer)

    def handle_timer(self, now: float) -> None:
        self._run_due(now)

    def _run_due(self, now: float) -> None:
        self._now = now
        port = self.config.port
        for content_id, search in self._searches.items():
            if search.next_query > now:
                continue
            holding = self._holdings.get(content_id)
            settled = search.heard_of_holder and holding is not None and bool(holding.chunks)
            # Our own periodic queries: to the broadcast address, or to the peers the
            # server listed (it vouches for them), never in answer to anyone.
            if search.unicast_peers is None:
                query = encode_datagram(
                    WhoHas(search.query_id, content_id, NO_TOKEN, search.padding)
                )
                for broadcast_port in (port, *self.config.extra_broadcast_ports):
                    self._outbox.append((query, (self.config.broadcast_address, broadcast_port)))
            else:
                peers = search.unicast_peers
                if settled and len(peers) > self.config.neighbours:
                    peers = tuple(self._rng.sample(peers, self.config.neighbours))
                for peer_ip in peers:
                    peer = (peer_ip, port)
                    query = self._query(search, content_id, peer)
                    if peer_ip in self._listed_peers:  # the server vouches for it
                        self._outbox.append((query, peer))
                    else:  # one that asked us (``_ask_back``): its source may be forged
                        self._send(query, peer, now, reply=False)
            self.counters.queries_sent += 1
            search.next_query = now + self._next_interval(search, settled)
        for content_id, holding in self._holdings.items():
            if holding.push_due is None or holding.push_due > now:
                continue
            holding.push_due, holding.pushed_at = None, now
            self._forget_stale_interest(holding, now)
            targets = holding.push_targets(
                self.config.neighbours,
                self.config.fanout,
                self.config.interest_seconds,
                now,
                self._rng,
                lambda peer: self._credit.is_validated(peer, now),
            )
            for peer_address in targets:
                if self._tell(holding, 0, content_id, peer_address, now, reply=False):
                    self.counters.pushes_sent += 1

    def _next_interval(self, search: _Search, settled: bool) -> float:
        """Settled: ``settled_query_interval`` (jittered, so an office's queries spread).
        Holding nothing while holders answer: ``query_interval``, so that they know us
        for empty-handed (``ChunkPicker.peer_searching``). Nobody answered yet: doubling
        from ``query_interval``: a whole office that waits for its first WAN chunk does
        not broadcast N^2 queries a second, and the first holder pushes to us anyway
        (our interest is recorded)."""
        config = self.config
        if settled:
            return self._rng.uniform(0.75, 1.25) * config.settled_query_interval
        if search.heard_of_holder:
            return config.query_interval
        search.unanswered_interval = min(
            max(2 * search.unanswered_interval, config.query_interval),
            config.settled_query_interval,
        )
        return search.unanswered_interval

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def get_timer(self) -> float | None:
        deadlines = [search.next_query for search in self._searches.values()]
        deadlines += [h.push_due for h in self._holdings.values() if h.push_due is not None]
        return min(deadlines, default=None)

    def next_event(self) -> DiscoveryEvent | None:
        return self._events.popleft() if self._events else None

    def has_events(self) -> bool:
        return bool(self._events)

    # -------------------------------------------------------------- helpers

    def _emit(self, event: DiscoveryEvent) -> None:
        if len(self._events) >= MAX_EVENTS:
            self.counters.events_dropped += 1
            return
        self._events.append(event)

    def _query(self, search: _Search, content_id: ContentId, peer: Address) -> bytes:
        """A unicast query to ``peer``, echoing the token it gave us, if any."""
        known = self._tokens.get(peer)
        token = known[0] if known is not None else NO_TOKEN
        return encode_datagram(WhoHas(search.query_id, content_id, token, search.padding))

    def _send(self, datagram: bytes, addr: Address, now: float, *, reply: bool) -> bool:
        """Queue a datagram to ``addr`` (``AddressCredit.spend``): a ``reply`` within 3x
        the datagram it answers, proven or not; anything within the credit of an unproven
        address. False, and counted, when it does not fit."""
        if not self._credit.spend(addr, len(datagram), now, reply=reply):
            self.counters.amplification_limited += 1
            return False
        self._outbox.append((datagram, addr))
        return True

    def address_proven(self, peer_ip: str, now: float) -> bool:
        """Does ``peer_ip`` receive at its address: listed by the server, or it echoed our
        token on a discovery port (``TransferEngine.trust_peers``)?"""
        if peer_ip in self._listed_peers:
            return True
        ports = (self.config.port, *self.config.extra_broadcast_ports)
        return any(self._credit.is_validated((peer_ip, port), now) for port in ports)

    def in_scope(self, peer_ip: str) -> bool:
        """Is ``peer_ip`` a peer of this office (its subnets, or listed by the server)?"""
        return self._in_scope(peer_ip)

    def _in_scope(self, peer_ip: str) -> bool:
        if peer_ip in self._listed_peers:
            return True
        known = self._subnet_members.get(peer_ip)
        if known is None:
            # Parsed once per address (every datagram asks): bounded, forgotten wholesale.
            if len(self._subnet_members) >= MAX_TRACKED_ADDRESSES:
                self._subnet_members.clear()
            try:
                address = ipaddress.ip_address(peer_ip)
            except ValueError:
                known = False
            else:
                known = any(address in network for network in self._scope)
            self._subnet_members[peer_ip] = known
        return known
