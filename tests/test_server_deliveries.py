"""One WAN copy per office across takeovers, bans and server restarts: the delivery
ledger (``shoal.server.deliveries``) and the leases kept in the server's state store."""

from __future__ import annotations

import time
from pathlib import Path

from shoal.assignments import encode_envelope, sign_assignments
from shoal.server.core import ServerCore, ServerSettings
from shoal.server.db import open_database, sqlite_url
from shoal.server.deliveries import DeliveryLedger
from shoal.server.state_store import StateStore, restored_record, row_state
from shoal.server.stripe_plan import OfficeLinks
from shoal.wire.control import (
    BadPeer,
    CheckIn,
    ContentProgress,
    Lease,
    LeaseDecision,
    LeaseReply,
)
from test_server_core import (
    CONSOLE,
    SERVER_IDENTITY,
    STRIPED,
    TOKEN,
    TOPOLOGY,
    ask,
    device,
    register,
)
from test_server_metrics import _service

CONTENT = STRIPED.content_id  # 4 chunks


def make_server(core: ServerCore | None = None) -> ServerCore:
    core = core or ServerCore(
        ServerSettings(enrollment_token=TOKEN, identity=SERVER_IDENTITY), version="0.1.0"
    )
    core.topology = TOPOLOGY
    core.licence.active = True
    core.add_manifest(CONSOLE.sign(STRIPED).encode())
    entry = {"id": 1, "content_id": CONTENT.hex, "target_kind": "everyone", "target": None}
    document = {"assignments": [{**entry, "offices": None, "background": False}]}
    core.set_assignments(encode_envelope(sign_assignments(CONSOLE, document)))
    return core


def lease(server: ServerCore, number: int, now: float) -> tuple[LeaseDecision, int]:
    reply = ask(server, number, f"10.1.0.{number}", Lease(CONTENT), now)
    assert isinstance(reply, LeaseReply)
    return reply.decision, reply.stripe_mask


def complete(server: ServerCore, number: int, now: float) -> None:
    done = ContentProgress(CONTENT, 4, 4, 0, 0)
    ask(server, number, f"10.1.0.{number}", CheckIn((done,)), now)


def holder_2_took_over_a_delivered_chunk() -> ServerCore:
    """Holder 1 received chunk 0 from the server, completed and released its stripe;
    holder 2 took it over (at t=3)."""
    server = make_server()
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert lease(server, 1, 0) == (LeaseDecision.GRANTED, 0b01)
    assert lease(server, 2, 0) == (LeaseDecision.GRANTED, 0b10)
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 0, now=1)
    complete(server, 1, now=2)
    assert lease(server, 2, now=3) == (LeaseDecision.GRANTED, 0b11)  # took stripe 0 over
    return server


def test_a_chunk_the_office_holds_is_not_sent_over_its_wan_again() -> None:
    """Holder 1 completes and releases its stripe; holder 2 takes it over and asks for
    chunk 0, which the server delivered to holder 1: refused (it is in the office),
    for a lease period at most; a chunk nobody received is served."""
    server = holder_2_took_over_a_delivered_chunk()
    assert server.may_serve_content("10.1.0.2", CONTENT, 3, chunk_index=2)  # not delivered
    assert not server.may_serve_content("10.1.0.2", CONTENT, 3, chunk_index=0)
    assert lease(server, 2, now=12) == (LeaseDecision.GRANTED, 0b11)  # renewed
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=0)
    # Refused for a lease period (10 s) from the first refusal: then served again, in
    # case the office cannot get it from its receiver.
    assert server.may_serve_content("10.1.0.2", CONTENT, 13.5, chunk_index=0)
    assert server.deliveries.refused == 2


def test_a_receiver_that_left_or_was_banned_does_not_hold_chunks_back() -> None:
    ledger = DeliveryLedger(hold_seconds=10)
    ledger.delivered("Branch", CONTENT, "dev-1", 0, now=1)
    ledger.delivered("Branch", CONTENT, "dev-1", 1, now=1)
    present = {"dev-1"}
    assert ledger.in_office("Branch", CONTENT, "dev-2", 0, 2, present.__contains__)
    assert not ledger.in_office("Branch", CONTENT, "dev-1", 0, 2, present.__contains__)
    assert not ledger.in_office("Other", CONTENT, "dev-2", 0, 2, present.__contains__)
    present.clear()  # dev-1 was not seen lately
    assert not ledger.in_office("Branch", CONTENT, "dev-2", 1, 2, present.__contains__)
    present.add("dev-1")
    ledger.forget_device("Branch", "dev-1")  # banned: what it holds is worthless
    assert ledger.chunks("Branch", CONTENT) == {}
    assert not ledger.in_office("Branch", CONTENT, "dev-2", 1, 3, present.__contains__)


def test_leases_and_deliveries_survive_a_server_restart(tmp_path: Path) -> None:
    """Saved in the state store and taken back by a new server: every holder keeps its
    stripes (the stripe count too), a client without one is still redirected, and what
    was delivered before the restart is not sent into the office again."""
    server = make_server()
    for number in (1, 2, 3):
        register(server, number, f"10.1.0.{number}")
    assert [lease(server, n, 0)[1] for n in (2, 1)] == [0b001, 0b010]  # two of 3 stripes
    server.wan_copy.chunk_delivered("10.1.0.2", CONTENT, 0, now=1)
    store = StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3")))
    store.save_leases(server.wan_copy.lease_state(now=2), wall_now=1000.0)
    rows = [row_state(client) for client in server.clients.values()]

    restarted = make_server()  # a new process: its monotonic clock starts elsewhere
    for row in rows:
        restarted.restore_client(restored_record(row, now=500.0))
    saved = StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3"))).load_leases(
        wall_now=1004.0
    )
    assert saved is not None
    restarted.wan_copy.restore_lease_state(saved[0], now=500.0, elapsed=saved[1])
    assert restarted.rendezvous.stripes("Branch", CONTENT) == 3
    # Restored holders count as renewed at the restart (nobody could renew while it was
    # down): they lapse a lease period (10 s) later if they never come back.
    holders = [device(2).hex(), device(1).hex()]  # stripe order
    assert restarted.rendezvous.holders("Branch", CONTENT, 509.9) == holders
    assert restarted.rendezvous.holders("Branch", CONTENT, 510.0) == []
    # Holder 1 asks first after the restart and still gets its own stripe, not the first.
    assert lease(restarted, 1, 500.5) == (LeaseDecision.GRANTED, 0b010)
    assert lease(restarted, 2, 500.5) == (LeaseDecision.GRANTED, 0b001)
    # Stripe 2 was never claimed: it is still left to a client without a stripe.
    assert lease(restarted, 3, 500.6) == (LeaseDecision.GRANTED, 0b100)
    # Holder 2 completes; holder 1 takes its stripe over, but chunk 0 is in the office.
    complete(restarted, 2, now=501)
    assert lease(restarted, 1, 501.5) == (LeaseDecision.GRANTED, 0b011)
    assert restarted.may_serve_content("10.1.0.1", CONTENT, 501.5, chunk_index=3)
    assert not restarted.may_serve_content("10.1.0.1", CONTENT, 501.5, chunk_index=0)


def test_a_receiver_the_restarted_registry_lost_still_holds_its_chunks() -> None:
    """The registry is saved every ``report_seconds``, the ledger within a second: a
    restarted server may know a chunk's receiver only from the ledger. An idle receiver
    is heard from at its next check-in, so for two check-in periods (60 s each) its
    chunks stay in the office; after that, a receiver never heard from again is gone."""
    server = make_server()
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert lease(server, 1, 0) == (LeaseDecision.GRANTED, 0b01)
    assert lease(server, 2, 0) == (LeaseDecision.GRANTED, 0b10)
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 0, now=1)
    complete(server, 1, now=2)  # holder 1 is done and falls silent
    saved = server.wan_copy.lease_state(now=2)
    rows = [row_state(server.clients[device(2)])]  # holder 1 registered after the save

    restarted = make_server()
    for row in rows:
        restarted.restore_client(restored_record(row, now=500.0))
    restarted.wan_copy.restore_lease_state(saved, now=500.0, elapsed=1.0)
    assert lease(restarted, 2, 500.5) == (LeaseDecision.GRANTED, 0b11)  # took stripe 0
    assert restarted.may_serve_content("10.1.0.2", CONTENT, 500.5, chunk_index=2)
    assert not restarted.may_serve_content("10.1.0.2", CONTENT, 500.5, chunk_index=0)
    # Two check-in periods after the restart, holder 1 never came back: it left.
    later = 500.0 + 2 * 60 + 1
    assert lease(restarted, 2, later)[0] is LeaseDecision.GRANTED  # every stripe now
    assert restarted.may_serve_content("10.1.0.2", CONTENT, later, chunk_index=0)


def test_a_restarted_server_process_takes_its_leases_back(tmp_path: Path) -> None:
    """``ServerService`` writes the leases at shutdown and reads them back at start."""
    first = _service(tmp_path, console_port=9)
    server = make_server(first.core)
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}", now=time.monotonic())
    assert lease(server, 1, time.monotonic())[1] == 0b01
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 0, now=time.monotonic())
    first.saver.save_now()  # what the service does when it stops

    second = _service(tmp_path, console_port=9)
    make_server(second.core)  # the console's state (topology, manifest) comes back too
    assert second.core.rendezvous.stripes("Branch", CONTENT) == 2
    assert second.core.rendezvous.holders("Branch", CONTENT, time.monotonic()) == [device(1).hex()]
    assert second.core.deliveries.chunks("Branch", CONTENT) == {0: device(1).hex()}


def test_the_saved_leases_move_on_grants_and_deliveries_not_on_renewals() -> None:
    """The state store writes the leases only when ``lease_changes`` moved: renewals
    (every few seconds per holder) are not worth a write, a grant or delivery is."""
    server = make_server()
    register(server, 1, "10.1.0.1")
    before = server.wan_copy.lease_changes
    lease(server, 1, 0)
    granted = server.wan_copy.lease_changes
    assert granted != before
    lease(server, 1, 3)  # a renewal
    assert server.wan_copy.lease_changes == granted
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 0, now=4)
    assert server.wan_copy.lease_changes != granted


def test_a_device_that_reported_the_receiver_bad_is_not_held_back_for_it() -> None:
    """Holder 1 received chunk 0 from the server, then served it corrupted: holder 2,
    which took its stripe over, reported it. Before a second report bans it, holder 2 is
    served chunk 0 over the WAN (the office's copy is worthless to it), while the ledger
    keeps the delivery for everyone else (one report is not a ban)."""
    server = holder_2_took_over_a_delivered_chunk()
    assert not server.may_serve_content("10.1.0.2", CONTENT, 3, chunk_index=0)
    ask(server, 2, "10.1.0.2", BadPeer(CONTENT, ("10.1.0.1", 41442), 0), now=4)
    assert server.may_serve_content("10.1.0.2", CONTENT, 4, chunk_index=0)
    assert server.deliveries.chunks("Branch", CONTENT) == {0: device(1).hex()}  # no ban
    assert not server.bad_peers.is_banned("Branch", "10.1.0.1", 4)


def test_the_flows_left_take_the_wan_of_the_stripes_that_finished() -> None:
    """Stripes end unevenly (fewer chunks, faster holders): once one has every chunk in
    the office, the server's flows to the other holders may carry its share of the WAN
    too, so the last chunks do not cross a WAN left half idle."""
    links = {"Branch": OfficeLinks(wan_mbit=80, client_up_mbit=20)}
    settings = ServerSettings(enrollment_token=TOKEN, identity=SERVER_IDENTITY, office_links=links)
    server = make_server(ServerCore(settings, version="0.1.0"))
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert lease(server, 1, 0) == (LeaseDecision.GRANTED, 0b01)  # chunks 0 and 2
    assert lease(server, 2, 0) == (LeaseDecision.GRANTED, 0b10)  # chunks 1 and 3
    wan = server.wan_copy
    assert wan.flow_rate("10.1.0.1", CONTENT) == 5e6  # half of 10 MB/s each
    assert wan.chunk_delivered("10.1.0.2", CONTENT, 1, now=1) is None
    assert wan.chunk_delivered("10.1.0.1", CONTENT, 0, now=1) is None
    raised = wan.chunk_delivered("10.1.0.2", CONTENT, 3, now=2)  # stripe 1 complete
    assert raised is not None
    holders, rate = raised
    assert "10.1.0.1" in holders and rate == 10e6
    assert wan.flow_rate("10.1.0.1", CONTENT) == 10e6
