"""Issue 13's attacks on the control channel, each tried the way a hostile LAN device would.

Rows of the issue's table: 1 (a device answers for the server), 5 (values the console
cannot take), 6 (replay, speaking for another device), 7 (renewing the office's lease
without fetching), 8 (forged registrations), 9 (bad-peer report floods). Real datagrams
go through the real codecs, ``ControlClient``, ``ServerControl`` and ``ServerCore``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.client.agent import AgentConfig, AgentCore
from shoal.client.control import ControlAnswered, ControlClient, RefusedUnauthenticated
from shoal.client.trust import TrustState
from shoal.core.identity import DeviceKey, control_key
from shoal.core.packing import pack_bytes
from shoal.core.server_cert import issue_certificate
from shoal.core.signing import SigningKey
from shoal.server.control import ServerControl
from shoal.server.core import ServerCore, ServerSettings
from shoal.server.limits import AbuseLimits
from shoal.store.content_store import ContentStore
from shoal.topology import parse_json
from shoal.wire.control import (
    BadPeer,
    Certificate,
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlBody,
    ControlMessage,
    Hello,
    Lease,
    LeaseDecision,
    LeaseReply,
    PeerList,
    Peers,
    RefusalCause,
    Refused,
    Register,
    Registered,
    encode_control,
    pull_control,
)

CONSOLE = SigningKey.generate()
TOKEN = b"enrollment-token"
SERVER_ADDRESS = ("10.0.0.2", 41441)
SERVER_ID = "0123456789abcdef0123456789abcdef"
MANIFEST = pack_bytes(os.urandom(200_000), 65536)
MANIFEST_FILE = CONSOLE.sign(MANIFEST).encode()
CONTENT = MANIFEST.content_id
TOPOLOGY = parse_json(
    {
        "offices": [
            {"office": "Central Office", "parent": None, "subnets": ["10.0.0.0/24"]},
            {"office": "Branch", "parent": "Central Office", "subnets": ["10.1.0.0/24"]},
        ]
    }
)


def make_server(
    limits: AbuseLimits | None = None, identity: DeviceKey | None = None
) -> ServerControl:
    """A P2P server; with ``identity``, that server's process started again (its
    registry empty: it registered nobody since)."""
    identity = identity or DeviceKey.generate()
    core = ServerCore(
        ServerSettings(
            enrollment_token=TOKEN,
            identity=identity,
            lease_seconds=10.0,
            limits=limits or AbuseLimits(),
        )
    )
    core.topology = TOPOLOGY
    core.licence.active = True
    core.add_manifest(MANIFEST_FILE)
    core.certificate = issue_certificate(
        CONSOLE, identity.public_raw, SERVER_ID, SERVER_ADDRESS[0], "p2p", 0.0
    )
    return ServerControl(core)


class Device:
    """An enrolled device: its own key, the genuine ``ControlClient``, an address."""

    def __init__(self, server: ServerControl, ip: str, key: DeviceKey | None = None) -> None:
        self.server = server
        self.ip = ip
        self.key = key or DeviceKey.generate()
        self.control = ControlClient(
            server=SERVER_ADDRESS,
            device_key=self.key,
            enrollment_token=TOKEN,
            console_keys=[CONSOLE.verify_key],
            now=0,
        )
        self.sent: list[bytes] = []

    @property
    def device_id(self) -> bytes:
        return self.key.device_id

    @property
    def control_key(self) -> bytes:
        server_public = self.server.core.settings.identity.public_raw
        return control_key(
            self.key.exchange(server_public), TOKEN, self.key.public_raw, server_public
        )

    def ask(self, call: str, *arguments: object, now: float = 0.0) -> ControlBody:
        """One request through the genuine client, answered by the server."""
        request_id = getattr(self.control, call)(*arguments, now=now)
        for _ in range(6):
            self.control.handle_timer(now)
            for data, _ in self.control.datagrams_to_send(now):
                self.sent.append(data)
                self.server.receive_datagram(data, (self.ip, 50000), now)
            for data, addr in self.server.datagrams_to_send(now):
                if addr[0] == self.ip:
                    self.control.receive_datagram(data, SERVER_ADDRESS, now)
            while (event := self.control.next_event()) is not None:
                if isinstance(event, ControlAnswered) and event.request_id == request_id:
                    return event.reply
        raise AssertionError(f"no answer to {call}")

    def register(self, now: float = 0.0) -> ControlBody:
        return self.ask("register", "0.1.0", f"pc-{self.ip}", 24, now=now)

    def forge(self, body: ControlBody, device_id: bytes, counter: int) -> bytes:
        """A datagram this device tags with its own key, whatever device ID it claims (a
        REGISTER with the address token its own HELLO would get)."""
        if isinstance(body, Register):
            token = self.server.address_tokens.issue(self.ip, 0.0)
            body = replace(body, address_token=token)
        message = ControlMessage(99, device_id, body, counter=counter)
        return encode_control(message, self.control_key)


def replies(server: ServerControl, ip: str) -> list[ControlMessage]:
    return [pull_control(data) for data, addr in server.datagrams_to_send(0) if addr[0] == ip]


# --- row 1 ------------------------------------------------------------------------------


def test_attack_1_a_device_answering_for_the_server_cannot_change_what_clients_trust(
    tmp_path: Path,
) -> None:
    """The server is down; a device answers from its address with its own certificate
    (signed by its own "console key") and its own REGISTERED. Nothing is accepted, the
    pinned console key stays, and the real server is accepted when it is back."""
    pinned = TrustState((CONSOLE.verify_key.raw,))
    device = DeviceKey.generate()
    agent = AgentCore(
        AgentConfig(
            device_key=device,
            hostname="pc",
            ip="10.1.0.5",
            subnet_prefix=24,
            server=SERVER_ADDRESS,
            enrollment_token=TOKEN,
            trust=pinned,
        ),
        ContentStore(tmp_path / "cache", durable=False),
        0.0,
    )
    agent.handle_timer(0.0)
    agent.control.handle_timer(0.0)
    hello = [pull_control(data).body for data, _ in agent.control.datagrams_to_send(0.0)]
    assert hello == [Hello()]

    # The attacker holds the enrollment token (every device does) but not the console's
    # signing key nor the server's private key.
    attacker_console, attacker_server = SigningKey.generate(), DeviceKey.generate()
    forged = issue_certificate(
        attacker_console, attacker_server.public_raw, SERVER_ID, SERVER_ADDRESS[0], "p2p", 0.0
    )
    agent.control.receive_datagram(
        encode_control(ControlMessage(0, device.device_id, Certificate(forged)), None),
        SERVER_ADDRESS,
        0.1,
    )
    attacker_key = control_key(
        attacker_server.exchange(device.public_raw),
        TOKEN,
        device.public_raw,
        attacker_server.public_raw,
    )
    for request_id in [0, *agent.control._pending]:  # give the attacker every request ID
        registered = Registered("0.1.0", "Branch", 0, 60, 1, 2, 3, 0, 0)  # type: ignore[arg-type]
        for key in (attacker_key, TOKEN):
            forged_reply = ControlMessage(request_id, device.device_id, registered, counter=9)
            agent.control.receive_datagram(encode_control(forged_reply, key), SERVER_ADDRESS, 0.2)
    agent.poll(0.2)
    assert agent.control.certificate is None and agent.registration is None
    assert agent.control.counters.bad_certificates == 1
    assert "refused a P2P server certificate" in agent.server_note
    assert agent.trust.console_key.raw == CONSOLE.verify_key.raw
    assert not hasattr(Registered, "console_key")  # REGISTERED cannot carry one any more

    # The real server comes back: its certificate verifies, the agent registers.
    server = make_server()
    for now in (1.0, 2.0, 3.0):
        agent.handle_timer(now)
        agent.control.handle_timer(now)
        for data, _ in agent.control.datagrams_to_send(now):
            server.receive_datagram(data, ("10.1.0.5", 50000), now)
        for data, _ in server.datagrams_to_send(now):
            agent.control.receive_datagram(data, SERVER_ADDRESS, now)
        agent.poll(now)
    assert agent.registration is not None and agent.registration.office == "Branch"
    assert agent.trust.console_key.raw == CONSOLE.verify_key.raw


def test_a_certificate_for_another_address_or_expired_is_refused() -> None:
    server = make_server()
    device = Device(server, "10.1.0.5")
    identity = server.core.settings.identity.public_raw
    elsewhere = issue_certificate(CONSOLE, identity, SERVER_ID, "10.0.0.99", "p2p", 0.0)
    expired = issue_certificate(CONSOLE, identity, SERVER_ID, SERVER_ADDRESS[0], "p2p", 0.0, 10)
    device.control.wall_offset = 1000.0
    for certificate in (elsewhere, expired):
        message = ControlMessage(0, device.device_id, Certificate(certificate))
        device.control.receive_datagram(encode_control(message, None), SERVER_ADDRESS, 0.0)
    assert device.control.certificate is None
    assert device.control.counters.bad_certificates == 2


# --- row 5 ------------------------------------------------------------------------------


def test_attack_5_control_characters_and_out_of_range_values_are_refused_at_the_server() -> None:
    server = make_server()
    device = Device(server, "10.1.0.5")
    bad_registers = [("0.1.0", name) for name in ("pc\x1b[31m", "pc\nnext", "pc\u200e", "x" * 65)]
    for counter, (version, hostname) in enumerate([*bad_registers, ("0.1.0\x00", "pc")], 1):
        body = Register(device.key.public_raw, version, hostname, 24)
        server.receive_datagram(device.forge(body, device.device_id, counter), (device.ip, 1), 0)
        (reply,) = replies(server, device.ip)
        refused = reply.body
        assert isinstance(refused, Refused) and refused.cause is RefusalCause.INVALID_REQUEST
        assert ("hostname" if hostname != "pc" else "version") in refused.message
    assert server.core.clients == {}
    assert isinstance(device.register(), Registered)
    for progress, field in (
        (ContentProgress(CONTENT, 1, 4, 2**62, 0), "bytes_from_peers"),
        (ContentProgress(CONTENT, 1, 4, 0, 2**63 + 5), "bytes_from_server"),
        (ContentProgress(CONTENT, 5, 4, 0, 0), "chunks_done"),
    ):
        refused = device.ask("check_in", [progress])
        assert isinstance(refused, Refused) and refused.cause is RefusalCause.INVALID_REQUEST
        assert field in refused.message
    record = server.core.clients[device.device_id]
    assert record.content == {} and record.hostname == "pc-10.1.0.5"


# --- row 6 ------------------------------------------------------------------------------


def test_attack_6_replayed_checkins_and_requests_for_another_device_are_refused() -> None:
    server = make_server()
    victim = Device(server, "10.1.0.5")
    attacker = Device(server, "10.1.0.66")
    assert isinstance(victim.register(), Registered)
    assert isinstance(attacker.register(), Registered)
    assert isinstance(victim.ask("check_in", [ContentProgress(CONTENT, 0, 4, 0, 0)]), CheckInReply)
    captured = victim.sent[-1]
    core = server.core

    # Replay of the captured CHECKIN, from another IP and from the victim's own.
    for ip in ("10.1.0.66", "10.1.0.5"):
        server.receive_datagram(captured, (ip, 50000), 1.0)
        (reply,) = replies(server, ip)
        assert isinstance(reply.body, Refused) and reply.body.cause is RefusalCause.REPLAYED
    assert core.clients[victim.device_id].ip == "10.1.0.5"
    assert server.counters.replayed == 2

    # The attacker claims the victim's device ID: its tags are not the victim's.
    complete = CheckIn((ContentProgress(CONTENT, 4, 4, 0, 0),))
    for body in (
        complete,
        Lease(CONTENT),
        Peers(CONTENT),
        BadPeer(CONTENT, ("10.1.0.7", 1), 0),
    ):
        server.receive_datagram(
            attacker.forge(body, victim.device_id, counter=2**62), ("10.1.0.66", 50000), 2.0
        )
        (reply,) = replies(server, "10.1.0.66")
        assert not reply_authenticated(reply) and isinstance(reply.body, Refused)
        assert reply.body.cause is RefusalCause.AUTHENTICATION_FAILED
    # ...and cannot register the victim's ID with its own key.
    impostor = Register(attacker.key.public_raw, "0.1.0", "pc", 24)
    server.receive_datagram(
        attacker.forge(impostor, victim.device_id, counter=2**62), ("10.1.0.66", 50000), 3.0
    )
    (reply,) = replies(server, "10.1.0.66")
    assert isinstance(reply.body, Refused) and "device_id" in reply.body.message
    record = core.clients[victim.device_id]
    assert record.ip == "10.1.0.5" and record.public_key == victim.key.public_raw
    assert record.content[CONTENT].chunks_done == 0  # not "complete"
    assert core.rendezvous.holder("Branch", CONTENT, 3.0) is None
    assert list(core.bad_peers.reports) == []
    # The victim itself still speaks: its counters keep growing.
    assert isinstance(victim.ask("check_in", [ContentProgress(CONTENT, 1, 4, 0, 0)]), CheckInReply)


def test_only_a_register_with_an_address_token_moves_a_device() -> None:
    server = make_server()
    device = Device(server, "10.1.0.5")
    device.register()
    device.ip = "10.1.0.7"  # a new DHCP lease (or a forged source address)
    moved = device.ask("check_in", [], now=1.0)
    assert isinstance(moved, Refused) and moved.cause is RefusalCause.UNKNOWN_DEVICE
    assert server.core.clients[device.device_id].ip == "10.1.0.5"
    # The genuine client registers again: its old token is refused, it gets a new one.
    assert isinstance(device.register(now=2.0), Registered)
    assert server.counters.address_unproven == 1
    assert server.core.clients[device.device_id].ip == "10.1.0.7"


def reply_authenticated(message: ControlMessage) -> bool:
    return message.authenticated  # pull_control never trusts: the tag was not checked


def test_a_datagram_replayed_after_a_server_restart_is_refused() -> None:
    """The last counter is kept with the registry (``ClientRow.last_counter``)."""
    server = make_server()
    device = Device(server, "10.1.0.5")
    device.register()
    device.ask("check_in", [])
    captured = device.sent[-1]
    record = server.core.clients[device.device_id]
    restarted = ServerControl(ServerCore(server.core.settings))
    restarted.core.licence.active = True
    restarted.core.topology = TOPOLOGY
    restarted.core.restore_client(record)  # as StateStore.load_clients gives it back
    restarted.receive_datagram(captured, ("10.1.0.66", 50000), 0.0)
    (reply,) = replies(restarted, "10.1.0.66")
    assert isinstance(reply.body, Refused) and reply.body.cause is RefusalCause.REPLAYED


# --- row 7 ------------------------------------------------------------------------------


def test_attack_7_renewing_the_lease_without_fetching_stalls_the_office_a_bounded_time() -> None:
    limits = AbuseLimits(stall_seconds=30.0, stall_penalty=300.0)
    server = make_server(limits)
    core = server.core
    attacker = Device(server, "10.1.0.66")
    honest = Device(server, "10.1.0.5")
    attacker.register()
    honest.register()
    assert lease_of(attacker, 0.0).decision is LeaseDecision.GRANTED
    now, honest_due, granted_at = 0.0, 0.0, None
    while now < 600.0 and granted_at is None:
        now += 1.0
        lease_of(attacker, now)  # renewed every second, no chunk ever fetched
        if now >= honest_due:
            answer = lease_of(honest, now)
            if answer.decision is LeaseDecision.GRANTED:
                granted_at = now
            honest_due = now + max(answer.valid_ms / 1000, 1.0)  # as the agent does
    assert granted_at is not None, "the office stalled for 600 s"
    bound = limits.stall_seconds + 1.0
    print(f"\nrow 7: a stalling rendezvous point held the office for {granted_at:.0f} s")
    assert granted_at <= bound
    # The honest holder fetches chunks: it keeps the lease; the staller is not re-granted.
    for _ in range(120):
        now += 1.0
        core.wan_copy.chunk_served("10.1.0.5", CONTENT, now)
        assert lease_of(honest, now).decision is LeaseDecision.GRANTED
        assert lease_of(attacker, now).decision is LeaseDecision.REDIRECTED
    assert core.rendezvous.stalls == 1


def lease_of(device: Device, now: float) -> LeaseReply:
    reply = device.ask("lease", CONTENT, now=now)
    assert isinstance(reply, LeaseReply), reply
    return reply


def run_agent(
    agent: AgentCore, server: ServerControl, start: float, end: float, *, stop: bool = True
) -> tuple[float, float] | None:
    """Agent and server exchange datagrams every 0.05 s from ``start`` to ``end``
    (``stop``: until ``server`` holds the agent's device in its registry). Returns when
    ``server`` first heard from the agent and when it first held its device (None if
    it never did)."""
    device_id = agent.config.device_key.device_id
    heard = held = None
    for step in range(round((end - start) / 0.05) + 1):
        now = start + step * 0.05
        agent.handle_timer(now)
        agent.control.handle_timer(now)
        for data, _ in agent.control.datagrams_to_send(now):
            heard = now if heard is None else heard
            server.receive_datagram(data, ("10.1.0.5", 50000), now)
        for data, _ in server.datagrams_to_send(now):
            agent.control.receive_datagram(data, SERVER_ADDRESS, now)
        agent.poll(now)
        if held is None and device_id in server.core.clients:
            held = now
            if stop:
                break
    return None if heard is None or held is None else (heard, held)


def test_a_server_restarted_without_our_row_has_us_back_at_once_and_forgeries_cost_little(
    tmp_path: Path,
) -> None:
    """A P2P server that restarts without a device's registry row refuses its requests
    UNKNOWN_DEVICE, unauthenticated (it no longer knows the device's key): the device
    registers again at once, not RETRY_SOON (5 s) later, since the server serves it
    nothing until then. Anyone can forge that refusal: a flood of them costs at most
    one REGISTER per RETRY_SOON."""
    identity = DeviceKey.generate()
    agent = AgentCore(
        AgentConfig(
            device_key=DeviceKey.generate(),
            hostname="pc",
            ip="10.1.0.5",
            subnet_prefix=24,
            server=SERVER_ADDRESS,
            enrollment_token=TOKEN,
            trust=TrustState((CONSOLE.verify_key.raw,)),
        ),
        ContentStore(tmp_path / "cache", durable=False),
        0.0,
    )
    assert run_agent(agent, make_server(identity=identity), 0.0, 10.0, stop=False)
    # Its next check-in (60 s +- jitter) meets the restarted server, which refuses it.
    times = run_agent(agent, make_server(identity=identity), 10.05, 120.0)
    assert times is not None and agent.registration is not None
    heard, registered = times
    assert heard > 30.0  # the check-in, not a registration
    assert registered - heard <= 0.2

    sent: list[float] = []
    register = agent.control.register

    def counting(version: str, hostname: str, subnet_prefix: int, now: float) -> int:
        sent.append(now)
        return register(version, hostname, subnet_prefix, now)

    agent.control.register = counting  # type: ignore[method-assign]
    forged = RefusedUnauthenticated(RefusalCause.UNKNOWN_DEVICE, "forged")
    for step in range(200):  # 20 s of forged refusals, ten a second
        now = registered + 1.0 + step * 0.1
        agent.registrar.on_unauthenticated_refusal(forged, now)
        agent.registrar.handle_timer(now)
    assert 4 <= len(sent) <= 5
    assert all(later - earlier >= 5.0 for earlier, later in itertools.pairwise(sent))


# --- row 8 ------------------------------------------------------------------------------


def test_attack_8_forged_registrations_take_no_seats_and_do_not_fill_the_registry() -> None:
    server = make_server()
    core = server.core
    # 3,000 REGISTERs with random device IDs and no enrollment token, in 0.4 s.
    for number in range(3000):
        key = DeviceKey.generate()
        body = Register(key.public_raw, "0.1.0", f"x{number}", 24)
        forged = encode_control(ControlMessage(number, key.device_id, body, counter=1), b"guess")
        server.receive_datagram(forged, ("10.1.0.66", 50000 + number % 1000), number / 7500)
    assert len(core.clients) == 0
    # 3,000 with the token (an enrolled device making key pairs), from another address.
    flood(server, "10.1.0.67", 3000, start=1.0)
    print(
        f"\nrow 8: {len(core.clients)} of 6,000 forged registrations entered the registry "
        f"({server.counters.rate_limited} dropped by the per-source rate)"
    )
    assert len(core.clients) <= core.settings.limits.register_burst
    assert server.counters.rate_limited > 5900
    # 3,000 with the token from 3,000 forged source addresses: none proves its address.
    spoofed = make_server()
    for number in range(3000):
        impostor = Device(spoofed, "10.1.0.67")
        body = Register(impostor.key.public_raw, "0.1.0", f"x{number}", 24)
        datagram = impostor.forge(body, impostor.device_id, counter=1)
        source = (f"10.1.{number // 250 + 1}.{number % 250 + 1}", 50000)
        spoofed.receive_datagram(datagram, source, 1.0 + number * 0.4 / 3000)
    assert len(spoofed.core.clients) == 0
    assert spoofed.counters.address_unproven == 3000
    # Even with no rate limit, one address registers at most new_devices_per_address.
    unlimited = make_server(AbuseLimits(register_burst=10_000))
    flood(unlimited, "10.1.0.67", 3000, start=1.0)
    cap = unlimited.core.settings.limits.new_devices_per_address
    assert len(unlimited.core.clients) == cap
    assert unlimited.core.refusals_sent[RefusalCause.RATE_LIMITED] == 3000 - cap
    # A real device elsewhere still registers.
    for control in (server, unlimited):
        assert isinstance(Device(control, "10.1.0.5").register(now=3.0), Registered)


def flood(server: ServerControl, ip: str, count: int, start: float) -> None:
    """``count`` REGISTERs of new key pairs, with the token, from ``ip``, in 0.4 s."""
    for number in range(count):
        impostor = Device(server, ip)
        body = Register(impostor.key.public_raw, "0.1.0", f"x{number}", 24)
        datagram = impostor.forge(body, impostor.device_id, counter=1)
        server.receive_datagram(datagram, (ip, 50000), start + number * 0.4 / count)
    server.datagrams_to_send(start + 1)


def test_registry_entries_of_silent_devices_expire() -> None:
    server = make_server(AbuseLimits(client_expiry=3600.0))
    quiet, busy = Device(server, "10.1.0.5"), Device(server, "10.1.0.6")
    quiet.register(now=0.0)
    busy.register(now=0.0)
    busy.ask("check_in", [], now=3000.0)
    busy.ask("check_in", [], now=3700.0)
    assert set(server.core.clients) == {busy.device_id}
    assert server.core.expired == [quiet.device_id]
    checkin = quiet.forge(CheckIn(()), quiet.device_id, counter=2**40)
    server.receive_datagram(checkin, ("10.1.0.5", 50000), 3701.0)
    (reply,) = replies(server, "10.1.0.5")
    assert isinstance(reply.body, Refused) and reply.body.cause is RefusalCause.UNKNOWN_DEVICE
    assert isinstance(quiet.register(now=3702.0), Registered)  # back, with the same key


# --- row 9 ------------------------------------------------------------------------------


def test_attack_9_bad_peer_reports_are_bounded_counted_by_reporter_and_acted_on() -> None:
    server = make_server()
    core = server.core
    flooder, first, second, liar = (
        Device(server, ip) for ip in ("10.1.0.66", "10.1.0.5", "10.1.0.6", "10.1.0.9")
    )
    for device in (flooder, first, second, liar):
        device.register()
    for number in range(10_000):  # one device, 10,000 reports of other peers
        server.receive_datagram(
            flooder.forge(
                BadPeer(CONTENT, (f"10.1.{number // 250}.{number % 250}", 1), 0),
                flooder.device_id,
                counter=10 + number,
            ),
            ("10.1.0.66", 50000),
            number / 1000,
        )
    server.datagrams_to_send(0)
    limits = core.settings.limits
    assert len(core.bad_peers.reports) == limits.reports_per_reporter
    assert list(core.bad_peers.new_bans) == []  # one reporter bans nobody
    # Two distinct devices report the liar: banned office-wide, once, one log line.
    for reporter in (first, second, first):
        reporter.ask("bad_peer", CONTENT, ("10.1.0.9", 41442), 3, now=20.0)
    assert [(ban.peer_ip, ban.reporters) for ban in core.bad_peers.new_bans] == [("10.1.0.9", 2)]
    # What the metrics listener shows: the flooder (whose 10th report named it), first
    # and second reported the liar; every other peer had the flooder alone.
    reporters = core.bad_peers.reporters()
    assert {peer: count for (_, peer), count in reporters.items() if count > 1} == {"10.1.0.9": 3}
    reply = first.ask("check_in", [], now=21.0)
    assert isinstance(reply, CheckInReply) and reply.banned == ("10.1.0.9",)
    peers = first.ask("peers", CONTENT, now=21.0)
    assert isinstance(peers, PeerList) and "10.1.0.9" not in {ip for ip, _ in peers.peers}
    refused = liar.ask("lease", CONTENT, now=21.0)
    assert isinstance(refused, Refused) and "banned" in refused.message


# --- amplification ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hello", "short hello", "bad tag", "unknown device"])
def test_unauthenticated_answers_are_at_most_3x_the_request(kind: str) -> None:
    server = make_server()
    key = DeviceKey.generate()
    if kind == "hello":
        request = encode_control(ControlMessage(0, key.device_id, Hello()), None)
    elif kind == "short hello":
        request = encode_control(ControlMessage(0, key.device_id, Hello(0)), None)
    elif kind == "bad tag":
        body = Register(key.public_raw, "0.1.0", "", 24)
        request = encode_control(ControlMessage(1, key.device_id, body, counter=1), b"x")
    else:
        request = encode_control(ControlMessage(1, key.device_id, CheckIn(()), counter=1), b"x")
    server.receive_datagram(request, ("10.9.9.9", 1), 0.0)
    answers = server.datagrams_to_send(0.0)
    assert sum(len(data) for data, _ in answers) <= 3 * len(request)
    if kind == "short hello":
        assert answers == [] and server.counters.hello_too_small == 1
    else:
        assert len(answers) == 1


def test_a_server_restarted_with_a_new_key_is_certified_again_and_clients_follow() -> None:
    server = make_server()
    device = Device(server, "10.1.0.5")
    assert isinstance(device.register(), Registered)
    record = server.core.clients[device.device_id]
    restarted = make_server()  # a new X25519 key, and the console's new certificate
    restarted.core.restore_client(record)
    device.server = restarted
    request_id = device.control.check_in([], now=10.0)
    answered = None
    for now in (10.0, 11.0, 12.0, 16.0, 17.0, 20.0):
        device.control.handle_timer(now)
        for data, _ in device.control.datagrams_to_send(now):
            restarted.receive_datagram(data, ("10.1.0.5", 50000), now)
        for data, _ in restarted.datagrams_to_send(now):
            device.control.receive_datagram(data, SERVER_ADDRESS, now)
        while (event := device.control.next_event()) is not None:
            if isinstance(event, ControlAnswered) and event.request_id == request_id:
                answered = event.reply
    assert isinstance(answered, CheckInReply)
    new_key = restarted.core.settings.identity.public_raw
    assert device.control.certificate is not None
    assert device.control.certificate.public_key == new_key


# --- enrollment --------------------------------------------------------------------------


def test_enrollment_pins_the_console_key_keeps_the_token_private_and_off_argv(
    tmp_path: Path,
) -> None:
    import json
    import subprocess
    import sys

    bundle_path = tmp_path / "bundle.json"
    token = os.urandom(16).hex()
    bundle = {
        "format": "shoal-enrollment-1",
        "console_key": CONSOLE.verify_key.raw.hex(),
        "enrollment_token": token,
        "server": "10.0.0.2",
        "server_port": 41441,
    }
    bundle_path.write_text(json.dumps(bundle))
    data_dir = tmp_path / "device"

    def shoal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shoal", *args], capture_output=True, text=True, check=False
        )

    enrolled = shoal("client", "enroll", str(bundle_path), "--data-dir", str(data_dir))
    assert enrolled.returncode == 0, enrolled.stderr
    assert token not in enrolled.stdout + enrolled.stderr
    assert (data_dir / "enrollment.json").stat().st_mode & 0o777 == 0o600
    trust = TrustState.load(data_dir / "trust.json")
    assert trust.console_keys == (CONSOLE.verify_key.raw,)
    # Another console's bundle does not silently replace what the device trusts.
    bundle["console_key"] = SigningKey.generate().verify_key.raw.hex()
    bundle_path.write_text(json.dumps(bundle))
    again = shoal("client", "enroll", str(bundle_path), "--data-dir", str(data_dir))
    assert again.returncode != 0 and "--replace" in again.stderr
    assert TrustState.load(data_dir / "trust.json") == trust
    # The token has no command-line option any more.
    run_help = shoal("client", "run", "--help").stdout
    assert "--server-key" not in run_help and "--enrollment" in run_help
    assert "client-key" not in shoal("server", "--help").stdout


def test_list_answers_fit_3x_even_for_an_authenticated_request_from_a_forged_address() -> None:
    server = make_server(AbuseLimits(ban_reporters=1, reports_per_reporter=64))
    devices = [Device(server, f"10.1.0.{number}") for number in range(1, 150)]
    for device in devices:
        device.register()
    asker = devices[0]
    for number in range(40):  # many banned peers in the office
        asker.ask("bad_peer", CONTENT, (f"10.1.0.{200 + number % 50}", 1), number)
    peers = asker.ask("peers", CONTENT, now=2.0)  # the client pads: it gets a long list
    assert isinstance(peers, PeerList), peers
    assert len(peers.peers) >= 100, len(peers.peers)
    for body in (Peers(CONTENT), CheckIn(())):  # unpadded: the smallest requests
        request = asker.forge(body, asker.device_id, counter=2**60 + len(asker.sent))
        asker.sent.append(request)
        server.receive_datagram(request, ("192.0.2.1", 1), 1.0)  # the victim's address
        (answer,) = server.datagrams_to_send(1.0)
        assert len(answer[0]) <= 3 * len(request)


# --- fuzzing the server's control port ---------------------------------------------------


def mutate(case: tuple[bytes, bytes]) -> bytes:
    """Apply a mutation program to a seed datagram: its first two bytes are where to cut
    it (0..400; no program, no cut), then up to four steps of three bytes each overwrite
    the byte at a position (0..400) with a value. One draw per example (a list of tuples
    took seven), so 10,000 examples stay quick to generate."""
    seed, program = case
    mutated = bytearray(seed)
    for step in range(2, len(program) - 2, 3):
        position = int.from_bytes(program[step : step + 2], "big") % 401
        if position < len(mutated):
            mutated[position] = program[step + 2]
    cut = int.from_bytes(program[:2], "big") % 401 if len(program) >= 2 else 400
    return bytes(mutated[:cut])


FUZZ_SERVER = make_server()
FUZZ_DEVICE = Device(FUZZ_SERVER, "10.1.0.5")
FUZZ_DEVICE.register()
FUZZ_DEVICE.ask("check_in", [ContentProgress(CONTENT, 1, 4, 0, 0)])
FUZZ_SEEDS = [*FUZZ_DEVICE.sent]


@settings(max_examples=10_000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.sampled_from(FUZZ_SEEDS), st.binary(max_size=14)).map(mutate),
    )
)
def test_any_datagram_from_a_stranger_gets_at_most_3x_and_never_crashes(data: bytes) -> None:
    FUZZ_SERVER.receive_datagram(data, ("192.0.2.1", 1), 5.0)
    answer = sum(len(reply) for reply, _ in FUZZ_SERVER.datagrams_to_send(5.0))
    assert answer <= 3 * len(data)
