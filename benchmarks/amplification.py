"""Amplification factor of every unauthenticated request a shoal port answers.

A UDP source address can be forged: whatever a port sends back in answer to one datagram
lands on the forged address, the victim. RFC 9000 §8.1's rule, which shoal follows
(issue 13): to an address that has not proven it receives there, send at most 3x the
bytes received from it. This benchmark sends each kind of unauthenticated request once,
from a forged address, to the real sans-I/O machines of a simulated site (a P2P server,
an office of clients that completed a download, and a client discovery machine holding
part of a 10 GiB package while it downloads), runs their timers for ``--seconds`` of
virtual time, and prints bytes sent to the forged address / bytes received. No sockets.

``REQUESTS`` is a table of builders, one per request type: add a row for a new port or
message. Run: ``.venv/bin/python benchmarks/amplification.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.core.chunkset import ChunkSet
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.protocol.discovery import DiscoveryConfig, DiscoveryMachine
from shoal.protocol.transfer import Mode
from shoal.server.core import ServerCore
from shoal.wire.control import (
    HEADER_SIZE,
    TAG_SIZE,
    CheckIn,
    CheckInReply,
    ControlMessage,
    Hello,
    Register,
    encode_control,
)
from shoal.wire.messages import (
    MAX_HAVE_CHUNKS,
    NO_TOKEN,
    ChunkRequest,
    Data,
    Have,
    WhoHas,
    decode_datagram,
    encode_datagram,
    who_has_padding,
)
from shoal_dev.sim.enterprise import Enterprise, SimOffice, build_enterprise

Address = tuple[str, int]
#: The limit of RFC 9000 §8.1.
LIMIT = 3.0
MIB = 1024 * 1024


@dataclass(slots=True)
class Target:
    """One forged datagram for one machine (``owner`` decides after input, as the shell's
    ``poll``), and the forged source address: a real peer's IP, the worst case."""

    machine: Any
    datagram: bytes
    victim: Address
    owner: Any = None
    #: Called at each step with the virtual time: what the site does meanwhile.
    during: Callable[[float], None] | None = None
    #: Other machines of the owner whose datagrams to the victim count too.
    also: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestType:
    name: str
    port: str
    build: Callable[[Site], Target]


@dataclass(slots=True)
class Site:
    """The machines under test, built once."""

    enterprise: Enterprise
    discovery: DiscoveryMachine
    now: float
    root: Path

    @property
    def server_core(self) -> ServerCore:
        return self.enterprise.server.core


def build_site(root: Path) -> Site:
    """A server, an office of two clients that completed a 2 MiB download (1 MiB chunks,
    as in the issue), and a discovery machine holding half of a 10 GiB package."""
    enterprise = build_enterprise(
        root,
        [SimOffice("Branch", "10.1.0.0/24", clients=2)],
        package_size=2 * MIB,
        chunk_size=MIB,
    )
    enterprise.run(120.0, stop=enterprise.all_complete)
    if not enterprise.all_complete():
        raise RuntimeError("the simulated office did not complete its download")
    # Let the last transfers end (idle timeout), so only the forged request's effect counts.
    now = enterprise.run(enterprise.network.now + 10.0) + 1.0
    config = DiscoveryConfig(41800, "10.1.0.255", ("10.1.0.0/24",), ("10.1.0.50",))
    discovery = DiscoveryMachine(config, now)
    discovery.set_holding(BIG, ChunkSet(MAX_HAVE_CHUNKS, range(0, MAX_HAVE_CHUNKS, 2)), now)
    return Site(enterprise, discovery, now, root)


BIG = ContentId(hashlib.sha256(b"a 10 GiB package").digest())


def _client(site: Site, index: int) -> Any:
    return site.enterprise.clients[index].agent


#: A forged source inside the office's subnet (it passes every scope check).
OFFICE_VICTIM_IP = "10.1.0.200"


def _chunk_request(content_id: ContentId, length: int, token: bytes = NO_TOKEN) -> bytes:
    return encode_datagram(
        ChunkRequest(7, content_id, 0, length, Mode.FOREGROUND, 1380, 2048, token)
    )


def chunk_request_to_client(site: Site) -> Target:
    agent = _client(site, 0)
    victim = (OFFICE_VICTIM_IP, agent.config.data_port)
    datagram = _chunk_request(site.enterprise.content_id, MIB)
    return Target(agent.engines[Mode.FOREGROUND], datagram, victim, agent)


def chunk_request_guessed_token_to_client(site: Site) -> Target:
    target = chunk_request_to_client(site)
    target.datagram = _chunk_request(site.enterprise.content_id, MIB, os.urandom(8))
    return target


def chunk_request_to_server(site: Site) -> Target:
    server = site.enterprise.server
    victim = (_client(site, 0).config.ip, _client(site, 0).config.data_port)
    datagram = _chunk_request(site.enterprise.content_id, MIB)
    return Target(server.engines[Mode.FOREGROUND], datagram, victim, server)


def blob_request_to_server(site: Site) -> Target:
    """The signed assignment document, asked for from a registered client's address."""
    client = _client(site, 0)
    reply = site.server_core.handle_control(
        ControlMessage(1, client.config.device_id, CheckIn(())), (client.config.ip, 1), site.now
    )
    assert isinstance(reply, CheckInReply)
    server = site.enterprise.server
    datagram = _chunk_request(ContentId(reply.assignments_sha256), reply.assignments_length)
    victim = (client.config.ip, client.config.data_port)
    return Target(server.engines[Mode.FOREGROUND], datagram, victim, server)


def stray_data_to_client(site: Site) -> Target:
    agent = _client(site, 0)
    victim = (OFFICE_VICTIM_IP, agent.config.data_port)
    datagram = encode_datagram(Data(99, 0, 0, 0, b"x"))
    return Target(agent.engines[Mode.FOREGROUND], datagram, victim, agent)


def wrong_version_to_data_port(site: Site) -> Target:
    agent = _client(site, 0)
    victim = (OFFICE_VICTIM_IP, agent.config.data_port)
    return Target(agent.engines[Mode.FOREGROUND], b"SH\x09\x01", victim, agent)


def who_has_unpadded_to_holder(site: Site) -> Target:
    """A bare query (no padding) for a 10 GiB package whose holder is downloading."""
    return _who_has(site, WhoHas(1, BIG))


def who_has_padded_to_holder(site: Site) -> Target:
    """A query padded as shoal pads it (half the answer it asks for)."""
    return _who_has(site, WhoHas(1, BIG, padding=who_has_padding(MAX_HAVE_CHUNKS)))


def _who_has(site: Site, query: WhoHas) -> Target:
    discovery = site.discovery
    next_chunk = [1]

    def downloading(now: float) -> None:
        # The holder gains a chunk every 10 ms: each gain pushes to interested peers.
        while next_chunk[0] < MAX_HAVE_CHUNKS and site.now + next_chunk[0] * 0.01 <= now:
            discovery.chunk_added(BIG, next_chunk[0], MAX_HAVE_CHUNKS, now)
            next_chunk[0] += 2

    return Target(discovery, encode_datagram(query), ("10.1.0.77", 41800), during=downloading)


def _proven_peer(site: Site) -> tuple[DiscoveryMachine, Address]:
    """A discovery machine holding half of the 10 GiB package and searching it (a
    downloader), and a peer that asked it and echoed its token: a proven address, the
    victim. Nothing changes meanwhile (no pushes), so only the forged datagram counts."""
    config = DiscoveryConfig(41800, "10.1.0.255", ("10.1.0.0/24",), ("10.1.0.51",))
    holder = DiscoveryMachine(config, site.now)
    holder.set_holding(BIG, ChunkSet(MAX_HAVE_CHUNKS, range(0, MAX_HAVE_CHUNKS, 2)), site.now)
    holder.search(BIG, site.now, chunk_count=MAX_HAVE_CHUNKS)
    victim = ("10.1.0.77", 41800)
    padding = who_has_padding(MAX_HAVE_CHUNKS)
    holder.receive_datagram(encode_datagram(WhoHas(1, BIG, padding=padding)), victim, site.now)
    [answer] = [d for d, a in holder.datagrams_to_send(site.now) if a == victim]
    have = decode_datagram(answer)
    assert isinstance(have, Have)
    echo = WhoHas(1, BIG, have.token, padding)
    holder.receive_datagram(encode_datagram(echo), victim, site.now)
    assert holder.counters.addresses_validated == 1
    return holder, victim


def new_query_id_from_proven_peer(site: Site) -> Target:
    """A bare query with a new query ID from a proven peer's address: taken for its
    restarted process, it was answered and asked back without limit."""
    holder, victim = _proven_peer(site)
    return Target(holder, encode_datagram(WhoHas(2, BIG)), victim)


def new_token_from_proven_peer(site: Site) -> Target:
    """A HAVE of one byte of bitmap with a new token, from a proven peer's address: it
    was echoed in a query padded for the package searched."""
    holder, victim = _proven_peer(site)
    have = Have(0, BIG, ChunkSet(8, [0]), b"\x07" * 8)
    return Target(holder, encode_datagram(have), victim)


def who_has_to_client(site: Site) -> Target:
    agent = _client(site, 0)
    victim = (OFFICE_VICTIM_IP, agent.config.discovery_port)
    query = WhoHas(1, site.enterprise.content_id)
    return Target(agent.discovery, encode_datagram(query), victim, agent)


def forged_have_to_downloading_client(site: Site) -> Target:
    """A HAVE from a forged in-office address, to a client searching for the package:
    the client may ask the forged address for chunks (from its data ports)."""
    enterprise = build_enterprise(
        site.root / "downloading",
        [SimOffice("Branch", "10.1.0.0/24", clients=2)],
        package_size=2 * MIB,
        chunk_size=MIB,
    )
    agent = enterprise.clients[0].agent
    enterprise.run(60.0, stop=lambda: _searching(agent, enterprise.content_id))
    manifest = agent.downloads[enterprise.content_id].manifest
    have = Have(0, enterprise.content_id, ChunkSet.full(manifest.chunk_count))
    victim = (OFFICE_VICTIM_IP, agent.config.discovery_port)
    site.now = enterprise.network.now
    engines = tuple(agent.engines.values())
    return Target(agent.discovery, encode_datagram(have), victim, agent, also=engines)


def _searching(agent: Any, content_id: ContentId) -> bool:
    download = agent.downloads.get(content_id)
    return download is not None and download.picker is not None


def wrong_version_to_discovery_port(site: Site) -> Target:
    agent = _client(site, 0)
    victim = (OFFICE_VICTIM_IP, agent.config.discovery_port)
    return Target(agent.discovery, b"SH\x09\x10", victim, agent)


def _control_target(site: Site, datagram: bytes, ip: str | None = None) -> Target:
    server = site.enterprise.server
    victim_ip = ip if ip is not None else _client(site, 0).config.ip
    return Target(server.control, datagram, (victim_ip, 41000), server)


def hello_to_control_port(site: Site) -> Target:
    """A HELLO as clients send it (padded): the server answers with its CERTIFICATE."""
    key = DeviceKey.generate()
    return _control_target(
        site, encode_control(ControlMessage(0, key.device_id, Hello()), None), OFFICE_VICTIM_IP
    )


def short_hello_to_control_port(site: Site) -> Target:
    """An unpadded HELLO: too small to be answered within 3x, so not answered."""
    key = DeviceKey.generate()
    return _control_target(
        site, encode_control(ControlMessage(0, key.device_id, Hello(0)), None), OFFICE_VICTIM_IP
    )


def bad_tag_to_control_port(site: Site) -> Target:
    """A REGISTER authenticated with a wrong key (the server answers REFUSED)."""
    key = DeviceKey.generate()
    body = Register(key.public_raw, "0.1.0", "pc", 24)
    message = ControlMessage(1, key.device_id, body, counter=1)
    return _control_target(site, encode_control(message, b"not the control key"))


def unknown_device_to_control_port(site: Site) -> Target:
    """A CHECKIN from a device the server does not know (it answers REFUSED)."""
    key = DeviceKey.generate()
    message = ControlMessage(1, key.device_id, CheckIn(()), counter=1)
    return _control_target(site, encode_control(message, b"no key of this server"))


def _captured_checkin(site: Site) -> bytes:
    """A genuine CHECKIN of the office's first client, which the server has answered."""
    agent, server = _client(site, 0), site.enterprise.server
    agent.control.check_in([], site.now)
    [(datagram, _)] = agent.control.datagrams_to_send(site.now)
    server.control.receive_datagram(
        datagram, (agent.config.ip, agent.config.control_port), site.now
    )
    server.control.datagrams_to_send(site.now)
    return datagram


def replayed_checkin_to_control_port(site: Site) -> Target:
    """A captured CHECKIN replayed from a forged address (the counter is not new)."""
    return _control_target(site, _captured_checkin(site), OFFICE_VICTIM_IP)


def forged_source_checkin_to_control_port(site: Site) -> Target:
    """A fresh, authenticated CHECKIN of an enrolled device sent from a forged address:
    a device with a key can still forge its source, so its answers fit 3x too."""
    agent = _client(site, 0)
    agent.control.check_in([], site.now)
    [(datagram, _)] = agent.control.datagrams_to_send(site.now)
    return _control_target(site, datagram, OFFICE_VICTIM_IP)


def wrong_version_to_control_port(site: Site) -> Target:
    # The shortest datagram the control port reads far enough to answer (header + tag).
    return _control_target(site, b"SH\x09\x21" + bytes(HEADER_SIZE + TAG_SIZE - 4))


REQUESTS: list[RequestType] = [
    RequestType("chunk request (no token)", "client data", chunk_request_to_client),
    RequestType(
        "chunk request (guessed token)", "client data", chunk_request_guessed_token_to_client
    ),
    RequestType("chunk request (no token)", "server data", chunk_request_to_server),
    RequestType("blob request (no token)", "server data", blob_request_to_server),
    RequestType("DATA for no request", "client data", stray_data_to_client),
    RequestType("wrong-version datagram", "client data", wrong_version_to_data_port),
    RequestType("who-has, 10 GiB, unpadded", "discovery", who_has_unpadded_to_holder),
    RequestType("who-has, 10 GiB, padded", "discovery", who_has_padded_to_holder),
    RequestType("who-has (assigned content)", "client discovery", who_has_to_client),
    RequestType("HAVE (forged holder)", "client discovery", forged_have_to_downloading_client),
    RequestType("who-has, new ID, proven peer", "discovery", new_query_id_from_proven_peer),
    RequestType("HAVE, new token, proven peer", "discovery", new_token_from_proven_peer),
    RequestType("wrong-version datagram", "client discovery", wrong_version_to_discovery_port),
    RequestType("HELLO (padded)", "server control", hello_to_control_port),
    RequestType("HELLO (unpadded)", "server control", short_hello_to_control_port),
    RequestType("REGISTER, bad tag", "server control", bad_tag_to_control_port),
    RequestType("CHECKIN, unknown device", "server control", unknown_device_to_control_port),
    RequestType("CHECKIN, replayed", "server control", replayed_checkin_to_control_port),
    RequestType("CHECKIN, forged source", "server control", forged_source_checkin_to_control_port),
    RequestType("wrong-version datagram", "server control", wrong_version_to_control_port),
]


def measure(target: Target, start: float, seconds: float) -> tuple[int, int, int]:
    """Deliver the forged datagram; return (bytes in, bytes out, datagrams out) to the
    victim's IP over ``seconds`` of virtual time."""
    machine, victim = target.machine, target.victim
    machines = (machine, *target.also)
    for each in machines:
        each.datagrams_to_send(start)  # nothing earlier is counted
    machine.receive_datagram(target.datagram, victim, start)
    now, end = start, start + seconds
    sent_bytes = sent_datagrams = 0
    while True:
        if target.during is not None:
            target.during(now)
        if target.owner is not None:
            target.owner.poll(now)
        for each in machines:
            for datagram, destination in each.datagrams_to_send(now):
                if destination[0] == victim[0]:
                    sent_bytes += len(datagram)
                    sent_datagrams += 1
        timers = [each.get_timer() for each in machines]
        if target.owner is not None:
            timers.append(target.owner.get_timer())
        if target.during is not None:
            timers.append(now + 0.005)
        candidates = [t for t in timers if t is not None]
        if not candidates:
            break
        now = max(min(candidates), now + 1e-6)
        if now > end:
            break
        for each in (*machines, *(() if target.owner is None else (target.owner,))):
            timer = each.get_timer()
            if timer is not None and timer <= now:
                each.handle_timer(now)
    return len(target.datagram), sent_bytes, sent_datagrams


def run(seconds: float = 10.0) -> list[tuple[RequestType, int, int, int]]:
    """Every row of ``REQUESTS``, each on a fresh site."""
    results = []
    with tempfile.TemporaryDirectory(prefix="shoal-amplification-") as directory:
        for index, request in enumerate(REQUESTS):
            site = build_site(Path(directory) / str(index))
            target = request.build(site)
            results.append((request, *measure(target, site.now, seconds)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="virtual time per request")
    args = parser.parse_args()
    results = run(args.seconds)
    print(f"{'request':32} {'port':18} {'in B':>6} {'out B':>8} {'out dgrams':>10} {'factor':>8}")
    worst = 0.0
    for request, received, sent, datagrams in results:
        factor = sent / received
        worst = max(worst, factor)
        flag = "" if factor <= LIMIT else "  > 3x"
        print(
            f"{request.name:32} {request.port:18} {received:6d} {sent:8d} {datagrams:10d} "
            f"{factor:8.2f}{flag}"
        )
    print(f"max amplification factor: {worst:.2f} (limit {LIMIT:.0f}, RFC 9000 §8.1)")
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
