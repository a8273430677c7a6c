"""The client's side of the control channel: requests to its P2P server, with retries.

Theory of operation
-------------------
Each user call (``register``, ``check_in``, ``lease``...) sends one authenticated
control datagram and returns its request ID. Until a reply with that ID arrives the
request is retransmitted with exponential backoff (``retry_initial`` doubling up to
``retry_max``); after ``give_up_after`` seconds it ends in ``ControlTimedOut``. A reply
ends it in ``ControlAnswered``, which carries the request and the reply body. Replies
that fail authentication are dropped and counted, except an unauthenticated
``Refused`` (the server has another key), which is reported as ``ServerKeyRejected``
without ending the request: it may be forged, so it informs but decides nothing.
An authenticated ``Nudge`` (request ID 0, sent unasked when the server's assignments
change) becomes a ``Nudged`` event.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from shoal.core.ids import ContentId
from shoal.wire.control import (
    BadPeer,
    CheckIn,
    ContentProgress,
    ControlBody,
    ControlMessage,
    Lease,
    ManifestInfo,
    Nudge,
    Peers,
    RefusalCause,
    Refused,
    Register,
    decode_control,
    encode_control,
)
from shoal.wire.errors import MalformedDatagram

Address = tuple[str, int]
MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class ControlAnswered:
    request_id: int
    request: ControlBody
    reply: ControlBody


@dataclass(frozen=True, slots=True)
class ControlTimedOut:
    request_id: int
    request: ControlBody


@dataclass(frozen=True, slots=True)
class ServerKeyRejected:
    """An unauthenticated refusal: the server says our key is wrong (or someone does)."""

    cause: RefusalCause
    message: str


@dataclass(frozen=True, slots=True)
class Nudged:
    """The server says its assignments changed (to the document with this hash)."""

    assignments_sha256: bytes


ControlEvent = ControlAnswered | ControlTimedOut | ServerKeyRejected | Nudged


@dataclass(slots=True)
class _Pending:
    request: ControlBody
    datagram: bytes
    first_sent: float
    next_send: float
    interval: float


@dataclass(slots=True)
class ControlCounters:
    sent: int = 0
    retransmitted: int = 0
    answered: int = 0
    timed_out: int = 0
    unauthenticated: int = 0
    malformed: int = 0
    stray_replies: int = 0
    nudges: int = 0


class ControlClient:
    """Sans-I/O request/response with the P2P server over UDP."""

    def __init__(
        self,
        *,
        server: Address,
        key: bytes,
        device_id: bytes,
        now: float,
        retry_initial: float = 0.5,
        retry_max: float = 4.0,
        give_up_after: float = 15.0,
    ) -> None:
        self.server = server
        self._key = key
        self.device_id = device_id
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.give_up_after = give_up_after
        self.counters = ControlCounters()
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[ControlEvent] = deque()
        self._next_request_id = int(now * 1000) & 0xFFFFFF  # differs across restarts

    # ----------------------------------------------------------- user calls

    def register(self, version: str, hostname: str, subnet_prefix: int, now: float) -> int:
        return self._send(Register(version, hostname[:64], subnet_prefix), now)

    def check_in(self, progress: list[ContentProgress], now: float) -> int:
        return self._send(CheckIn(tuple(progress)), now)

    def manifest_info(self, content_id: ContentId, now: float) -> int:
        return self._send(ManifestInfo(content_id), now)

    def lease(self, content_id: ContentId, now: float) -> int:
        return self._send(Lease(content_id), now)

    def peers(self, content_id: ContentId, now: float) -> int:
        return self._send(Peers(content_id), now)

    def bad_peer(self, content_id: ContentId, peer: Address, chunk_index: int, now: float) -> int:
        return self._send(BadPeer(content_id, peer, chunk_index), now)

    def pending(self) -> int:
        return len(self._pending)

    def _send(self, body: ControlBody, now: float) -> int:
        if len(self._pending) >= MAX_PENDING:
            oldest = min(self._pending, key=lambda rid: self._pending[rid].first_sent)
            self._expire(oldest)
        request_id = self._next_request_id
        self._next_request_id = (self._next_request_id + 1) & 0xFFFFFFFF
        datagram = encode_control(ControlMessage(request_id, self.device_id, body), self._key)
        self._pending[request_id] = _Pending(
            body, datagram, now, now + self.retry_initial, self.retry_initial
        )
        self._outbox.append((datagram, self.server))
        self.counters.sent += 1
        return request_id

    # -------------------------------------------------------------- driving

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        if addr != self.server:
            self.counters.stray_replies += 1
            return
        try:
            message = decode_control(data, self._key)
        except MalformedDatagram:
            self.counters.malformed += 1
            return
        if not message.authenticated:
            self.counters.unauthenticated += 1
            if isinstance(message.body, Refused) and message.request_id in self._pending:
                self._events.append(ServerKeyRejected(message.body.cause, message.body.message))
            return
        if isinstance(message.body, Nudge):
            self.counters.nudges += 1
            self._events.append(Nudged(message.body.assignments_sha256))
            return
        pending = self._pending.pop(message.request_id, None)
        if pending is None:
            self.counters.stray_replies += 1  # a late duplicate answer
            return
        self.counters.answered += 1
        self._events.append(ControlAnswered(message.request_id, pending.request, message.body))

    def handle_timer(self, now: float) -> None:
        for request_id, pending in list(self._pending.items()):
            if now - pending.first_sent >= self.give_up_after:
                self._expire(request_id)
            elif pending.next_send <= now:
                pending.interval = min(pending.interval * 2, self.retry_max)
                pending.next_send = now + pending.interval
                self._outbox.append((pending.datagram, self.server))
                self.counters.retransmitted += 1

    def _expire(self, request_id: int) -> None:
        pending = self._pending.pop(request_id)
        self.counters.timed_out += 1
        self._events.append(ControlTimedOut(request_id, pending.request))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def get_timer(self) -> float | None:
        deadlines = [
            min(pending.next_send, pending.first_sent + self.give_up_after)
            for pending in self._pending.values()
        ]
        return min(deadlines, default=None)

    def next_event(self) -> ControlEvent | None:
        return self._events.popleft() if self._events else None
