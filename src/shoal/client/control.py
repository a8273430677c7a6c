"""The client's side of the control channel: requests to its P2P server, with retries.

Theory of operation
-------------------
Before anything else the client needs its server's certificate: it sends a padded
``HELLO`` (retried with backoff) and checks the ``CERTIFICATE`` answer against the
console key(s) pinned at enrollment and the server's address; it also carries an address token,
which every REGISTER echoes (proof that we receive at our address; the server says
``ADDRESS_UNPROVEN`` when it is too old, and we ask again). From the certified
server key, its own device key and the enrollment token it derives the *control key*
(``shoal.core.identity.control_key``) that authenticates every datagram both ways.
A certificate that does not verify is counted and reported (``CertificateRejected``)
and changes nothing.

Each user call (``register``, ``check_in``, ``lease``...) queues one request and
returns its request ID; it is sent (and retransmitted with exponential backoff up to
``retry_max``) once the control key is known, each transmission with a new counter, so
that the server can refuse replays. The first wait is the server's measured answer time
(RFC 6298's RTO over the requests answered at their first transmission, Karn's rule;
at least ``retry_min``), or ``retry_initial`` before any answer: on a lossy link a lost
check-in or lease costs a few round trips, not half a second and its doubling. After
``give_up_after`` seconds it ends in ``ControlTimedOut``. An authenticated reply whose
counter is above the last one accepted ends it in ``ControlAnswered``. Replies that
fail authentication, or repeat an old counter, are dropped and counted. An
unauthenticated ``Refused`` to a pending request (the server cannot check us: unknown
device, wrong enrollment token, outdated certificate) is reported as
``RefusedUnauthenticated`` without ending the request, and the client asks for the
certificate again (at most every ``hello_refresh`` seconds): it may be forged, so it
informs, and the only thing it triggers is a question whose answer is verified. An
authenticated ``Nudge`` (request ID 0, sent unasked when the server's assignments
change) becomes a ``Nudged`` event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from shoal.core.address import Address
from shoal.core.identity import DeviceKey, control_key
from shoal.core.ids import ContentId
from shoal.core.server_cert import CertificateInvalid, ServerCertificate, verify_certificate
from shoal.core.signing import VerifyKey
from shoal.protocol.transfer.congestion import RttEstimator
from shoal.wire.control import (
    ADDRESS_TOKEN_SIZE,
    BadPeer,
    Certificate,
    CheckIn,
    ContentProgress,
    ControlBody,
    ControlMessage,
    Hello,
    InstallReport,
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

MAX_PENDING = 256
PEERS_PADDING = 176
"""PEERS padded to 256 bytes: the server answers at most 3x that, about 110 peers."""


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
class RefusedUnauthenticated:
    """An unauthenticated refusal: the server cannot check us (or someone says so)."""

    cause: RefusalCause
    message: str


@dataclass(frozen=True, slots=True)
class Nudged:
    """The server says its assignments changed (to the document with this hash)."""

    assignments_sha256: bytes


@dataclass(frozen=True, slots=True)
class ServerCertified:
    """The server's certificate verified: control datagrams are authenticated from now."""

    certificate: ServerCertificate


@dataclass(frozen=True, slots=True)
class CertificateRejected:
    """A certificate that does not verify (forged, expired, for another server)."""

    reason: str


ControlEvent = (
    ControlAnswered
    | ControlTimedOut
    | RefusedUnauthenticated
    | Nudged
    | ServerCertified
    | CertificateRejected
)


@dataclass(slots=True)
class _Pending:
    request: ControlBody
    first_sent: float
    next_send: float
    interval: float
    sent_at: float | None = None
    """When it was last transmitted (None: held until the control key is known)."""
    transmissions: int = 0


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
    replayed: int = 0
    hellos: int = 0
    bad_certificates: int = 0


class ControlClient:
    """Sans-I/O request/response with the P2P server over UDP."""

    def __init__(
        self,
        *,
        server: Address,
        device_key: DeviceKey,
        enrollment_token: bytes,
        console_keys: Sequence[VerifyKey],
        now: float,
        counter_start: int = 0,
        wall_offset: float | None = None,
        retry_initial: float = 0.5,
        retry_min: float = 0.2,
        retry_max: float = 4.0,
        give_up_after: float = 15.0,
        hello_refresh: float = 5.0,
    ) -> None:
        """``counter_start``: the first counter (the shell passes the wall clock in
        microseconds, so a restarted client starts above what the server last saw);
        ``wall_offset``: wall-clock time minus ``now``, to check certificate expiry
        (``None``: not checked, in simulations)."""
        self.server = server
        self.device_key = device_key
        self.device_id = device_key.device_id
        self._public = device_key.public_raw
        self._token = enrollment_token
        self.console_keys = tuple(console_keys)
        self.wall_offset = wall_offset
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: The server's answer time (a request's first transmission to its answer).
        self.answer_time = RttEstimator(retry_initial, retry_min, retry_max)
        self.give_up_after = give_up_after
        self.hello_refresh = hello_refresh
        self.counters = ControlCounters()
        self.certificate: ServerCertificate | None = None
        self._key: bytes | None = None
        self._address_token = bytes(ADDRESS_TOKEN_SIZE)
        self._counter = counter_start
        self._last_server_counter = 0
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[ControlEvent] = deque()
        self._next_request_id = ((counter_start ^ int(now * 1000)) & 0xFFFFFF) or 1
        self._hello_due: float | None = now
        self._hello_interval = retry_initial
        self._hello_sent = float("-inf")
        self._hellos_unanswered = 0
        self._unanswered_since: float | None = None
        """When the first datagram the server has not answered yet was sent."""

    # ----------------------------------------------------------- user calls

    def register(self, version: str, hostname: str, subnet_prefix: int, now: float) -> int:
        """REGISTER with this device's public key and the newest address token."""
        return self._send(Register(self._public, version, hostname[:64], subnet_prefix), now)

    def check_in(self, progress: list[ContentProgress], now: float) -> int:
        return self._send(CheckIn(tuple(progress)), now)

    def manifest_info(self, content_id: ContentId, now: float) -> int:
        return self._send(ManifestInfo(content_id), now)

    def lease(self, content_id: ContentId, now: float) -> int:
        return self._send(Lease(content_id), now)

    def peers(self, content_id: ContentId, now: float) -> int:
        return self._send(Peers(content_id, PEERS_PADDING), now)

    def bad_peer(self, content_id: ContentId, peer: Address, chunk_index: int, now: float) -> int:
        return self._send(BadPeer(content_id, peer, chunk_index), now)

    def install_report(self, report: InstallReport, now: float) -> int:
        return self._send(report, now)

    def pending(self) -> int:
        return len(self._pending)

    def refresh_certificate(self, now: float) -> None:
        """Ask for the server's certificate again (at most every ``hello_refresh``)."""
        if self._hello_due is None:
            self._hello_due = max(now, self._hello_sent + self.hello_refresh)
            self._hello_interval = self.first_wait()

    def _send(self, body: ControlBody, now: float) -> int:
        if len(self._pending) >= MAX_PENDING:
            oldest = min(self._pending, key=lambda rid: self._pending[rid].first_sent)
            self._expire(oldest)
        request_id = self._next_request_id
        self._next_request_id = (self._next_request_id + 1) & 0xFFFFFFFF or 1
        interval = self.first_wait()
        pending = self._pending[request_id] = _Pending(body, now, now + interval, interval)
        self._transmit(request_id, pending, now)
        if self._unanswered_since is None and self._key is not None:
            self._unanswered_since = now
        return request_id

    def silent_for(self, now: float) -> float:
        """Seconds the server has left what we sent unanswered (0 when it answers):
        the agent says so after a few seconds, not when a request gives up."""
        return 0.0 if self._unanswered_since is None else now - self._unanswered_since

    def first_wait(self) -> float:
        """How long a request waits for its answer before it is sent again: the
        server's retransmission timeout once it has answered a request sent once."""
        answer_time = self.answer_time
        return self.retry_initial if answer_time.srtt is None else answer_time.rto

    def _transmit(self, request_id: int, pending: _Pending, now: float) -> None:
        """Send (or resend) a request, with a new counter; held until we have a key."""
        if self._key is None:
            return
        pending.sent_at = now
        pending.transmissions += 1
        body = pending.request
        self._counter += 1
        if isinstance(body, Register):  # echo the newest address token
            body = replace(body, address_token=self._address_token)
        message = ControlMessage(request_id, self.device_id, body, counter=self._counter)
        self._outbox.append((encode_control(message, self._key), self.server))
        self.counters.sent += 1

    # -------------------------------------------------------------- driving

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        if addr != self.server:
            self.counters.stray_replies += 1
            return
        try:
            message = decode_control(data, self._key or b"")
        except MalformedDatagram:
            self.counters.malformed += 1
            return
        self._unanswered_since = None  # the server (or its address) answers
        body = message.body
        if isinstance(body, Certificate):
            if self._on_certificate(body, now):
                if self._hellos_unanswered == 1:  # Karn: one HELLO sent
                    self.answer_time.on_sample(now - self._hello_sent)
                self._hellos_unanswered = 0
            return
        if not message.authenticated or self._key is None:
            self.counters.unauthenticated += 1
            if isinstance(body, Refused) and (
                message.request_id in self._pending or body.cause is RefusalCause.NO_CERTIFICATE
            ):
                self._events.append(RefusedUnauthenticated(body.cause, body.message))
                self.refresh_certificate(now)
            return
        if message.device_id != self.device_id:
            self.counters.stray_replies += 1
            return
        if message.counter <= self._last_server_counter:
            self.counters.replayed += 1  # a replayed or reordered old reply
            return
        self._last_server_counter = message.counter
        if isinstance(body, Refused) and body.cause is RefusalCause.ADDRESS_UNPROVEN:
            # Our address token is old: ask for a new one; the REGISTER goes again with it.
            self._hello_due = now
            self._hello_interval = self.first_wait()
            return
        if isinstance(body, Nudge):
            self.counters.nudges += 1
            self._events.append(Nudged(body.assignments_sha256))
            return
        pending = self._pending.pop(message.request_id, None)
        if pending is None:
            self.counters.stray_replies += 1  # a late duplicate answer
            return
        self.counters.answered += 1
        if pending.transmissions == 1 and pending.sent_at is not None:
            self.answer_time.on_sample(now - pending.sent_at)  # Karn: sent once
        self._events.append(ControlAnswered(message.request_id, pending.request, body))

    def _on_certificate(self, answer: Certificate, now: float) -> bool:
        """Take a CERTIFICATE answer; False if it does not verify."""
        wall = now + self.wall_offset if self.wall_offset is not None else float("-inf")
        try:
            certificate = verify_certificate(
                answer.certificate, self.console_keys, wall, self.server[0]
            )
            key = control_key(
                self.device_key.exchange(certificate.public_key),
                self._token,
                self._public,
                certificate.public_key,
            )
        except (CertificateInvalid, ValueError) as error:
            self.counters.bad_certificates += 1
            self._events.append(CertificateRejected(str(error)))
            return False
        self._hello_due = None
        renewed_token = answer.address_token != self._address_token
        self._address_token = answer.address_token
        if key == self._key:
            if renewed_token:
                for request_id, pending in self._pending.items():
                    if isinstance(pending.request, Register):
                        self._transmit(request_id, pending, now)
            return True
        self.certificate, self._key = certificate, key
        self._last_server_counter = 0  # another server key: its own counters
        self._events.append(ServerCertified(certificate))
        first_wait = self.first_wait()
        for request_id, pending in self._pending.items():  # held, or sent with the old key
            self._transmit(request_id, pending, now)
            pending.interval = first_wait
            pending.next_send = now + first_wait
        return True

    def handle_timer(self, now: float) -> None:
        if self._hello_due is not None and self._hello_due <= now:
            self._outbox.append(
                (encode_control(ControlMessage(0, self.device_id, Hello()), None), self.server)
            )
            self.counters.hellos += 1
            self._hellos_unanswered += 1
            self._hello_sent = now
            if self._unanswered_since is None:
                self._unanswered_since = now
            self._hello_due = now + self._hello_interval
            self._hello_interval = min(self._hello_interval * 2, self.retry_max)
        for request_id, pending in list(self._pending.items()):
            # The very sum get_timer gives: ``now - first_sent`` can round below
            # ``give_up_after`` at that deadline, which then never passed (simulated
            # time stood still at a request's give-up instant: estate-faults at 100 MiB).
            if now >= pending.first_sent + self.give_up_after:
                self._expire(request_id)
            elif pending.next_send <= now:
                if self._key is None:
                    # Held, never sent: nothing was lost, so no backoff (it is sent,
                    # with the server's first wait, once the certificate is in).
                    pending.next_send = now + pending.interval
                    continue
                pending.interval = min(pending.interval * 2, self.retry_max)
                pending.next_send = now + pending.interval
                self._transmit(request_id, pending, now)
                self.counters.retransmitted += 1

    def _expire(self, request_id: int) -> None:
        pending = self._pending.pop(request_id)
        self.counters.timed_out += 1
        self._events.append(ControlTimedOut(request_id, pending.request))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def get_timer(self) -> float | None:
        # No list, no ``min`` call: the pump asks after every input (issue 9).
        earliest = self._hello_due
        give_up_after = self.give_up_after
        for pending in self._pending.values():
            due = pending.first_sent + give_up_after
            if pending.next_send < due:
                due = pending.next_send
            if earliest is None or due < earliest:
                earliest = due
        return earliest

    def next_event(self) -> ControlEvent | None:
        return self._events.popleft() if self._events else None

    def has_events(self) -> bool:
        return bool(self._events)
