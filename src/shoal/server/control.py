"""The server's side of the control channel: decode, authenticate, decide, answer.

Sans-I/O. A datagram whose tag does not verify is answered with an unauthenticated
``REFUSED(WRONG_SERVER_KEY)`` (so the client can say what is wrong) and counted; a
datagram in a protocol version we do not speak gets a ``VERSION_ERROR``; anything
else malformed is counted and dropped. Replies go back to the sender's address.

When the assignments change, every client that has spoken to the server gets a
``NUDGE``, ``NUDGES_PER_ROUND`` at a time every ``NUDGE_SPACING`` seconds, so that tens
of thousands of clients do not overflow a socket buffer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.server.core import ServerCore
from shoal.wire.control import (
    AuthenticationFailed,
    ControlMessage,
    RefusalCause,
    Refused,
    decode_control,
    encode_control,
)
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import (
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    VersionError,
    encode_datagram,
)

Address = tuple[str, int]
MAX_OUTBOX = 8192
NUDGES_PER_ROUND = 256
NUDGE_SPACING = 0.005


@dataclass(slots=True)
class ServerControlCounters:
    answered: int = 0
    wrong_key: int = 0
    unsupported_version: int = 0
    wrong_magic: int = 0
    malformed: int = 0
    dropped_replies: int = 0
    nudges_sent: int = 0


class ServerControl:
    """Answers clients' control datagrams with ``ServerCore``'s decisions."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.counters = ServerControlCounters()
        self._outbox: list[tuple[bytes, Address]] = []
        self._next_nudges: float | None = None

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        key = self.core.settings.server_key
        counters = self.counters
        try:
            message = decode_control(data, key)
        except AuthenticationFailed:
            counters.wrong_key += 1
            refusal = Refused(
                RefusalCause.WRONG_SERVER_KEY,
                "authentication failed: this client's server key does not match the "
                "P2P server's (set the key shown in the console)",
            )
            request_id, device_id = _header_fields(data)
            self.core.recent_refusals.append((device_id, addr, refusal))
            self._queue(encode_control(ControlMessage(request_id, device_id, refusal), key), addr)
            return
        except UnsupportedProtocolVersion:
            counters.unsupported_version += 1
            version_error = VersionError(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION)
            self._queue(encode_datagram(version_error), addr)
            return
        except WrongMagic:
            counters.wrong_magic += 1
            return
        except MalformedDatagram:
            counters.malformed += 1
            return
        reply_body = self.core.handle_control(message, addr, now)
        counters.answered += 1
        reply = ControlMessage(message.request_id, message.device_id, reply_body)
        self._queue(encode_control(reply, key), addr)

    def _queue(self, datagram: bytes, addr: Address) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            self.counters.dropped_replies += 1
            return
        self._outbox.append((datagram, addr))

    def handle_timer(self, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.core.nudges_pending and (self._next_nudges is None or self._next_nudges <= now):
            self._send_nudges(now)
        outbox, self._outbox = self._outbox, []
        return outbox

    def _send_nudges(self, now: float) -> None:
        key = self.core.settings.server_key
        for device_id, addr, nudge in self.core.take_nudges(NUDGES_PER_ROUND):
            self._queue(encode_control(ControlMessage(0, device_id, nudge), key), addr)
            self.counters.nudges_sent += 1
        self._next_nudges = now + NUDGE_SPACING if self.core.nudges_pending else None

    def get_timer(self) -> float | None:
        return self._next_nudges


def _header_fields(data: bytes | memoryview) -> tuple[int, bytes]:
    """Request ID and device ID of a datagram that decoded up to its tag."""
    raw = bytes(data)
    return int.from_bytes(raw[4:8], "big"), raw[8:24]
