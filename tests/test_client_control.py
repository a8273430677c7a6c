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


def resend_times(control: ControlClient, until: float) -> list[float]:
    """When the pending request goes out again, stepping the timer to ``until``."""
    times = []
    while (deadline := control.get_timer()) is not None and deadline <= until:
        control.handle_timer(deadline)
        times += [deadline] * len(control.datagrams_to_send(deadline))
    return [round(t, 3) for t in times]


def test_a_lost_request_is_sent_again_after_the_servers_measured_answer_time() -> None:
    """On a lossy link a lost check-in costs a few round trips, not half a second and its
    doubling: once the server answered a request sent once, its RTO (RFC 6298, at least
    ``retry_min``) is a request's first wait."""
    control = client()
    assert control.first_wait() == control.retry_initial  # nothing measured yet
    for number in range(4):
        request_id = control.check_in([], now=10.0 * number)
        control.datagrams_to_send(10.0 * number)
        control.receive_datagram(
            answer(CheckInReply(DIGEST, 3), counter=number + 1, request_id=request_id),
            SERVER,
            now=10.0 * number + 0.03,  # answered in 30 ms
        )
    assert control.first_wait() == control.answer_time.min_rto == 0.2
    control.check_in([], now=100.0)
    control.datagrams_to_send(100.0)
    assert resend_times(control, 102.0) == [100.2, 100.6, 101.4]  # 0.2, then doubling


def test_a_request_answered_after_a_resend_is_no_sample_and_a_slow_server_waits_longer() -> None:
    control = client()
    request_id = control.check_in([], now=0.0)
    control.datagrams_to_send(0.0)
    control.handle_timer(0.5)  # resent: its answer may be the first transmission's
    control.datagrams_to_send(0.5)
    control.receive_datagram(answer(CheckInReply(DIGEST, 3), request_id=request_id), SERVER, 0.51)
    assert control.answer_time.srtt is None and control.first_wait() == control.retry_initial
    request_id = control.check_in([], now=1.0)
    control.datagrams_to_send(1.0)
    control.receive_datagram(
        answer(CheckInReply(DIGEST, 3), counter=2, request_id=request_id), SERVER, 1.4
    )
    assert control.first_wait() > 0.4  # a server that takes 0.4 s is not asked every 0.2 s


def test_a_request_held_for_the_certificate_is_not_backed_off_meanwhile() -> None:
    """HELLOs lost for 1.5 s: the check-in queued at 0 goes out with the certificate and
    waits one first wait, not the 2 s its unsent retries would have doubled it to."""
    control = client(certified=False)
    control.check_in([], now=0.0)
    for now in (0.0, 0.5, 1.5):
        control.handle_timer(now)
        assert [pull_control(data).body for data, _ in control.datagrams_to_send(now)] == [Hello()]
    control.receive_datagram(answer(Certificate(certificate()), None), SERVER, now=1.52)
    assert isinstance(control.next_event(), ServerCertified)
    assert len(control.datagrams_to_send(1.52)) == 1
    assert resend_times(control, 2.6) == [2.02]  # 0.5 s later (nothing measured), then 1 s


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
