"""The server's side of the control channel: limit, authenticate, decide, answer.

Sans-I/O. For each datagram, in order:

1. decode it without trusting it (``pull_control``); a protocol version we do not
   speak gets a ``VERSION_ERROR``; anything else malformed is counted and dropped;
2. per source address, a token bucket per kind (``HELLO``, ``REGISTER``, the rest):
   past it the datagram is dropped and counted, before any cryptography;
3. ``HELLO`` gets the server's certificate and an address token
   (``AddressTokens``), only if the answer is at most 3x the request's size (so the
   server reflects nothing bigger to a forged address);
4. every other datagram must carry the tag of its device's control key: a REGISTER's
   key is derived from the public key it carries (whose device ID must be the sender's),
   any other's from the registered device's key. A REGISTER must also echo a recent
   address token for its source IP (``REFUSED(ADDRESS_UNPROVEN)`` otherwise): a device
   is registered only at an address where it receives. A datagram we cannot check gets an
   unauthenticated ``REFUSED`` (rate-limited, <= 3x the request) so the client can tell
   the user what is wrong; a replayed or older counter gets an authenticated
   ``REFUSED(REPLAYED)`` and changes nothing;
5. ``ServerCore`` decides; the answer goes back authenticated, with the server's own
   counter, to the sender's address, its lists (peers, banned peers) trimmed to 3x the
   request's size: a device with a key may still forge its source address.

When the assignments change, every client that has spoken to the server gets a
``NUDGE``, ``NUDGES_PER_ROUND`` at a time every ``NUDGE_SPACING`` seconds (2,000 a
second: 10,000 clients in 5 s), so that tens of thousands of clients do not overflow a
socket buffer at once, and their check-ins come no faster than the burst the server is
sized for (issue 10: 10,000 check-ins within 5 s). Faster, the nudges and the check-ins
they cause arrive together and answers wait behind them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shoal.core.address import Address
from shoal.core.identity import device_id_of
from shoal.server.address_tokens import AddressTokens
from shoal.server.core import ServerCore
from shoal.server.limits import Buckets
from shoal.wire.control import (
    HEADER_SIZE,
    TAG_SIZE,
    Certificate,
    CheckInReply,
    ControlBody,
    ControlMessage,
    Hello,
    PeerList,
    RefusalCause,
    Refused,
    Register,
    encode_control,
    pull_control,
    tag_matches,
)
from shoal.wire.decoding import CONTROL_VERSION_ERROR_REPLY, Undecodable, decode_counted

MAX_OUTBOX = 8192
NUDGES_PER_ROUND = 20
NUDGE_SPACING = 0.010
AMPLIFICATION_LIMIT = 3
"""Nothing goes to an unproven address bigger than 3x what came from it (issue 13)."""


@dataclass(slots=True)
class ServerControlCounters:
    answered: int = 0
    wrong_key: int = 0
    unknown_device: int = 0
    replayed: int = 0
    address_unproven: int = 0
    rate_limited: int = 0
    refusals_suppressed: int = 0
    certificates_sent: int = 0
    hello_too_small: int = 0
    unsupported_version: int = 0
    wrong_magic: int = 0
    malformed: int = 0
    dropped_replies: int = 0
    nudges_sent: int = 0


class ServerControl:
    """Answers clients' control datagrams with ``ServerCore``'s decisions."""

    def __init__(self, core: ServerCore, counter_base: int = 0) -> None:
        """``counter_base``: the wall clock in microseconds at start (the shell's), so the
        server's counters keep growing across restarts."""
        self.core = core
        self.counters = ServerControlCounters()
        self._outbox: list[tuple[bytes, Address]] = []
        self._next_nudges: float | None = None
        self._counter_base = counter_base
        self._counter = 0
        limits = core.settings.limits
        self._hellos = Buckets(limits.hello_burst, limits.hello_rate)
        self._registers = Buckets(limits.register_burst, limits.register_rate)
        self._requests = Buckets(limits.request_burst, limits.request_rate)
        self._refusals = Buckets(limits.refusal_burst, limits.refusal_rate)
        self.address_tokens = AddressTokens()

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        counters = self.counters
        message = decode_counted(pull_control, data, counters)
        if message is Undecodable.UNSUPPORTED_VERSION:
            if len(CONTROL_VERSION_ERROR_REPLY) <= AMPLIFICATION_LIMIT * len(data):
                self._queue(CONTROL_VERSION_ERROR_REPLY, addr)
            return
        if isinstance(message, Undecodable):
            return
        body = message.body
        buckets = (
            self._hellos
            if isinstance(body, Hello)
            else self._registers
            if isinstance(body, Register)
            else self._requests
        )
        if not buckets.allow(addr[0], now):
            counters.rate_limited += 1
            return
        if isinstance(body, Hello):
            self._answer_hello(message, len(data), addr, now)
            return
        core = self.core
        if isinstance(body, Register):
            key = core.control_key_for(body.public_key)
            if key is not None and device_id_of(body.public_key) != message.device_id:
                # Checked after the tag below: only the key's holder learns of it.
                body = Refused(
                    RefusalCause.INVALID_REQUEST,
                    "device_id: not the ID of the public key in this REGISTER",
                )
        else:
            key = core.control_key_of(message.device_id)
            if key is None:
                counters.unknown_device += 1
                self._refuse_unauthenticated(
                    message,
                    len(data),
                    addr,
                    now,
                    Refused(RefusalCause.UNKNOWN_DEVICE, "unknown device: register again"),
                )
                return
        if key is None or not tag_matches(data, key):
            counters.wrong_key += 1
            self._refuse_unauthenticated(
                message,
                len(data),
                addr,
                now,
                Refused(
                    RefusalCause.AUTHENTICATION_FAILED,
                    "authentication failed: wrong enrollment token, or the server's "
                    "certificate changed",
                ),
            )
            return
        if isinstance(body, Refused):
            self._reply(message, key, body, addr, now)
            return
        if not core.accept_counter(message.device_id, message.counter):
            counters.replayed += 1
            refusal = Refused(
                RefusalCause.REPLAYED, "counter not above the last one accepted (a replay?)"
            )
            self._reply(message, key, refusal, addr, now)
            return
        if isinstance(body, Register) and not self.address_tokens.valid(
            addr[0], body.address_token, now
        ):
            counters.address_unproven += 1
            refusal = Refused(RefusalCause.ADDRESS_UNPROVEN, "address token missing or old")
            self._reply(message, key, refusal, addr, now)
            return
        reply_body = _fit(core.handle_control(message, addr, now), len(data))
        counters.answered += 1
        self._reply(message, core.control_key_of(message.device_id) or key, reply_body, addr, now)

    def _answer_hello(self, message: ControlMessage, size: int, addr: Address, now: float) -> None:
        certificate = self.core.certificate
        body: ControlBody = (
            Certificate(certificate, self.address_tokens.issue(addr[0], now))
            if certificate is not None
            else Refused(RefusalCause.NO_CERTIFICATE, "no certificate from the console yet")
        )
        reply = encode_control(ControlMessage(message.request_id, message.device_id, body), None)
        if len(reply) > AMPLIFICATION_LIMIT * size:
            self.counters.hello_too_small += 1
            return
        self.counters.certificates_sent += 1
        self._queue(reply, addr)

    def _refuse_unauthenticated(
        self, message: ControlMessage, size: int, addr: Address, now: float, refusal: Refused
    ) -> None:
        """Tell the sender what is wrong, within 3x its bytes and a per-source rate."""
        self.core.note_refusal(message.device_id, addr, refusal)
        if not self._refusals.allow(addr[0], now):
            self.counters.refusals_suppressed += 1
            return
        reply = ControlMessage(message.request_id, message.device_id, refusal)
        datagram = encode_control(reply, None)
        excess = len(datagram) - AMPLIFICATION_LIMIT * size
        if excess > 0:
            text = refusal.message.encode()[: max(0, len(refusal.message.encode()) - excess)]
            shorter = Refused(refusal.cause, text.decode("utf-8", "ignore"))
            datagram = encode_control(
                ControlMessage(message.request_id, message.device_id, shorter), None
            )
            if len(datagram) > AMPLIFICATION_LIMIT * size:
                return
        self._queue(datagram, addr)

    def _next_counter(self, now: float) -> int:
        self._counter = max(self._counter + 1, self._counter_base + int(now * 1_000_000))
        return self._counter

    def _reply(
        self, message: ControlMessage, key: bytes, body: ControlBody, addr: Address, now: float
    ) -> None:
        reply = ControlMessage(
            message.request_id, message.device_id, body, counter=self._next_counter(now)
        )
        self._queue(encode_control(reply, key), addr)

    def _queue(self, datagram: bytes, addr: Address) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            self.counters.dropped_replies += 1
            return
        self._outbox.append((datagram, addr))

    def handle_timer(self, now: float) -> None:
        if self._next_nudges is not None and self._next_nudges <= now:
            self._send_nudges(now)  # the next round (get_timer moves on, or is None)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.core.nudges_pending and (self._next_nudges is None or self._next_nudges <= now):
            self._send_nudges(now)  # the first round goes at once
        outbox, self._outbox = self._outbox, []
        return outbox

    def _send_nudges(self, now: float) -> None:
        core = self.core
        for device_id, addr, nudge in core.take_nudges(NUDGES_PER_ROUND):
            key = core.control_key_of(device_id)
            if key is None:
                continue
            message = ControlMessage(0, device_id, nudge, counter=self._next_counter(now))
            self._queue(encode_control(message, key), addr)
            self.counters.nudges_sent += 1
        self._next_nudges = now + NUDGE_SPACING if core.nudges_pending else None

    def get_timer(self) -> float | None:
        return self._next_nudges


def _fit(body: ControlBody, request_size: int) -> ControlBody:
    """Trim a list answer to 3x the request: even an authenticated request may come from
    a forged source address (a device with a key can lie about where it is)."""
    budget = AMPLIFICATION_LIMIT * request_size - HEADER_SIZE - TAG_SIZE
    if isinstance(body, PeerList):
        room = max(0, (budget - 33) // 6)  # content ID, count; 6 bytes per peer
        if len(body.peers) > room:
            return replace(body, peers=body.peers[:room])
    elif isinstance(body, CheckInReply):
        room = max(0, (budget - 37) // 4)  # digest, length, count; 4 bytes per address
        if len(body.banned) > room:
            return replace(body, banned=body.banned[:room])
    return body
