"""The client's control channel: the certificate first, then only its server's datagrams."""

from __future__ import annotations

import hashlib

from shoal.client.control import (
    CertificateRejected,
    ControlAnswered,
    ControlClient,
    ControlTimedOut,
    Nudged,
    ServerCertified,
)
from shoal.core.identity import DeviceKey, control_key
from shoal.core.server_cert import issue_certificate
from shoal.core.signing import SigningKey
from shoal.wire.control import (
    Certificate,
    CheckInReply,
    ControlMessage,
    Hello,
    Nudge,
    decode_control,
    encode_control,
    pull_control,
)

SERVER = ("10.0.0.2", 41441)
CONSOLE = SigningKey.generate()
SERVER_KEY = DeviceKey.generate()
DEVICE_KEY = DeviceKey.generate()
DEVICE = DEVICE_KEY.device_id
TOKEN = bytes(16)
KEY = control_key(
    SERVER_KEY.exchange(DEVICE_KEY.public_raw), TOKEN, DEVICE_KEY.public_raw, SERVER_KEY.public_raw
)
SERVER_ID = "00112233445566778899aabbccddeeff"
DIGEST = hashlib.sha256(b"assignments").digest()


def certificate(signer: SigningKey = CONSOLE, address: str = SERVER[0]) -> bytes:
    return issue_certificate(signer, SERVER_KEY.public_raw, SERVER_ID, address, "p2p", 0.0)


def client(certified: bool = True) -> ControlClient:
    control = ControlClient(
        server=SERVER,
        device_key=DEVICE_KEY,
        enrollment_token=TOKEN,
        console_keys=[CONSOLE.verify_key],
        now=0,
    )
    if certified:
        control.receive_datagram(answer(Certificate(certificate()), None), SERVER, now=0)
        assert isinstance(control.next_event(), ServerCertified)
    return control


def answer(body: object, key: bytes | None = KEY, counter: int = 1, request_id: int = 0) -> bytes:
    return encode_control(ControlMessage(request_id, DEVICE, body, counter=counter), key)  # type: ignore[arg-type]


def test_requests_wait_for_a_certificate_checked_against_the_pinned_console_key() -> None:
    control = client(certified=False)
    control.handle_timer(0)
    hello = control.datagrams_to_send(0)
    assert [pull_control(data).body for data, _ in hello] == [Hello()]
    request_id = control.check_in([], now=0)
    assert control.datagrams_to_send(0) == []  # held: no control key yet
    forged = issue_certificate(
        SigningKey.generate(), DeviceKey.generate().public_raw, SERVER_ID, SERVER[0], "evil", 0.0
    )
    control.receive_datagram(answer(Certificate(forged), None), SERVER, now=0.1)
    event = control.next_event()
    assert isinstance(event, CertificateRejected) and "pinned console key" in event.reason
    assert control.datagrams_to_send(0.1) == []
    control.receive_datagram(
        answer(Certificate(certificate(address="10.0.0.9")), None), SERVER, 0.2
    )
    assert isinstance(control.next_event(), CertificateRejected)
    control.receive_datagram(answer(Certificate(certificate()), None), SERVER, now=0.3)
    assert isinstance(control.next_event(), ServerCertified)
    ((sent, _),) = control.datagrams_to_send(0.3)
    message = decode_control(sent, KEY)  # authenticated with the device's control key
    assert message.request_id == request_id and message.device_id == DEVICE
    control.receive_datagram(answer(CheckInReply(DIGEST, 3), request_id=request_id), SERVER, 0.4)
    reply = control.next_event()
    assert isinstance(reply, ControlAnswered) and reply.reply == CheckInReply(DIGEST, 3)


def test_retransmissions_carry_new_counters() -> None:
    control = client()
    control.check_in([], now=0)
    first = pull_control(control.datagrams_to_send(0)[0][0])
    control.handle_timer(1.0)
    second = pull_control(control.datagrams_to_send(1.0)[0][0])
    assert second.request_id == first.request_id and second.counter > first.counter


def test_an_authenticated_nudge_from_the_server_is_an_event() -> None:
    control = client()
    control.receive_datagram(answer(Nudge(DIGEST, 11)), SERVER, now=1)
    assert control.next_event() == Nudged(DIGEST)
    assert control.counters.nudges == 1


def test_nudges_with_another_key_from_elsewhere_or_replayed_are_ignored() -> None:
    control = client()
    control.receive_datagram(answer(Nudge(DIGEST, 11), b"someone else's key"), SERVER, now=1)
    control.receive_datagram(answer(Nudge(DIGEST, 11)), ("10.1.0.66", 41441), now=1)
    control.receive_datagram(answer(Nudge(DIGEST, 11), counter=5), SERVER, now=1)
    assert control.next_event() == Nudged(DIGEST)
    control.receive_datagram(answer(Nudge(DIGEST, 11), counter=5), SERVER, now=2)  # replayed
    assert control.next_event() is None
    assert control.counters.malformed == 1  # the tag does not verify
    assert control.counters.stray_replies == 1
    assert control.counters.replayed == 1
    assert control.counters.nudges == 1


def test_an_unanswered_request_gives_up_at_its_deadline_whatever_the_rounding() -> None:
    """Sent at 2.800008 s, (2.800008 + 15) - 2.800008 is just under 15 in binary floating
    point: the timer's deadline must still end the request, not be asked again forever."""
    control = client()
    sent_at = 2.8000079999999996
    assert (sent_at + control.give_up_after) - sent_at < control.give_up_after
    control.check_in([], now=sent_at)
    deadlines = []
    while (deadline := control.get_timer()) is not None and len(deadlines) < 50:
        control.handle_timer(deadline)
        control.datagrams_to_send(deadline)
        deadlines.append(deadline)
    assert isinstance(control.next_event(), ControlTimedOut)
    assert deadlines == sorted(set(deadlines)), "a deadline handle_timer left due"
    assert deadlines[-1] == sent_at + control.give_up_after
