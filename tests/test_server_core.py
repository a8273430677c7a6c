"""The P2P server's decisions: admission, registration, rendezvous, WAN budget, peers."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from pathlib import Path

import pytest

from shoal.assignments import encode_envelope, sign_assignments
from shoal.core.identity import DeviceKey
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.server import state_saver
from shoal.server.control import NUDGE_SPACING, NUDGES_PER_ROUND, ServerControl
from shoal.server.core import ServerCore, ServerSettings
from shoal.server.db import open_database, sqlite_url
from shoal.server.refusal_log import RefusalLog
from shoal.server.state_saver import StateSaver
from shoal.server.state_store import StateStore
from shoal.topology import parse_json
from shoal.wire.control import (
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlBody,
    ControlMessage,
    Lease,
    LeaseDecision,
    LeaseReply,
    LicenceState,
    ManifestInfo,
    ManifestReply,
    Nudge,
    OfficeType,
    PeerList,
    Peers,
    RefusalCause,
    Refused,
    Register,
    Registered,
    decode_control,
    pull_control,
)

CONSOLE = SigningKey.generate()
MANIFEST = pack_bytes(b"package bytes" * 1000, 65536)
MANIFEST_FILE = CONSOLE.sign(MANIFEST).encode()
CONTENT = MANIFEST.content_id
TOPOLOGY = parse_json(
    {
        "offices": [
            {
                "office": "Central Office",
                "parent": None,
                "type": "Default",
                "subnets": ["10.0.0.0/24"],
            },
            {
                "office": "Branch",
                "parent": "Central Office",
                "type": "Default",
                "subnets": ["10.1.0.0/24"],
            },
            {
                "office": "Cafe",
                "parent": "Central Office",
                "type": "WiFi",
                "subnets": ["10.2.0.0/24"],
            },
            {
                "office": "Remote",
                "parent": "Central Office",
                "type": "VPN",
                "subnets": ["10.3.0.0/24"],
            },
        ]
    }
)


SERVER_IDENTITY = DeviceKey.from_raw(bytes(range(32)))
TOKEN = b"enrollment token"


@functools.cache
def device_key(number: int) -> DeviceKey:
    return DeviceKey.from_raw(hashlib.sha256(number.to_bytes(8, "big")).digest())


def device(number: int) -> bytes:
    return device_key(number).device_id


def new_server() -> ServerCore:
    core = ServerCore(
        ServerSettings(enrollment_token=TOKEN, identity=SERVER_IDENTITY), version="0.1.0"
    )
    core.topology = TOPOLOGY
    core.licence.active = True
    core.add_manifest(MANIFEST_FILE)
    return core


@pytest.fixture
def server() -> ServerCore:
    return new_server()


def assign_to_everyone(server: ServerCore) -> None:
    entry = {"id": 1, "content_id": CONTENT.hex, "target_kind": "everyone", "target": None}
    document = {"assignments": [{**entry, "offices": None, "background": False}]}
    server.set_assignments(encode_envelope(sign_assignments(CONSOLE, document)))


def ask(server: ServerCore, number: int, ip: str, body: ControlBody, now: float = 0) -> ControlBody:
    return server.handle_control(ControlMessage(1, device(number), body), (ip, 5000), now)


def register(server: ServerCore, number: int, ip: str, now: float = 0) -> ControlBody:
    public_key = device_key(number).public_raw
    return ask(server, number, ip, Register(public_key, "0.1.0", f"pc-{number}", 24), now)


def test_registration_places_the_client_in_its_office(server: ServerCore) -> None:
    reply = register(server, 1, "10.2.0.7")
    assert isinstance(reply, Registered)
    assert (reply.office, reply.office_type) == ("Cafe", OfficeType.WIFI)
    assert server.clients[device(1)].subnet == "10.2.0.0/24"


def test_refusals_name_their_cause(server: ServerCore) -> None:
    too_new = ask(server, 1, "10.1.0.1", Register(device_key(1).public_raw, "9.0.0", "pc", 24))
    assert isinstance(too_new, Refused)
    assert too_new.cause is RefusalCause.VERSION_UNSUPPORTED
    assert "upgrade the P2P server" in too_new.message
    unknown = ask(server, 2, "10.1.0.2", CheckIn(()))
    assert isinstance(unknown, Refused) and unknown.cause is RefusalCause.UNKNOWN_DEVICE
    server.device_refusals[device(3)] = "no seat: 10 of 10 seats used"
    refused = register(server, 3, "10.1.0.3")
    assert isinstance(refused, Refused) and refused.cause is RefusalCause.NOT_LICENSED
    server.licence.active, server.licence.expired = False, True
    server.licence.message = "licence expired on 2026-01-01: enter a new key in the console"
    expired = register(server, 1, "10.1.0.1")
    assert isinstance(expired, Refused) and expired.cause is RefusalCause.LICENCE_EXPIRED
    assert "expired on 2026-01-01" in expired.message
    server.licence.expired = False
    inactive = register(server, 1, "10.1.0.1")
    assert isinstance(inactive, Refused) and inactive.cause is RefusalCause.NOT_ACTIVATED


def test_overage_is_allowed_and_said(server: ServerCore) -> None:
    server.licence.seats_over = 2
    reply = register(server, 1, "10.1.0.1")
    assert isinstance(reply, Registered)
    assert (reply.licence_state, reply.seats_over) == (LicenceState.OVERAGE, 2)


def test_check_in_records_progress_and_returns_the_assignment_blob(server: ServerCore) -> None:
    server.set_assignments(b'{"document": "[]"}')
    register(server, 1, "10.1.0.1")
    progress = ContentProgress(CONTENT, 1, 1, 100, 13000)
    reply = ask(server, 1, "10.1.0.1", CheckIn((progress,)))
    digest = hashlib.sha256(b'{"document": "[]"}').digest()
    assert reply == CheckInReply(digest, 18)
    assert server.blob(digest) == b'{"document": "[]"}'
    assert server.download_statistics() == {(CONTENT, "Branch"): (100, 13000)}


def test_manifest_info_points_at_the_manifest_blob(server: ServerCore) -> None:
    register(server, 1, "10.1.0.1")
    reply = ask(server, 1, "10.1.0.1", ManifestInfo(CONTENT))
    assert isinstance(reply, ManifestReply)
    assert server.blob(reply.manifest_sha256) == MANIFEST_FILE


def test_one_client_per_office_may_fetch_over_the_wan(server: ServerCore) -> None:
    assign_to_everyone(server)
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    first = ask(server, 1, "10.1.0.1", Lease(CONTENT), now=0)
    second = ask(server, 2, "10.1.0.2", Lease(CONTENT), now=1)
    assert isinstance(first, LeaseReply) and first.decision is LeaseDecision.GRANTED
    assert isinstance(second, LeaseReply) and second.decision is LeaseDecision.REDIRECTED
    assert second.holder[0] == "10.1.0.1"
    assert server.may_serve_content("10.1.0.1", CONTENT, now=1)
    assert not server.may_serve_content("10.1.0.2", CONTENT, now=1)
    # The rendezvous point dies: its lease lapses and the other client takes over.
    takeover = ask(server, 2, "10.1.0.2", Lease(CONTENT), now=11)
    assert isinstance(takeover, LeaseReply) and takeover.decision is LeaseDecision.GRANTED
    assert server.may_serve_content("10.1.0.2", CONTENT, now=11)


def test_a_complete_rendezvous_point_frees_its_lease_at_once(server: ServerCore) -> None:
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert ask(server, 1, "10.1.0.1", Lease(CONTENT), now=0) == LeaseReply(
        CONTENT, LeaseDecision.GRANTED, ("10.1.0.1", 41442), 10_000
    )
    count = MANIFEST.chunk_count
    ask(server, 1, "10.1.0.1", CheckIn((ContentProgress(CONTENT, count - 1, count, 0, 9),)), 1)
    busy = ask(server, 2, "10.1.0.2", Lease(CONTENT), now=1)
    assert isinstance(busy, LeaseReply) and busy.decision is LeaseDecision.REDIRECTED
    ask(server, 1, "10.1.0.1", CheckIn((ContentProgress(CONTENT, count, count, 0, 9),)), 2)
    taken = ask(server, 2, "10.1.0.2", Lease(CONTENT), now=2)  # not at lease expiry (t=10)
    assert isinstance(taken, LeaseReply) and taken.decision is LeaseDecision.GRANTED


STRIPED = pack_bytes(bytes(range(256)) * 1024, 65536)  # 4 chunks


def test_each_client_of_an_office_brings_in_its_own_stripe(server: ServerCore) -> None:
    """One stripe per client of the office assigned the content: each is served the
    chunks of its stripe only, so the WAN still carries each chunk once."""
    server.add_manifest(CONSOLE.sign(STRIPED).encode())
    entries = [
        {"id": n, "content_id": cid.hex, "target_kind": "everyone", "target": None}
        for n, cid in ((1, CONTENT), (2, STRIPED.content_id))
    ]
    document = {"assignments": [{**e, "offices": None, "background": False} for e in entries]}
    server.set_assignments(encode_envelope(sign_assignments(CONSOLE, document)))
    for number in (1, 2, 3):
        register(server, number, f"10.1.0.{number}")
    register(server, 4, "10.2.0.4")  # another office: not counted
    replies = [ask(server, n, f"10.1.0.{n}", Lease(STRIPED.content_id)) for n in (1, 2, 3)]
    assert [(r.decision, r.stripes, r.stripe_mask) for r in replies] == [  # type: ignore[union-attr]
        (LeaseDecision.GRANTED, 3, 0b001),
        (LeaseDecision.GRANTED, 3, 0b010),
        (LeaseDecision.GRANTED, 3, 0b100),
    ]
    served = {
        n: [
            i for i in range(4) if server.may_serve_content(f"10.1.0.{n}", STRIPED.content_id, 1, i)
        ]
        for n in (1, 2, 3)
    }
    assert served == {1: [0, 3], 2: [1], 3: [2]}
    # A one-chunk content has one stripe: a single rendezvous point, as before.
    single = ask(server, 1, "10.1.0.1", Lease(CONTENT))
    assert (single.stripes, single.stripe_mask) == (1, 1)  # type: ignore[union-attr]
    again = ask(server, 2, "10.1.0.2", Lease(CONTENT))
    assert again.decision is LeaseDecision.REDIRECTED  # type: ignore[union-attr]


def test_vpn_and_unknown_networks_are_served_directly(server: ServerCore) -> None:
    assign_to_everyone(server)
    register(server, 1, "10.3.0.1")
    register(server, 2, "192.168.77.5")
    for number, ip in ((1, "10.3.0.1"), (2, "192.168.77.5")):
        reply = ask(server, number, ip, Lease(CONTENT))
        assert isinstance(reply, LeaseReply) and reply.decision is LeaseDecision.DIRECT
        assert server.may_serve_content(ip, CONTENT, now=0)
    assert not server.may_serve_content("10.9.9.9", CONTENT, now=0)  # never registered


def test_wifi_peer_lists_hold_only_the_office(server: ServerCore) -> None:
    for number, ip in ((1, "10.2.0.1"), (2, "10.2.0.2"), (3, "10.1.0.3"), (4, "10.2.0.4")):
        register(server, number, ip)
    reply = ask(server, 1, "10.2.0.1", Peers(CONTENT))
    assert isinstance(reply, PeerList)
    assert sorted(ip for ip, _ in reply.peers) == ["10.2.0.2", "10.2.0.4"]


def test_a_server_that_crashed_a_second_after_registrations_lists_the_office_again(
    server: ServerCore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration is saved within ``LEASE_SAVE_SECONDS``, not at the next registry
    report (10 s): a server that crashes seconds after a WiFi office's devices
    registered comes back knowing them, and lists them to a device that asks; it listed
    none before, until each checked in again (up to ``checkin_seconds`` later), and the
    asker fetched over the WAN what its office held."""
    monkeypatch.setattr(state_saver, "LEASE_SAVE_SECONDS", 0.01)
    state = StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3")))
    saver = StateSaver(state, server, RefusalLog())

    def restarted() -> list[str]:
        core = new_server()
        for record in StateStore(state.sessions).load_clients(now=1.0):
            core.restore_client(record)
        register(core, 1, "10.2.0.1", now=1.5)  # the asker restarted too: it registers
        reply = ask(core, 1, "10.2.0.1", Peers(CONTENT), now=2.0)
        assert isinstance(reply, PeerList)
        return sorted(ip for ip, _ in reply.peers)

    async def save_for(seconds: float) -> None:
        stop = asyncio.Event()
        saving = asyncio.create_task(saver.save_loop(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await saving

    for number, ip in ((1, "10.2.0.1"), (2, "10.2.0.2"), (4, "10.2.0.4")):
        register(server, number, ip)
    assert restarted() == []  # crashed before any save: the office is unknown
    asyncio.run(save_for(0.2))
    assert restarted() == ["10.2.0.2", "10.2.0.4"]
    register(server, 5, "10.2.0.5")  # a device registered after that save
    asyncio.run(save_for(0.2))
    assert restarted() == ["10.2.0.2", "10.2.0.4", "10.2.0.5"]


def test_wifi_peer_lists_follow_moves_departures_and_a_new_topology(server: ServerCore) -> None:
    """Peer lists read the office's clients only (``clients_in``), and that view keeps
    up with the registry: a device registering again from another office leaves its old
    office's list, an expired one leaves every list, and a topology that moves a subnet
    moves its clients."""

    def peers_of(number: int, ip: str, now: float) -> list[str]:
        reply = ask(server, number, ip, Peers(CONTENT), now)
        assert isinstance(reply, PeerList)
        return sorted(peer_ip for peer_ip, _ in reply.peers)

    for number, ip in ((1, "10.2.0.1"), (2, "10.2.0.2"), (3, "10.1.0.3"), (4, "10.2.0.4")):
        register(server, number, ip)
    assert peers_of(1, "10.2.0.1", 0) == ["10.2.0.2", "10.2.0.4"]
    register(server, 2, "10.1.0.2")  # moved to Branch (a new DHCP lease elsewhere)
    register(server, 5, "10.2.0.5")
    assert peers_of(1, "10.2.0.1", 0) == ["10.2.0.4", "10.2.0.5"]
    later = server.settings.limits.client_expiry + 1
    for number, ip in ((1, "10.2.0.1"), (5, "10.2.0.5")):
        register(server, number, ip, now=later)  # 4 is silent: it leaves the registry
    server.expire_clients(later)
    assert peers_of(1, "10.2.0.1", later) == ["10.2.0.5"]
    server.topology = parse_json(
        {
            "offices": [
                {"office": "Central Office", "parent": None, "type": "Default",
                 "subnets": ["10.0.0.0/24"]},
                {"office": "Cafe", "parent": "Central Office", "type": "WiFi",
                 "subnets": ["10.2.0.0/24", "10.1.0.0/24"]},
            ]
        }
    )  # fmt: skip
    assert peers_of(1, "10.2.0.1", later) == ["10.2.0.5"]  # 2 and 3 were not seen lately
    for number, ip in ((2, "10.1.0.2"), (3, "10.1.0.3")):
        register(server, number, ip, now=later)
    assert peers_of(1, "10.2.0.1", later) == ["10.1.0.2", "10.1.0.3", "10.2.0.5"]


def test_new_assignments_nudge_every_client_that_spoke_once(server: ServerCore) -> None:
    register(server, 1, "10.1.0.1")
    register(server, 2, "10.2.0.2")
    server.set_assignments(b"signed document 1")
    digest = hashlib.sha256(b"signed document 1").digest()
    nudges = server.take_nudges(limit=10)
    assert [(device_id, addr) for device_id, addr, _ in nudges] == [
        (device(1), ("10.1.0.1", 5000)),
        (device(2), ("10.2.0.2", 5000)),
    ]
    assert {nudge.assignments_sha256 for _, _, nudge in nudges} == {digest}
    assert not server.nudges_pending
    server.set_assignments(b"signed document 1")  # unchanged: nobody is disturbed
    assert server.take_nudges(limit=10) == []


def test_nudges_go_out_in_paced_rounds(server: ServerCore) -> None:
    count = NUDGES_PER_ROUND * 2 + 10
    for number in range(count):
        register(server, number + 10, f"10.1.{number // 250}.{number % 250 + 1}")
    control = ServerControl(server)
    server.set_assignments(b"a new document")
    rounds = []
    now = 0.0
    while True:
        sent = control.datagrams_to_send(now)
        rounds.append(len(sent))
        timer = control.get_timer()
        if timer is None:
            break
        assert timer > now
        assert control.datagrams_to_send(now) == []  # not before the timer
        now = timer
    assert rounds == [NUDGES_PER_ROUND, NUDGES_PER_ROUND, 10]
    assert now == 2 * NUDGE_SPACING  # the check-ins they cause come no faster either
    addressee = pull_control(sent[0][0]).device_id
    decoded = decode_control(sent[0][0], server.control_key_of(addressee) or b"")
    assert decoded.authenticated and decoded.request_id == 0
    assert decoded.body == Nudge(hashlib.sha256(b"a new document").digest(), 14)


def test_install_reports_are_kept_for_assigned_content_only_and_relayed(server: ServerCore) -> None:
    from shoal.wire.control import InstallReport, InstallStatus, Noted

    register(server, 1, "10.1.0.1")
    failed = InstallReport(CONTENT, InstallStatus.FAILED, 3, 1603, "error\x00 1603")
    refused = ask(server, 1, "10.1.0.1", failed)
    assert isinstance(refused, Refused) and refused.cause is RefusalCause.NOT_ASSIGNED
    assert server.clients[device(1)].installs == {}
    assign_to_everyone(server)
    assert ask(server, 1, "10.1.0.1", failed) == Noted()
    kept = server.clients[device(1)].installs[CONTENT]
    assert (kept.status, kept.exit_code, kept.output_tail) == (
        InstallStatus.FAILED,
        1603,
        "error\ufffd 1603",  # no NUL reaches the console's database
    )
    out_of_range = InstallReport(CONTENT, InstallStatus.FAILED, 1, 2**40, "")
    answer = ask(server, 1, "10.1.0.1", out_of_range)
    assert isinstance(answer, Refused) and "exit_code" in answer.message
    server.set_assignments(b'{"document": "{\\"assignments\\": []}"}')  # withdrawn
    uninstalled = InstallReport(CONTENT, InstallStatus.UNINSTALLED, 0, 0, "")
    assert ask(server, 1, "10.1.0.1", uninstalled) == Noted()  # it installed it before
    installed = InstallReport(CONTENT, InstallStatus.INSTALLED, 1, 0, "")
    assert isinstance(ask(server, 1, "10.1.0.1", installed), Refused)


def test_a_new_topology_places_a_known_address_again(server: ServerCore) -> None:
    """The office of an address is remembered, but only for the topology it came from:
    a topology upload that moves a subnet moves its clients at once."""
    assert server.office_of("10.2.0.7") == ("Cafe", OfficeType.WIFI)
    moved = parse_json(
        {
            "offices": [
                {"office": "Central Office", "parent": None, "type": "Default",
                 "subnets": ["10.0.0.0/24"]},
                {"office": "Lyon", "parent": "Central Office", "type": "Default",
                 "subnets": ["10.2.0.0/24"]},
            ]
        }
    )  # fmt: skip
    server.topology = moved
    assert server.office_of("10.2.0.7") == ("Lyon", OfficeType.DEFAULT)
    assert server.office_of("10.3.0.1") == (None, OfficeType.NONE)
    server.topology = None
    assert server.office_of("10.2.0.7") == (None, OfficeType.NONE)


def test_a_client_that_holds_the_content_whole_gets_no_stripe_counted(server: ServerCore) -> None:
    """A client of the office that already holds the content never asks for a lease: a
    stripe counted for it would wait lease_seconds before anyone fetched its chunks."""
    server.add_manifest(CONSOLE.sign(STRIPED).encode())
    entry = {"id": 2, "content_id": STRIPED.content_id.hex, "target_kind": "everyone"}
    document = {"assignments": [{**entry, "target": None, "offices": None, "background": False}]}
    server.set_assignments(encode_envelope(sign_assignments(CONSOLE, document)))
    for number in (1, 2, 3):
        register(server, number, f"10.1.0.{number}")
    done = CheckIn((ContentProgress(STRIPED.content_id, 4, 4, 0, 0),))
    ask(server, 3, "10.1.0.3", done)  # holds all 4 chunks already
    replies = [ask(server, n, f"10.1.0.{n}", Lease(STRIPED.content_id)) for n in (1, 2)]
    assert [(r.decision, r.stripes, r.stripe_mask) for r in replies] == [  # type: ignore[union-attr]
        (LeaseDecision.GRANTED, 2, 0b01),
        (LeaseDecision.GRANTED, 2, 0b10),
    ]
