"""The client's control channel: nudges from its server, and nothing from anyone else."""

from __future__ import annotations

import hashlib

from shoal.client.control import ControlClient, Nudged
from shoal.wire.control import ControlMessage, Nudge, encode_control

SERVER = ("10.0.0.2", 41441)
KEY = b"the server key"
DEVICE = bytes(range(16))
DIGEST = hashlib.sha256(b"assignments").digest()


def client() -> ControlClient:
    return ControlClient(server=SERVER, key=KEY, device_id=DEVICE, now=0)


def nudge(key: bytes = KEY) -> bytes:
    return encode_control(ControlMessage(0, DEVICE, Nudge(DIGEST, 11)), key)


def test_an_authenticated_nudge_from_the_server_is_an_event() -> None:
    control = client()
    control.receive_datagram(nudge(), SERVER, now=1)
    assert control.next_event() == Nudged(DIGEST)
    assert control.counters.nudges == 1


def test_nudges_with_another_key_or_from_elsewhere_are_ignored() -> None:
    control = client()
    control.receive_datagram(nudge(b"someone else's key"), SERVER, now=1)
    control.receive_datagram(nudge(), ("10.1.0.66", 41441), now=1)
    assert control.next_event() is None
    assert control.counters.malformed == 1  # the tag does not verify
    assert control.counters.stray_replies == 1
    assert control.counters.nudges == 0
