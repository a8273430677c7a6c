"""How many stripes an office's WAN copy is split in (``shoal.server.stripe_plan``):
one holder where a client's uplink is 20x the office's WAN, one per client elsewhere."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shoal.assignments import encode_envelope, sign_assignments
from shoal.core.identity import DeviceKey
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.server.core import ServerCore, ServerSettings
from shoal.server.stripe_plan import OfficeLinks, parse_office_links, stripe_count
from shoal.topology import parse_json
from shoal.wire.control import ControlMessage, Lease, LeaseDecision, LeaseReply, Register

CONSOLE = SigningKey.generate()
SIXTEEN_CHUNKS = pack_bytes(bytes(range(256)) * 4096, 65536)
CONTENT = SIXTEEN_CHUNKS.content_id
TOPOLOGY = parse_json(
    {
        "offices": [
            {"office": "Central Office", "parent": None, "type": "Default",
             "subnets": ["10.0.0.0/24"]},
            {"office": "Branch", "parent": "Central Office", "type": "Default",
             "subnets": ["10.1.0.0/24"]},
        ]
    }
)  # fmt: skip


@pytest.mark.parametrize(
    ("links", "stripes"),
    [
        (OfficeLinks(wan_mbit=50, client_up_mbit=1000), 4),  # branch-flash: 16 chunks each
        (OfficeLinks(wan_mbit=20, client_up_mbit=1000), 4),
        (OfficeLinks(wan_mbit=100, client_up_mbit=1000), 6),  # ten times: striped
        (OfficeLinks(wan_mbit=100, client_up_mbit=200), 6),
        (OfficeLinks(wan_mbit=100, client_up_mbit=20), 6),  # issue 9: the cap binds
        (None, 6),  # links not known: one stripe per client, up to the cap
    ],
)
def test_fewer_stripes_only_where_an_uplink_outruns_the_wan_twenty_times(
    links: OfficeLinks | None, stripes: int
) -> None:
    assert stripe_count(links, candidates=12, chunk_count=64, cap=6) == stripes


@pytest.mark.parametrize(("chunks", "stripes"), [(8, 1), (16, 1), (31, 1), (32, 2), (200, 6)])
def test_where_one_uplink_keeps_up_a_stripe_is_never_a_few_chunks(
    chunks: int, stripes: int
) -> None:
    """A WAN-bound office splits its copy only into stripes of >= 16 chunks: one holder
    for a content of few chunks (its first chunk complete after one chunk time)."""
    fast = OfficeLinks(wan_mbit=50, client_up_mbit=1000)
    assert stripe_count(fast, candidates=12, chunk_count=chunks, cap=6) == stripes


def test_no_more_stripes_than_clients_that_ask_or_chunks() -> None:
    slow = OfficeLinks(wan_mbit=100, client_up_mbit=10)
    assert stripe_count(slow, candidates=3, chunk_count=64, cap=6) == 3
    assert stripe_count(slow, candidates=12, chunk_count=2, cap=6) == 2
    assert stripe_count(slow, candidates=0, chunk_count=64, cap=6) == 1


def _server(links: OfficeLinks) -> ServerCore:
    """A server whose Branch office (10.1.0.0/24) has ``links``; the content assigned."""
    identity = DeviceKey.from_raw(bytes(range(32)))
    settings = ServerSettings(b"token", identity, office_links={"Branch": links})
    server = ServerCore(settings, version="0.1.0")
    server.topology = TOPOLOGY
    server.licence.active = True
    server.add_manifest(CONSOLE.sign(SIXTEEN_CHUNKS).encode())
    entry = {"id": 1, "content_id": CONTENT.hex, "target_kind": "everyone", "target": None}
    document = {"assignments": [{**entry, "offices": None, "background": False}]}
    server.set_assignments(encode_envelope(sign_assignments(CONSOLE, document)))
    return server


def _three_clients_ask(server: ServerCore) -> list[LeaseReply]:
    """Clients 1-3 of Branch register, then each asks for the content's lease."""
    keys = {n: DeviceKey.from_raw(hashlib.sha256(bytes([n])).digest()) for n in (1, 2, 3)}

    def ask(number: int, body: Register | Lease) -> object:
        message = ControlMessage(1, keys[number].device_id, body)
        return server.handle_control(message, (f"10.1.0.{number}", 5000), 0.0)

    for number, key in keys.items():
        ask(number, Register(key.public_raw, "0.1.0", f"pc-{number}", 24))
    replies = [ask(number, Lease(CONTENT)) for number in keys]
    assert all(isinstance(reply, LeaseReply) for reply in replies), replies
    return replies  # type: ignore[return-value]


def _served(server: ServerCore, number: int) -> list[int]:
    """The chunks the server would send client ``number`` over the WAN now."""
    ip = f"10.1.0.{number}"
    return [i for i in range(16) if server.may_serve_content(ip, CONTENT, 1, i)]


def test_a_wan_bound_office_takes_every_chunk_of_a_small_content_from_one_holder() -> None:
    """Fast client links behind a slow WAN, a content of 16 chunks: one holder fetches
    every chunk, the WAN pipe full from the first; the others are redirected to it."""
    server = _server(OfficeLinks(wan_mbit=50, client_up_mbit=1000))
    replies = _three_clients_ask(server)
    assert [(r.decision, r.stripes, r.stripe_mask) for r in replies] == [
        (LeaseDecision.GRANTED, 1, 1),
        (LeaseDecision.REDIRECTED, 1, 1),
        (LeaseDecision.REDIRECTED, 1, 1),
    ]
    assert _served(server, 1) == list(range(16))
    assert _served(server, 2) == _served(server, 3) == []


def test_an_uplink_bound_office_splits_its_copy_over_its_clients() -> None:
    """Uplinks of a fifth of the WAN: each client that will ask brings in its own
    stripe, each chunk in one stripe only."""
    server = _server(OfficeLinks(wan_mbit=100, client_up_mbit=20))
    replies = _three_clients_ask(server)
    assert [(r.decision, r.stripes, r.stripe_mask) for r in replies] == [
        (LeaseDecision.GRANTED, 3, 0b001),
        (LeaseDecision.GRANTED, 3, 0b010),
        (LeaseDecision.GRANTED, 3, 0b100),
    ]
    assert _served(server, 2) == [1, 4, 7, 10, 13]


def test_each_holder_flow_starts_at_its_share_of_a_known_wan() -> None:
    """The server's flows to an office's holders start at the office's WAN shared by
    its stripes (the link profile); an office without a profile gets no such start."""
    server = _server(OfficeLinks(wan_mbit=100, client_up_mbit=20))
    _three_clients_ask(server)
    assert server.wan_copy.flow_rate("10.1.0.2", CONTENT) == 100e6 / 8 / 3
    assert server.wan_copy.flow_rate("10.9.0.1", CONTENT) is None  # in no office


def test_a_holder_that_took_over_a_stripe_gets_a_share_for_each_open_one() -> None:
    """The server paces its flow to a holder at the holder's share at most (``Pacer``):
    one that took over a second stripe fetches both on that flow, at two shares."""
    server = _server(OfficeLinks(wan_mbit=100, client_up_mbit=20))
    _three_clients_ask(server)
    share = 100e6 / 8 / 3
    assert server.wan_copy.holder_rate("10.1.0.2", CONTENT, 1.0) == share
    first, second = (DeviceKey.from_raw(hashlib.sha256(bytes([n])).digest()) for n in (1, 2))
    server.wan_copy.rendezvous.release("Branch", CONTENT, first.device_id.hex())
    message = ControlMessage(1, second.device_id, Lease(CONTENT))
    reply = server.handle_control(message, ("10.1.0.2", 5000), 1.0)
    assert isinstance(reply, LeaseReply) and reply.stripe_mask == 0b011
    assert server.wan_copy.holder_rate("10.1.0.2", CONTENT, 1.0) == 2 * share
    assert server.wan_copy.holder_rate("10.1.0.3", CONTENT, 1.0) == share
    assert server.wan_copy.holder_rate("10.9.0.1", CONTENT, 1.0) is None  # in no office


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("Branch", "expected NAME=WAN_MBIT/UPLINK_MBIT"),
        ("Branch=50", "expected NAME=WAN_MBIT/UPLINK_MBIT"),
        ("=50/1000", "expected NAME=WAN_MBIT/UPLINK_MBIT"),
        ("Branch=fast/1000", "could not convert"),
        ("Branch=50/0", "link rates must be positive"),
    ],
)
def test_a_wrong_office_links_entry_is_named(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_office_links([entry])
    assert repr(entry) in str(raised.value)


def test_office_links_are_read_by_office_name() -> None:
    links = parse_office_links(["Branch=50/1000", "Head office=1000/100"])
    assert links == {
        "Branch": OfficeLinks(50, 1000),
        "Head office": OfficeLinks(1000, 100),
    }


def test_shoal_server_run_names_a_wrong_office_links_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shoal.cli import cli

    arguments = ["server", "run", "--data-dir", str(tmp_path), "--console", "https://c"]
    arguments += ["--auth-key", "key", "--address", "10.0.0.2", "--office-links", "Branch=50"]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 2, result.output
    assert "--office-links" in result.output
    assert "'Branch=50': expected NAME=WAN_MBIT/UPLINK_MBIT" in result.output
    assert list(tmp_path.iterdir()) == []  # refused before the server created anything
