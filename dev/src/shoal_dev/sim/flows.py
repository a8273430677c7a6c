"""Flow-level transfers: chunk transfers as flows sharing links max-min fairly.

Theory of operation
-------------------
The packet-level simulator moves every DATA and ACK datagram of every chunk through
every link: right for the transport, far too slow for an estate (10,000 devices, a
100 MiB package). Here the *transfer engine* is replaced, and nothing else: each client
and the server keep their real ``AgentCore`` / ``ServerNode`` (check-in, discovery,
rendezvous lease, chunk picker, fan-out, upload slots, bans, licence seats), their
control and discovery machines stay on ``SimNetwork``'s packet links, and their two
data ports are bound to a ``FlowEngine`` instead of a ``TransferEngine``. A
``FlowEngine`` takes the same calls (``request_chunk``, ``send_chunk``,
``refuse_chunk``, ``cancel``, ``abandon_peer``, ``has_answered``) and reports the same
events (``ChunkRequested``, ``ChunkReceived``, ``ChunkCorrupted``, ``ChunkRefused``,
``ChunkDelivered``, ``RequestCancelled``, ``TransferTimedOut``), so a change to a swarm
rule changes the flow simulation with it: nothing of the swarm is copied here.

*Messages* (a request, a refusal, a cancel) reach the other engine after the path's
one-way delay (the sum of its links' propagation delays); they are not queued behind
data. *A chunk* is a flow from the sender's host to the requester's host along the same
links a datagram takes (sender uplink; between offices, the sender office's WAN uplink
and the receiver office's WAN downlink; receiver downlink), carrying the chunk's bytes
plus each datagram's DATA, UDP and IP headers. Its bytes are counted on each link when
the flow ends (finished or aborted), so ``Link.bytes_sent`` means what it means in
packet mode. A finished flow arrives one path delay later, is hashed against the
chunk's SHA-256 (``HashMemo``: the real check, memoised per bytes object since every
holder shares the package's chunk objects) and becomes ``ChunkReceived`` or
``ChunkCorrupted``; the sender hears ``ChunkDelivered`` another path delay later.

*One chunk at a time per receiver.* As the real sender's flow sends its oldest chunk
first (``protocol/transfer/sender.py``), an engine runs one flow per (receiver, mode)
and queues the other chunks served to it; the next starts when the previous one's last
byte has left. A receiver holding several requests therefore gets its first chunk
after one chunk time, and a cut transfer (a restart, a crash) loses one partly sent
chunk, not all of them.

*Rates* are max-min fair (progressive filling) and recomputed only where something
changed: when a flow starts or ends, for the flows on that flow's links. Links beyond
those keep their other flows' rates as they are (their capacity minus those rates is
what the affected flows may use there, never less than an equal share of the link), so
a change in one office never touches another office's flows. A link of infinite rate
(an unshaped origin) couples nothing. A flow has one finish event queued at a time: a
re-rating that slows it (a flow joins its link) queues nothing, the event moves itself
on when it fires early; one that speeds it up queues an earlier one.

*Faults.* ``FlowFabric.kill(host)`` ends the host's flows, and its peers learn of it
as real engines do. One receiving a chunk from it hears nothing more: ``TransferTimedOut``
after ``idle_timeout``. One whose request it had not answered repeats the request (at
its repeat interval, which doubles from the request's arrival, at most ``max_rto``),
and one sending to it sends DATA: either meets the host's ICMP port unreachable
(``SimNetwork.answer_unreachable``: the engine's ``abandon_peer``, the application's
``PeerPortClosed``), or, if the process is back by then, the new process, which serves
the repeated request. A request sent to a dead process meets the closed port the same
way. (An ICMP error the host's rate limit drops leaves the request to time out.) A link
whose rate is set to 0 (an outage, ``set_link_rate``) stalls its flows; a flow stalled
for ``idle_timeout`` is abandoned on both sides, as a real transfer would be.

What the model leaves out: slow start and loss recovery (a flow runs at its fair share
at once), queueing delay, and competition between control datagrams and data.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Container, Sequence
from dataclasses import dataclass, field, replace

from shoal.core.address import Address
from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    ChunkStarted,
    Event,
    LocalProtocolError,
    Mode,
    PeerPortClosed,
    RefusalReason,
    RequestCancelled,
    Role,
    TooManyDownloads,
    TransferConfig,
    TransferCounters,
    TransferTimedOut,
)
from shoal.wire.messages import DATA_HEADER_SIZE
from shoal_dev.sim.network import UDP_IP_OVERHEAD, Host, Link, SimNetwork

#: A flow whose path has no finite link still takes this long per byte (1 Tbit/s).
UNSHAPED_RATE = 125e9
#: Rates closer than this (relative) are the same: no new finish event.
_RATE_EPSILON = 1e-9
#: A CHUNK_REQUEST's payload, about (an ICMP error quotes it): only its size matters.
REQUEST_BYTES = 64


class HashMemo:
    """SHA-256 of bytes objects, each hashed once (kept alive, so its id stays its own).

    Every holder of a package in a flow simulation shares the same chunk objects, so a
    chunk verified by 10,000 devices is hashed once; a lying peer's bytes are another
    object, hashed (and refused) on their own.
    """

    def __init__(self) -> None:
        self._digests: dict[int, tuple[bytes, bytes]] = {}

    def sha256(self, data: bytes) -> bytes:
        known = self._digests.get(id(data))
        if known is not None and known[0] is data:
            return known[1]
        digest = hashlib.sha256(data).digest()
        self._digests[id(data)] = (data, digest)
        return digest


@dataclass(slots=True, eq=False)
class _Download:
    request_id: int
    peer: Address
    content_id: ContentId
    chunk_index: int
    chunk_length: int
    chunk_hash: bytes
    timeout_version: int = 0
    #: A resumed chunk's prefix (whole segments): the request asked for the rest only.
    prefix: bytes = b""
    #: What it held when its sender died or its flow stalled (None: not cut).
    held: bytes | None = None
    #: A resumed chunk's prefix and its flow's bytes, joined once (``received_prefix``).
    joined: bytes | None = None
    #: The flow its chunk is on, from its start (live while ``flow.upload.flow is flow``).
    flow: _Flow | None = None


@dataclass(slots=True, eq=False)
class _Upload:
    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    chunk_length: int
    mode: Mode
    #: Where the request starts in the chunk (a resumed chunk's remainder): the
    #: ``chunk_length`` above is the remainder's.
    offset: int = 0
    #: When the request arrived (a receiver repeats it at an interval that doubles
    #: from then while it is unanswered).
    since: float = 0.0
    #: The chunk's bytes from ``send_chunk`` until its flow starts (queued behind another).
    data: bytes | None = None
    flow: _Flow | None = None


@dataclass(slots=True, eq=False)
class _Flow:
    serial: int
    sender: FlowEngine
    upload: _Upload
    links: tuple[Link, ...]
    data: bytes
    total: float
    remaining: float
    latency: float
    rate: float = 0.0
    updated: float = 0.0
    version: int = 0
    stalled_since: float | None = None
    finish_at: float = math.inf
    """When the last byte leaves at the current rate."""
    check_at: float | None = None
    """When this flow's one live finish event fires (None: none queued): at
    ``finish_at``, or earlier if its rate fell since (the event then moves itself)."""


def whole_segments(sent: int, payload: int, config: TransferConfig) -> int:
    """Payload bytes in the whole segments of a flow's first ``sent`` wire bytes, short
    of the whole ``payload`` (a cut flow: what its receiver holds to resume from)."""
    segment = config.segment_size
    count = min(sent // (segment + DATA_HEADER_SIZE + UDP_IP_OVERHEAD), (payload - 1) // segment)
    return max(count, 0) * segment


def wire_bytes(payload: int, config: TransferConfig) -> int:
    """Bytes a chunk of ``payload`` bytes puts on a link: DATA, UDP and IP headers too."""
    segments = max(1, -(-payload // config.segment_size))
    return payload + segments * (DATA_HEADER_SIZE + UDP_IP_OVERHEAD)


@dataclass(slots=True)
class FabricCounters:
    flows_started: int = 0
    flows_finished: int = 0
    flows_aborted: int = 0
    flows_cancelled: int = 0
    """Flows whose requester had cancelled while their bytes were on the way: cut off
    at the sender when the cancel reached it, or sent whole before it did and dropped."""
    bytes_cancelled: int = 0
    """What those flows had sent (bytes on the wire, counted once, not per link)."""
    recomputations: int = 0
    flows_rated: int = 0
    largest_recomputation: int = 0
    bytes_withdrawn: dict[str, int] = field(default_factory=dict)
    """Per receiver IP: what flows their sender withdrew had sent (bytes on the wire;
    the P2P server ends what it still sends a peer its office banned)."""


class FlowFabric:
    """The flow model over one ``SimNetwork``: engines by address, flows by link."""

    def __init__(
        self,
        network: SimNetwork,
        config: TransferConfig | None = None,
        hashes: HashMemo | None = None,
    ) -> None:
        self.network = network
        self.config = config or TransferConfig()
        self.hashes = hashes or HashMemo()
        self.counters = FabricCounters()
        self.engines: dict[Address, FlowEngine] = {}
        self._ports: dict[str, dict[int, None]] = {}
        self._on_link: dict[int, dict[int, _Flow]] = {}
        self._serial = 0
        self._next_request_id = 1

    # ------------------------------------------------------------------ engines

    def engine(self, host: Host, port: int) -> FlowEngine:
        """A new engine for ``host``'s ``port`` (a restarted process gets a new one)."""
        engine = FlowEngine(self, host, port)
        self.engines[(host.ip, port)] = engine
        self._ports.setdefault(host.ip, {})[port] = None
        return engine

    def request_id(self) -> int:
        self._next_request_id += 1
        return self._next_request_id

    def live_engine(self, address: Address) -> FlowEngine | None:
        engine = self.engines.get(address)
        if engine is None or not engine.host.alive:
            return None
        return engine

    def kill(self, host: Host) -> None:
        """The host's process dies: its flows end, its peers notice after a silence."""
        self.network.kill(host)
        for port in self._ports.get(host.ip, {}):
            engine = self.engines.get((host.ip, port))
            if engine is not None:
                engine.died()

    # ----------------------------------------------------------------- timing

    def path(self, sender: Host, receiver: Host) -> tuple[Link, ...]:
        """The links a datagram from ``sender`` to ``receiver`` crosses (``_route``)."""
        if receiver.office is sender.office:
            return (sender.up, receiver.down)
        return (sender.up, sender.office.wan_up, receiver.office.wan_down, receiver.down)

    def latency(self, sender: Host, receiver: Host) -> float:
        return sum(link.delay for link in self.path(sender, receiver))

    def deliver(self, delay: float, engine: FlowEngine, event: Event) -> None:
        """``event`` reaches ``engine`` after ``delay`` (if its host still runs it)."""

        def arrive() -> None:
            if self.engines.get(engine.address) is engine and engine.host.alive:
                engine.accept(event)

        self.network.at(self.network.now + delay, arrive)

    def carry_request(
        self, requester: FlowEngine, peer: Address, requested: ChunkRequested, wait: float = 0.0
    ) -> None:
        """``requester`` sends ``requested`` to ``peer`` ``wait`` from now (0: a first
        request; later: the repeat of one left unanswered). It reaches the engine that
        ``peer``'s process runs then (a restarted one too), or, with none, the host
        answers ICMP port unreachable, as Linux does for a closed port; should that
        answer be rate-limited, the request times out as a silent one does."""
        host = self.network.hosts.get(peer[0])
        request_id = requested.request_id

        def send() -> None:
            if self.engines.get(requester.address) is not requester:
                return  # the requester's process died: nothing repeats it
            if request_id not in requester._downloads or not requester.host.alive:
                return  # ended meanwhile (a repeat is sent only while unanswered)
            assert host is not None
            self.network.at(self.network.now + self.latency(requester.host, host), arrive)

        def arrive() -> None:
            engine = self.live_engine(peer)
            if engine is not None and requester._tokens.get(peer) is not engine:
                # Without this process's address token the request is answered with a
                # RETRY carrying one, and sent again with it (RFC 9000 §8.1, as the
                # real engines do): a round trip more, once per peer process.
                def retried() -> None:
                    if self.engines.get(requester.address) is requester:
                        requester._tokens[peer] = engine
                        send()

                assert host is not None
                self.network.at(self.network.now + self.latency(host, requester.host), retried)
                return
            if engine is not None:
                engine.accept(requested)
                return
            self.port_closed(peer, requester.address, REQUEST_BYTES)
            download = requester._downloads.get(request_id)
            if download is not None:
                requester._time_out_later(download, self.network.now)

        if host is None:  # no such host: the request goes nowhere
            download = requester._downloads.get(request_id)
            if download is not None:
                requester._time_out_later(download, self.network.now)
            return
        if wait:
            self.network.at(self.network.now + wait, send)
        else:
            send()

    def port_closed(self, closed: Address, source: Address, size: int) -> None:
        """A datagram of ``size`` bytes from ``source`` reached ``closed``, where no
        process listens: its host's ICMP port unreachable goes back to ``source``, whose
        engine on that port then ends its uploads to ``closed`` (``abandon_peer``) and
        its application every request to it (``PeerPortClosed``)."""
        host = self.network.hosts.get(closed[0])
        if host is not None:
            self.network.answer_unreachable(host, closed[1], size, source)

    def data_to_dead(self, sender: FlowEngine, peer: Address) -> None:
        """``sender`` sends DATA to ``peer``, whose process died: unless it runs again
        by the time the first datagram arrives, its port answers ICMP."""
        host = self.network.hosts.get(peer[0])
        if host is None:
            return

        def arrive() -> None:
            if self.live_engine(peer) is None:
                self.port_closed(peer, sender.address, self.config.segment_size)

        self.network.at(self.network.now + self.latency(sender.host, host), arrive)

    # ------------------------------------------------------------------ flows

    def start(self, sender: FlowEngine, upload: _Upload, receiver: Host, data: bytes) -> _Flow:
        self._serial += 1
        links = self.path(sender.host, receiver)
        total = float(wire_bytes(len(data), self.config))
        flow = _Flow(
            self._serial,
            sender,
            upload,
            links,
            data,
            total,
            total,
            sum(link.delay for link in links),
            updated=self.network.now,
        )
        upload.flow = flow
        for link in links:
            self._on_link.setdefault(id(link), {})[flow.serial] = flow
        self.counters.flows_started += 1
        self._recompute(links)
        return flow

    def end(self, flow: _Flow) -> int:
        """Take ``flow`` off its links (finished or aborted) and count its bytes; returns
        how many it sent."""
        now = self.network.now
        sent = flow.total - max(flow.remaining - flow.rate * (now - flow.updated), 0.0)
        flow.remaining = 0.0
        flow.version += 1
        flow.check_at = None  # its queued finish event, if any, is stale now
        for link in flow.links:
            on_link = self._on_link[id(link)]
            del on_link[flow.serial]
            if not on_link:
                del self._on_link[id(link)]
            link.bytes_sent += int(sent)
        flow.upload.flow = None
        self._recompute(flow.links)
        return int(sent)

    def set_link_rate(self, link: Link, rate: float) -> None:
        """Change a link's capacity (0: an outage) and re-share its flows."""
        link.rate = rate
        self._recompute((link,))

    def _recompute(self, changed: tuple[Link, ...]) -> None:
        """Max-min fair rates for the flows on ``changed`` (progressive filling)."""
        affected: dict[int, _Flow] = {}
        for link in changed:
            if math.isfinite(link.rate):
                affected.update(self._on_link.get(id(link), {}))
        if not affected:
            return
        counters = self.counters
        counters.recomputations += 1
        counters.flows_rated += len(affected)
        counters.largest_recomputation = max(counters.largest_recomputation, len(affected))
        residual: dict[int, float] = {}
        unrated: dict[int, dict[int, _Flow]] = {}
        links: dict[int, Link] = {}
        for flow in affected.values():
            for link in flow.links:
                if not math.isfinite(link.rate):
                    continue
                key = id(link)
                if key not in links:
                    links[key] = link
                    on_link = self._on_link[key]
                    # One pass (the rates added in the same order as ``sum`` did).
                    others, mine = 0.0, 0
                    for serial, flow_there in on_link.items():
                        if serial in affected:
                            mine += 1
                        else:
                            others += flow_there.rate
                    # Stale rates beyond ``changed`` never starve the affected flows:
                    # together they get at least their equal shares of the link.
                    residual[key] = max(link.rate - others, link.rate * mine / len(on_link))
                    unrated[key] = {}
                unrated[key][flow.serial] = flow
        rates: dict[int, float] = {}
        # The link with the smallest fair share next, ties by the link's name (not by
        # ``id(link)``, a memory address: equal shares then went in an order that
        # changed from run to run, and with it the last bits of the rates): a heap of
        # (share, name, key), an entry stale once its link's share moved (it is pushed
        # again then). A scan of every link per step was quadratic in an office's links.
        bottlenecks = [
            (residual[key] / len(flows), links[key].name, key) for key, flows in unrated.items()
        ]
        heapq.heapify(bottlenecks)
        while unrated:
            share, _, key = heapq.heappop(bottlenecks)
            flows_left = unrated.get(key)
            if flows_left is None or residual[key] / len(flows_left) != share:
                continue  # rated already, or its share moved since
            for serial, flow in list(flows_left.items()):
                rates[serial] = share
                for link in flow.links:
                    other = id(link)
                    if other in unrated and serial in unrated[other]:
                        del unrated[other][serial]
                        residual[other] = max(residual[other] - share, 0.0)
                        if not unrated[other]:
                            del unrated[other]
                        elif other != key:
                            heapq.heappush(
                                bottlenecks,
                                (residual[other] / len(unrated[other]), links[other].name, other),
                            )
        now = self.network.now
        for serial, flow in affected.items():
            self._set_rate(flow, rates.get(serial, UNSHAPED_RATE), now)

    def _set_rate(self, flow: _Flow, rate: float, now: float) -> None:
        if abs(rate - flow.rate) <= _RATE_EPSILON * max(rate, flow.rate) and flow.version:
            return
        flow.remaining = max(flow.remaining - flow.rate * (now - flow.updated), 0.0)
        flow.updated = now
        flow.rate = rate
        flow.version += 1
        version = flow.version
        if rate <= 0.0:
            flow.finish_at = math.inf
            if flow.stalled_since is None:
                flow.stalled_since = now
            stall_limit = flow.stalled_since + self.config.idle_timeout

            def give_up() -> None:
                if flow.version == version and flow.rate <= 0.0:
                    flow.sender.stalled(flow)

            self.network.at(stall_limit, give_up)
            return
        flow.stalled_since = None
        flow.finish_at = now + flow.remaining / rate
        # One finish event per flow, queued only when the flow finishes earlier than the
        # queued one fires: a flow joining a link slows every flow on it, and each used
        # to queue a new event (half of an estate's events were such stale ones). A
        # queued event that fires before ``finish_at`` moves itself there (``_check``).
        if flow.check_at is None or flow.finish_at < flow.check_at:
            self._queue_check(flow)

    def _queue_check(self, flow: _Flow) -> None:
        when = flow.check_at = flow.finish_at
        self.network.at(when, lambda: self._check(flow, when))

    def _check(self, flow: _Flow, when: float) -> None:
        """A flow's finish event at ``when``: finished, or (slowed since it was queued)
        queued again at its new ``finish_at``; stale if another took its place."""
        if flow.check_at != when:
            return  # ended, or an earlier event was queued since
        flow.check_at = None
        if flow.finish_at == when:
            flow.sender.finished(flow)
        elif flow.finish_at < math.inf:
            self._queue_check(flow)


class FlowEngine:
    """A ``TransferEngine`` stand-in whose chunks are flows of a ``FlowFabric``.

    Bound to a host port like the real engine (it sends and receives no datagrams);
    the fabric delivers its events and pumps its host.
    """

    def __init__(self, fabric: FlowFabric, host: Host, port: int) -> None:
        self.fabric = fabric
        self.host = host
        self.port = port
        self.address: Address = (host.ip, port)
        self.config = fabric.config
        self.counters = TransferCounters()
        self._downloads: dict[int, _Download] = {}
        self._uploads: dict[tuple[Address, int], _Upload] = {}
        self._finished_uploads: OrderedDict[tuple[Address, int], None] = OrderedDict()
        self._answered: set[Address] = set()
        #: Per peer: the engine whose address token we hold (a ``RETRY`` of it came).
        self._tokens: dict[Address, FlowEngine] = {}
        self._events: deque[Event] = deque()
        # Per (receiver, mode): the upload whose flow runs, and those served behind it.
        self._sending: dict[tuple[Address, Mode], _Upload] = {}
        self._queued: dict[tuple[Address, Mode], deque[_Upload]] = {}

    # ---------------------------------------------------------- receiver side

    def request_chunk(
        self,
        peer: Address,
        content_id: ContentId,
        chunk_index: int,
        chunk_length: int,
        chunk_hash: bytes,
        mode: Mode,
        now: float,
        prefix: bytes = b"",
    ) -> int:
        """As ``TransferEngine.request_chunk``: the request reaches ``peer`` one path
        delay later (or, if nothing runs there, the download times out); with a
        ``prefix``, for the rest of the chunk from its last whole segment on."""
        if len(self._downloads) >= self.config.max_downloads:
            raise TooManyDownloads(
                f"already receiving {len(self._downloads)} chunks "
                f"(max_downloads = {self.config.max_downloads})"
            )
        if not 0 < chunk_length <= self.config.max_chunk_length:
            raise LocalProtocolError(f"chunk length {chunk_length} out of range")
        if len(chunk_hash) != 32:
            raise LocalProtocolError("chunk_hash must be a 32-byte SHA-256 digest")
        if len(prefix) >= chunk_length:
            raise LocalProtocolError(f"a prefix of {len(prefix)} bytes leaves nothing to ask")
        request_id = self.fabric.request_id()
        base = len(prefix) - len(prefix) % self.config.segment_size
        download = _Download(
            request_id, peer, content_id, chunk_index, chunk_length, chunk_hash, 0, prefix[:base]
        )
        self._downloads[request_id] = download
        requested = ChunkRequested(
            self.address, request_id, content_id, chunk_index, chunk_length, Mode(mode), base
        )
        self.fabric.carry_request(self, peer, requested)
        return request_id

    def cancel(self, request_id: int, now: float) -> bytes:
        """Stop receiving a chunk; the sender hears of it one path delay later. Returns
        what the request held of the chunk (``TransferEngine.cancel``): its prefix and
        the whole segments its flow delivered (those sent a path delay ago)."""
        download = self._downloads.pop(request_id, None)
        if download is None:
            return b""
        sender = self.fabric.live_engine(download.peer)
        if sender is None:
            return download.prefix if download.held is None else download.held
        cancelled = RequestCancelled(
            self.address, request_id, download.content_id, download.chunk_index
        )
        self.fabric.deliver(self.fabric.latency(self.host, sender.host), sender, cancelled)
        upload = sender._uploads.get((self.address, request_id))
        flow = upload.flow if upload is not None else None
        if flow is None:
            return download.prefix
        sent = flow.total - max(flow.remaining - flow.rate * (now - flow.updated), 0.0)
        arrived = int(sent - flow.rate * flow.latency)
        return download.prefix + flow.data[: whole_segments(arrived, len(flow.data), self.config)]

    def has_answered(self, peer: Address) -> bool:
        return peer in self._answered

    def received_prefix(self, request_id: int) -> memoryview | None:
        """As ``TransferEngine.received_prefix``: the request's prefix and the whole
        segments its flow delivered by now (those sent a path delay ago, as ``cancel``
        counts them), or, once its flow was cut, what it held then; None while nothing
        came after the prefix. A view: nothing is copied but a resumed chunk's prefix
        and flow, joined once."""
        download = self._downloads.get(request_id)
        if download is None:
            return None
        held = download.held
        if held is not None:
            return memoryview(held) if len(held) > len(download.prefix) else None
        flow = download.flow
        if flow is None or flow.upload.flow is not flow:  # not started, or ended
            return None
        rate = flow.rate
        sent = flow.total - max(flow.remaining - rate * (self.fabric.network.now - flow.updated), 0)
        arrived = whole_segments(int(sent - rate * flow.latency), len(flow.data), self.config)
        if arrived <= 0:
            return None
        if not download.prefix:
            return memoryview(flow.data)[:arrived]
        if download.joined is None:
            download.joined = download.prefix + flow.data
        return memoryview(download.joined)[: len(download.prefix) + arrived]

    def address_token(self, addr: Address, now: float) -> bytes:
        return bytes(16)  # flows need no address validation: no datagram is forged here

    def trust_peers(self, proven: Callable[[str, float], bool]) -> None:
        """Flows hold no request to an unproven peer (no RETRY to lose): nothing to do."""

    # ------------------------------------------------------------ sender side

    def raise_path_rate(self, peer_ips: Collection[str], path_rate: float) -> None:
        """Max-min fair flows already take what other flows leave: nothing to raise."""

    def send_chunk(
        self,
        peer: Address,
        request_id: int,
        data: bytes | memoryview,
        now: float,
        *,
        path_rate: float | None = None,
    ) -> None:
        """Serve a requested chunk: its flow starts now, or when the chunks served to
        the same requester (in the same mode) before it have been sent (max-min fair
        flows have no slow start: ``path_rate`` changes nothing here)."""
        key = (peer, request_id)
        upload = self._uploads.get(key)
        if upload is None or upload.flow is not None or upload.data is not None:
            if key in self._finished_uploads:
                return
            raise LocalProtocolError(f"no chunk request {request_id} from {peer}")
        if len(data) != upload.chunk_length:
            raise LocalProtocolError(
                f"chunk request {request_id} is for {upload.chunk_length} bytes, got {len(data)}"
            )
        receiver = self.fabric.live_engine(peer)
        if receiver is None:  # the requester died: its closed port or silence ends it
            self.fabric.data_to_dead(self, peer)
            timed_out = TransferTimedOut(
                peer, request_id, upload.content_id, upload.chunk_index, Role.SENDER
            )
            self.fabric.deliver(self.config.idle_timeout, self, timed_out)
            return
        upload.data = data if isinstance(data, bytes) else bytes(data)
        self._queued.setdefault((peer, upload.mode), deque()).append(upload)
        self._send_next((peer, upload.mode))

    def _send_next(self, key: tuple[Address, Mode]) -> None:
        """Start the oldest chunk queued for ``key`` unless one is being sent to it."""
        sending = self._sending.get(key)
        if sending is not None and sending.flow is not None:
            return
        self._sending.pop(key, None)
        queue = self._queued.get(key)
        while queue:
            upload = queue.popleft()
            if self._uploads.get((upload.peer, upload.request_id)) is not upload:
                continue  # cancelled, refused or timed out while queued
            receiver = self.fabric.live_engine(upload.peer)
            if receiver is None or upload.request_id not in receiver._downloads:
                continue  # its requester died or cancelled: that news is on its way
            data = upload.data
            assert data is not None
            upload.data = None
            self._sending[key] = upload
            self.counters.payload_bytes_sent += len(data)
            flow = self.fabric.start(self, upload, receiver.host, data)
            receiver._downloads[upload.request_id].flow = flow
            # Its first bytes reach the receiver one path delay later, as a first DATA
            # does (the receiver's ``ChunkStarted``: a duplicate waiting elsewhere ends).
            started = ChunkStarted(
                self.address, upload.request_id, upload.content_id, upload.chunk_index
            )
            self.fabric.deliver(flow.latency, receiver, started)
            return
        self._queued.pop(key, None)

    def refuse_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        upload = self._uploads.get((peer, request_id))
        if upload is None:
            if (peer, request_id) in self._finished_uploads:
                return
            raise LocalProtocolError(f"no chunk request {request_id} from {peer}")
        self.counters.requests_refused += 1
        if upload.flow is not None:  # withdrawn (``withdraw_chunk``)
            withdrawn = self.fabric.counters.bytes_withdrawn
            withdrawn[peer[0]] = withdrawn.get(peer[0], 0) + self.fabric.end(upload.flow)
        self._forget(upload)
        receiver = self.fabric.live_engine(peer)
        if receiver is not None:
            refused = ChunkRefused(
                self.address, request_id, upload.content_id, upload.chunk_index, reason
            )
            self.fabric.deliver(self.fabric.latency(self.host, receiver.host), receiver, refused)

    def withdraw_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """As ``TransferEngine.withdraw_chunk``: its flow ends (or it leaves the queue)."""
        upload = self._uploads.get((peer, request_id))
        if upload is not None and upload.flow is None and upload.data is None:
            raise LocalProtocolError(f"chunk request {request_id} from {peer} is not under way")
        self.refuse_chunk(peer, request_id, reason, now)

    def refuse_uploads_to(
        self, peer_ip: str, content_ids: Container[ContentId], reason: RefusalReason, now: float
    ) -> int:
        """As ``TransferEngine.refuse_uploads_to``: queued and running flows end too."""
        ended = [
            upload
            for upload in self._uploads.values()
            if upload.peer[0] == peer_ip and upload.content_id in content_ids
        ]
        for upload in ended:
            if upload.flow is not None or upload.data is not None:
                self.withdraw_chunk(upload.peer, upload.request_id, reason, now)
            else:
                self.refuse_chunk(upload.peer, upload.request_id, reason, now)
        return len(ended)

    def abandon_peer(self, peer: Address) -> int:
        """End every upload to ``peer`` as if it had cancelled them."""
        uploads = [upload for upload in self._uploads.values() if upload.peer == peer]
        for key in [key for key in self._queued if key[0] == peer]:
            del self._queued[key]
        for upload in uploads:
            self._events.append(
                RequestCancelled(peer, upload.request_id, upload.content_id, upload.chunk_index)
            )
            if upload.flow is not None:
                self.fabric.end(upload.flow)
            self._forget(upload)
        self._events.append(PeerPortClosed(peer))
        return len(uploads)

    # ------------------------------------------------ driven by the fabric

    def accept(self, event: Event) -> None:
        """An event from another engine (or a flow) arrives: act, then wake the host."""
        if isinstance(event, ChunkRequested):
            key = (event.peer, event.request_id)
            self._uploads[key] = _Upload(
                event.peer, event.request_id, event.content_id, event.chunk_index,
                event.chunk_length - event.offset, event.mode, event.offset,
                self.fabric.network.now,
            )  # fmt: skip
            self._events.append(event)
        elif isinstance(event, RequestCancelled):
            upload = self._uploads.get((event.peer, event.request_id))
            if upload is None:
                return
            if upload.flow is not None:
                self.fabric.counters.flows_cancelled += 1
                self.fabric.counters.bytes_cancelled += self.fabric.end(upload.flow)
            self._forget(upload)
            self._events.append(event)
        elif isinstance(event, ChunkDelivered):
            upload = self._uploads.get((event.peer, event.request_id))
            if upload is None:
                return
            self.counters.chunks_delivered += 1
            self._forget(upload)
            self._events.append(event)
        elif isinstance(event, TransferTimedOut) and event.role is Role.SENDER:
            upload = self._uploads.get((event.peer, event.request_id))
            if upload is None:
                return
            if upload.flow is not None:
                self.fabric.end(upload.flow)
            self._forget(upload)
            self._events.append(event)
        elif isinstance(event, ChunkStarted):
            download = self._downloads.get(event.request_id)
            if download is None or download.peer != event.peer:
                return  # ended meanwhile
            self._events.append(event)
        else:  # receiver side: refused, timed out, or a flow's bytes
            request_id = getattr(event, "request_id", None)
            download = self._downloads.get(request_id) if request_id is not None else None
            if download is None or download.peer != getattr(event, "peer", None):
                return
            del self._downloads[download.request_id]
            if not isinstance(event, TransferTimedOut):
                self._answered.add(download.peer)
            if isinstance(event, ChunkRefused) and download.prefix:  # handed back
                event = replace(event, prefix=download.prefix)
            self._events.append(event)
        self.fabric.network.input_reached(self.host, machine_input=False)

    def finished(self, flow: _Flow) -> None:
        """The flow's last byte left: it arrives one path delay later, ACKed after another."""
        fabric = self.fabric
        fabric.counters.flows_finished += 1
        sent = fabric.end(flow)
        upload = flow.upload
        self._send_next((upload.peer, upload.mode))
        receiver = fabric.live_engine(upload.peer)
        if receiver is None:
            return
        download = receiver._downloads.get(upload.request_id)
        if download is None:  # cancelled meanwhile: its cancel is on its way to us
            fabric.counters.flows_cancelled += 1
            fabric.counters.bytes_cancelled += sent
            return
        receiver.counters.payload_bytes_received += len(flow.data)
        # A resumed chunk is checked whole, its prefix with the rest (a new object: hashed).
        chunk = flow.data
        if download.prefix:
            chunk = download.joined or download.prefix + flow.data
        if fabric.hashes.sha256(chunk) == download.chunk_hash:
            receiver.counters.chunks_received += 1
            arrived: Event = ChunkReceived(
                self.address, upload.request_id, upload.content_id, upload.chunk_index, chunk
            )
        else:
            arrived = ChunkCorrupted(
                self.address,
                upload.request_id,
                upload.content_id,
                upload.chunk_index,
                bool(download.prefix),
            )
        fabric.deliver(flow.latency, receiver, arrived)
        delivered = ChunkDelivered(
            upload.peer, upload.request_id, upload.content_id, upload.chunk_index
        )
        fabric.deliver(2 * flow.latency, self, delivered)

    def stalled(self, flow: _Flow) -> None:
        """A flow made no progress for ``idle_timeout``: both ends give up on it, and on
        the chunks queued behind it (the two engines heard nothing from each other)."""
        fabric = self.fabric
        fabric.counters.flows_aborted += 1
        sent = fabric.end(flow)
        key = (flow.upload.peer, flow.upload.mode)
        receiver = fabric.live_engine(flow.upload.peer)
        if receiver is not None:
            receiver._cut(flow.upload.request_id, flow.data, sent)
        for upload in [flow.upload, *self._queued.pop(key, deque[_Upload]())]:
            if self._uploads.get((upload.peer, upload.request_id)) is not upload:
                continue
            self._forget(upload)
            self._events.append(
                TransferTimedOut(
                    upload.peer, upload.request_id, upload.content_id, upload.chunk_index,
                    Role.SENDER,
                )
            )  # fmt: skip
            if receiver is not None:
                fabric.deliver(
                    0.0,
                    receiver,
                    TransferTimedOut(
                        self.address, upload.request_id, upload.content_id, upload.chunk_index,
                        Role.RECEIVER, receiver._held(upload.request_id),
                    ),
                )  # fmt: skip
        fabric.network.input_reached(self.host, machine_input=False)

    def died(self) -> None:
        """This engine's process died. A peer receiving a chunk from it hears nothing
        more and times out; a peer whose request it had not answered yet repeats the
        request (within its doubling repeat interval, at most ``max_rto``), which meets
        the closed port, or the restarted process; a peer sending to it has its next
        DATA answered by ICMP port unreachable."""
        fabric = self.fabric
        config = self.config
        now = fabric.network.now
        for upload in list(self._uploads.values()):
            receiver = fabric.live_engine(upload.peer)
            if upload.flow is not None:
                fabric.counters.flows_aborted += 1
                data = upload.flow.data
                sent = fabric.end(upload.flow)
                if receiver is not None:  # what was on the way still arrives
                    receiver._cut(upload.request_id, data, sent)
                    timed_out = TransferTimedOut(
                        self.address, upload.request_id, upload.content_id,
                        upload.chunk_index, Role.RECEIVER, receiver._held(upload.request_id),
                    )  # fmt: skip
                    fabric.deliver(config.idle_timeout, receiver, timed_out)
            elif receiver is not None:
                repeat = min(config.max_rto, max(config.min_rto, now - upload.since))
                requested = ChunkRequested(
                    upload.peer, upload.request_id, upload.content_id, upload.chunk_index,
                    upload.chunk_length + upload.offset, upload.mode, upload.offset,
                )  # fmt: skip
                fabric.carry_request(receiver, self.address, requested, repeat)
        self._uploads.clear()
        self._sending.clear()
        self._queued.clear()
        senders: dict[Address, FlowEngine] = {}
        for download in list(self._downloads.values()):
            sender = fabric.live_engine(download.peer)
            if sender is None:
                continue
            theirs = sender._uploads.get((self.address, download.request_id))
            if theirs is not None and theirs.flow is not None:
                fabric.counters.flows_aborted += 1
                fabric.end(theirs.flow)
                senders[sender.address] = sender
            timed_out = TransferTimedOut(
                self.address, download.request_id, download.content_id, download.chunk_index,
                Role.SENDER,
            )  # fmt: skip
            fabric.deliver(config.idle_timeout, sender, timed_out)
        for sender in senders.values():
            fabric.data_to_dead(sender, self.address)
        self._downloads.clear()

    def _cut(self, request_id: int, data: bytes, sent: int) -> None:
        """The flow of ``request_id``'s chunk ended after ``sent`` wire bytes: the whole
        segments of them are what the request holds (``held``), after its prefix."""
        download = self._downloads.get(request_id)
        if download is not None:
            download.held = download.prefix + data[: whole_segments(sent, len(data), self.config)]

    def _held(self, request_id: int) -> bytes:
        download = self._downloads.get(request_id)
        if download is None:
            return b""
        return download.prefix if download.held is None else download.held

    def _time_out_later(self, download: _Download, now: float) -> None:
        timed_out = TransferTimedOut(
            download.peer, download.request_id, download.content_id, download.chunk_index,
            Role.RECEIVER, download.prefix,
        )  # fmt: skip
        self.fabric.deliver(self.config.idle_timeout, self, timed_out)

    def _forget(self, upload: _Upload) -> None:
        key = (upload.peer, upload.request_id)
        self._uploads.pop(key, None)
        upload.data = None
        self._finished_uploads[key] = None
        if self._sending.get((upload.peer, upload.mode)) is upload:
            self._send_next((upload.peer, upload.mode))
        if len(self._finished_uploads) > self.config.recent_requests:
            self._finished_uploads.popitem(last=False)

    # ------------------------------------------- the Machine protocol (no datagrams)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.counters.datagrams_received += 1  # nothing sends datagrams to a flow port

    def receive_datagrams(
        self, datagrams: Sequence[tuple[bytes | memoryview, Address]], now: float
    ) -> None:
        self.counters.datagrams_received += len(datagrams)

    def handle_timer(self, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def has_events(self) -> bool:
        return bool(self._events)

    @property
    def active_downloads(self) -> int:
        return len(self._downloads)

    @property
    def active_uploads(self) -> int:
        return len(self._uploads)
