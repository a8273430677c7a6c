"""Two (or more) transfer engines joined by an in-memory network with a fake clock.

The network is a discrete-event simulation: every datagram an engine hands out is
delivered after ``delay`` (+ uniform ``jitter``, which reorders), unless dropped at
random (``loss``); it may be delivered twice (``duplicate``) or held back so that later
ones overtake it (``reorder``). An optional bottleneck
(``rate`` bytes/s, drop-tail queue of ``queue_bytes``) makes queuing delay grow with
the load, as a real router does -- that is what LEDBAT must react to. Everything is
seeded, so every run is the same.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    Address,
    ChunkRequested,
    Event,
    RefusalReason,
    TransferConfig,
    TransferEngine,
)

_T = TypeVar("_T")


@dataclass
class Node:
    """One engine at one address, with the chunks it serves and the events it saw."""

    address: Address
    engine: TransferEngine
    #: (content ID, chunk index) -> bytes this node serves when asked.
    chunks: dict[tuple[ContentId, int], bytes] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    #: Fake-clock time at which each event in ``events`` was taken.
    event_times: list[float] = field(default_factory=list)
    #: When False the node answers no requests (the application never calls back).
    serving: bool = True
    #: What the node tells its engine the path carries (``send_chunk``'s ``path_rate``).
    path_rate: float | None = None

    def serve(self, content_id: ContentId, chunk_index: int, data: bytes) -> bytes:
        """Make a chunk available; return its SHA-256 (what a manifest would hold)."""
        self.chunks[(content_id, chunk_index)] = data
        return hashlib.sha256(data).digest()

    def time_of_first(self, kind: type) -> float:
        """Fake-clock time of the first event of ``kind`` (KeyError if none)."""
        for event, when in zip(self.events, self.event_times, strict=True):
            if isinstance(event, kind):
                return when
        raise KeyError(kind.__name__)

    def events_of(self, kind: type[_T]) -> list[_T]:
        return [event for event in self.events if isinstance(event, kind)]


@dataclass
class Path:
    """Impairments of one direction between two nodes."""

    delay: float = 0.0005
    jitter: float = 0.0
    #: Probability that a datagram is held back by ``reorder_delay`` (arrives late).
    reorder: float = 0.0
    reorder_delay: float = 0.002
    loss: float = 0.0
    duplicate: float = 0.0
    #: Bottleneck in bytes/s (None: infinitely fast).
    rate: float | None = None
    queue_bytes: int = 1_000_000
    #: Extra one-way delay added from now on (a congested uplink elsewhere).
    extra_delay: float = 0.0
    link_free_at: float = 0.0
    delivered: int = 0
    dropped: int = 0
    max_queue_delay: float = 0.0


class Network:
    """A fake clock and the paths between nodes."""

    def __init__(self, *, seed: int = 1, start: float = 1000.0, **path_defaults: float) -> None:
        self.now = start
        self.random = random.Random(seed)
        self.nodes: dict[Address, Node] = {}
        self._path_defaults = path_defaults
        self.paths: dict[tuple[Address, Address], Path] = {}
        self._in_flight: list[tuple[float, int, Address, Address, bytes]] = []
        self._sequence = 0
        self.silenced: set[Address] = set()
        self.tap: Callable[[bytes, Address, Address], bytes | None] | None = None

    def add(self, host: str, config: TransferConfig | None = None, port: int = 7000) -> Node:
        address = (host, port)
        node = Node(address, TransferEngine(config=config, now=self.now))
        self.nodes[address] = node
        return node

    def path(self, source: Node, destination: Node) -> Path:
        key = (source.address, destination.address)
        if key not in self.paths:
            self.paths[key] = Path(**self._path_defaults)  # type: ignore[arg-type]
        return self.paths[key]

    def silence(self, node: Node) -> None:
        """From now on ``node`` neither sends nor receives (it crashed, or left)."""
        self.silenced.add(node.address)

    def inject(self, datagram: bytes, source: Address, destination: Node) -> None:
        """Deliver a datagram to ``destination`` right now, as if ``source`` sent it."""
        destination.engine.receive_datagram(datagram, source, self.now)
        self._collect(destination)

    # -- the simulation loop ---------------------------------------------------------

    def _collect(self, node: Node) -> None:
        engine = node.engine
        while (event := engine.next_event()) is not None:
            node.events.append(event)
            node.event_times.append(self.now)
            if isinstance(event, ChunkRequested) and node.serving:
                data = node.chunks.get((event.content_id, event.chunk_index))
                if data is None:
                    engine.refuse_chunk(
                        event.peer, event.request_id, RefusalReason.NOT_FOUND, self.now
                    )
                else:
                    engine.send_chunk(
                        event.peer,
                        event.request_id,
                        data[event.offset :],  # a resumed chunk's remainder
                        self.now,
                        path_rate=node.path_rate,
                    )

    def _flush(self, node: Node) -> None:
        for datagram, destination in node.engine.datagrams_to_send(self.now):
            if node.address in self.silenced or destination in self.silenced:
                continue
            if destination not in self.nodes:
                continue
            payload: bytes | None = datagram
            if self.tap is not None:
                payload = self.tap(datagram, node.address, destination)
                if payload is None:
                    continue
            path = self.path(node, self.nodes[destination])
            if self.random.random() < path.loss:
                path.dropped += 1
                continue
            copies = 2 if self.random.random() < path.duplicate else 1
            departure = self.now
            if path.rate is not None:
                start = max(self.now, path.link_free_at)
                queued = (start - self.now) * path.rate
                if queued + len(payload) > path.queue_bytes:
                    path.dropped += 1  # drop-tail
                    continue
                path.max_queue_delay = max(path.max_queue_delay, start - self.now)
                departure = path.link_free_at = start + len(payload) / path.rate
            for _ in range(copies):
                arrival = (
                    departure
                    + path.delay
                    + path.extra_delay
                    + self.random.uniform(0.0, path.jitter)
                )
                if path.reorder and self.random.random() < path.reorder:
                    arrival += path.reorder_delay
                self._sequence += 1
                heapq.heappush(
                    self._in_flight, (arrival, self._sequence, node.address, destination, payload)
                )

    def step(self) -> bool:
        """Advance to the next arrival or timer; False when nothing is left to happen."""
        for node in self.nodes.values():
            self._collect(node)
            self._flush(node)
        next_time = self._in_flight[0][0] if self._in_flight else None
        for node in self.nodes.values():
            timer = node.engine.get_timer()
            if timer is not None and (next_time is None or timer < next_time):
                next_time = timer
        if next_time is None:
            return False
        self.now = max(self.now, next_time)
        while self._in_flight and self._in_flight[0][0] <= self.now:
            _, _, source, destination, datagram = heapq.heappop(self._in_flight)
            node = self.nodes[destination]
            self.paths[(source, destination)].delivered += 1
            node.engine.receive_datagram(datagram, source, self.now)
        for node in self.nodes.values():
            timer = node.engine.get_timer()
            if timer is not None and timer <= self.now:
                node.engine.handle_timer(self.now)
            self._collect(node)
        return True

    def run(self, until: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Step until ``until()`` holds; fail if the fake clock passes ``timeout`` seconds."""
        deadline = self.now + timeout
        last_now, steps_without_progress = self.now, 0
        while not until():
            if not self.step() or self.now > deadline:
                raise AssertionError(f"network stalled or timed out at t={self.now:.3f}")
            steps_without_progress = steps_without_progress + 1 if self.now == last_now else 0
            last_now = self.now
            if steps_without_progress > 10_000:
                raise AssertionError(f"an engine timer is stuck at t={self.now:.6f}")

    def run_for(self, seconds: float) -> None:
        """Step for ``seconds`` of fake time (or until nothing is left to happen)."""
        deadline = self.now + seconds
        while self.now < deadline:
            if not self.step():
                self.now = deadline  # nothing happens: the clock still moves on
                break
