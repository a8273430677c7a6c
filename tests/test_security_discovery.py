"""Row 15 of the attack table: discovery against a hostile host on the LAN.

The attacker forges discovery datagrams from any address of the office: HAVEs from a
thousand addresses (every holder then thought the office full of holders and answered
almost no query: the askers stalled), queries with fresh query IDs from a real peer's
address (each was answered and asked back: a reflection onto that peer), HAVEs with
fresh tokens from a peer's address (each echoed in a query padded for the package), and
queries from many addresses to a WiFi search (each source asked in every later round).
Each test here fails without the fix.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from shoal.core.address import Address
from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.discovery import DiscoveryConfig, DiscoveryMachine, PeerAvailable
from shoal.wire.messages import (
    MAX_HAVE_CHUNKS,
    Have,
    WhoHas,
    decode_datagram,
    encode_datagram,
    who_has_padding,
)
from shoal_dev.sim.network import SimNetwork

PORT = 41800
CONTENT = ContentId(bytes(range(32)))
#: A /16 office: room for a thousand forged sources beside the real devices.
SUBNET = "10.1.0.0/16"
BROADCAST = "10.1.255.255"


def office_of(count: int) -> tuple[SimNetwork, list[DiscoveryMachine]]:
    network = SimNetwork(seed=7)
    office = network.add_office("branch", SUBNET, wan_rate=1e6)
    machines = []
    for number in range(1, count + 1):
        ip = f"10.1.0.{number}"
        config = DiscoveryConfig(PORT, BROADCAST, (SUBNET,), (ip,))
        machine = DiscoveryMachine(config, now=0, rng=random.Random(number))
        network.bind(network.add_host(office, ip), PORT, machine)
        machines.append(machine)
    return network, machines


def pump(network: SimNetwork, machine: DiscoveryMachine) -> None:
    network.pump(network.hosts[machine.config.local_addresses[0]])


def forged_source(index: int) -> Address:
    """The attacker's ``index``-th source: an address of the office no device has."""
    return (f"10.1.{1 + index // 250}.{1 + index % 250}", PORT)


def flood(
    machine: DiscoveryMachine,
    forge: Callable[[int], tuple[bytes, Address]],
    victims: Callable[[str], bool],
    start: float,
    count: int,
    rate: float,
) -> tuple[int, int, int]:
    """Deliver ``count`` forged datagrams (``forge(i)``: the datagram and its source), at
    ``rate`` a second, running ``machine``'s timers; return (bytes forged, bytes and
    datagrams ``machine`` sent to the IPs ``victims`` names)."""
    forged = sent_bytes = sent_datagrams = 0
    machine.datagrams_to_send(start)  # nothing earlier is counted
    for index in range(count):
        now = start + index / rate
        timer = machine.get_timer()
        if timer is not None and timer <= now:
            machine.handle_timer(now)
        datagram, source = forge(index)
        forged += len(datagram)
        machine.receive_datagram(datagram, source, now)
        for sent, destination in machine.datagrams_to_send(now):
            if victims(destination[0]):
                sent_bytes += len(sent)
                sent_datagrams += 1
        while machine.next_event() is not None:
            pass
    return forged, sent_bytes, sent_datagrams


def proven_pair(chunk_count: int) -> tuple[SimNetwork, DiscoveryMachine, DiscoveryMachine]:
    """A holder that searches the content too (a downloader), and a peer (the victim)
    that asked it and echoed its token: the victim's address is proven at the holder."""
    network, (holder, victim) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(chunk_count, range(0, chunk_count, 2)), now=0)
    victim.set_holding(CONTENT, ChunkSet(chunk_count, [1]), now=0)
    for machine in (holder, victim):
        machine.search(CONTENT, now=0, chunk_count=chunk_count)
        pump(network, machine)
    network.run(until=0.5)
    assert holder.counters.addresses_validated >= 1
    return network, holder, victim


def test_attack_15_a_thousand_forged_holders_do_not_silence_the_real_ones() -> None:
    """Eight devices download a package; the attacker sends each 1,000 HAVEs from forged
    addresses. Each holder answered a query with probability 4 / (holders it knew of):
    4/1,008, and once they all hold everything nobody pushes either: a newcomer's queries
    went unanswered. Only holders at proven addresses count now: it hears at once."""
    network, (*holders, newcomer) = office_of(9)
    full = ChunkSet(16, range(16))
    forged_have = encode_datagram(Have(0, CONTENT, full))
    for holder in holders:
        holder.set_holding(CONTENT, full, now=0)
        holder.search(CONTENT, now=0, chunk_count=16)
        for index in range(1000):
            holder.receive_datagram(forged_have, forged_source(index), now=0)
        pump(network, holder)
    network.run(until=3.0)
    for holder in holders:
        assert len(holder._holdings[CONTENT].holders) >= 1000  # it heard every forged HAVE
        holder.stop_search(CONTENT)  # complete: they stop searching
        while holder.next_event() is not None:
            pass
    newcomer.search(CONTENT, now=network.now, chunk_count=16)
    pump(network, newcomer)
    network.run(until=network.now + 0.5)  # its second query is due 1 s after the first
    answers = {e.peer for e in iter(newcomer.next_event, None) if isinstance(e, PeerAvailable)}
    assert answers, "no holder answered the newcomer's first query"


def test_attack_15_fresh_query_ids_from_a_peers_address_are_not_reflected_onto_it() -> None:
    """Forged queries with a new query ID each, from the address of a peer that proved
    it receives there: each was taken for a restarted peer, answered with the whole
    bitmap and asked back, without limit (the address was proven): 1,000 queries, bare
    and padded as shoal pads them by turns (374 kB), drew 2.1 MB onto the peer. Now a
    new ID renews a peer at most once per ``settled_query_interval``, and a reply is
    within 3x the query whoever sent it."""
    network, holder, victim = proven_pair(MAX_HAVE_CHUNKS)
    source = (victim.config.local_addresses[0], PORT)
    padding = who_has_padding(MAX_HAVE_CHUNKS)

    def forge(index: int) -> tuple[bytes, Address]:  # padded as shoal pads, and bare
        return encode_datagram(WhoHas(1000 + index, CONTENT, padding=padding * (index % 2))), source

    forged, sent, datagrams = flood(
        holder, forge, lambda ip: ip == source[0], network.now, count=1000, rate=100.0
    )
    assert sent <= 3 * forged
    seconds = 1000 / 100.0
    renewals = seconds / holder.config.settled_query_interval + 1
    assert datagrams <= 2 * renewals  # an answer and a query back per renewal, at most
    assert sent <= 0.1 * forged  # the flood buys nothing


def test_attack_15_forged_tokens_from_a_peers_address_draw_echoes_within_3x() -> None:
    """HAVEs of one byte of bitmap with a new token each, forged from a proven peer's
    address to a downloader: each was echoed in a query padded for the 10 GiB package it
    searches (13.2x, without limit). An echo is now padded for the HAVE it echoes."""
    network, searcher, victim = proven_pair(MAX_HAVE_CHUNKS)
    source = (victim.config.local_addresses[0], PORT)

    def forge(index: int) -> tuple[bytes, Address]:
        return encode_datagram(Have(0, CONTENT, ChunkSet(8, [0]), index.to_bytes(8, "big"))), source

    forged, sent, _ = flood(
        searcher, forge, lambda ip: ip == source[0], network.now, count=1000, rate=100.0
    )
    assert sent <= 3 * forged


def test_attack_15_forged_queries_do_not_enlist_victims_in_a_wifi_search() -> None:
    """A WiFi search asks back every peer that asks it (the server's list may predate
    it), and then queried it in every round: 200 forged queries from 200 addresses made
    a downloader query each of them every second for as long as it searched (32x in
    30 s). A peer the
    server did not list is queried within its credit until it proves its address."""
    network, (seeker, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(16, [0]), now=0)
    seeker.search(CONTENT, now=0, unicast_peers=[holder.config.local_addresses[0]], chunk_count=16)
    pump(network, seeker)
    network.run(until=0.5)
    query = encode_datagram(WhoHas(1, CONTENT, padding=who_has_padding(16)))
    forged_ips = {forged_source(index)[0] for index in range(200)}
    start = network.now
    forged, sent, _ = flood(
        seeker, lambda i: (query, forged_source(i)), forged_ips.__contains__, start, 200, 1000.0
    )
    now = start + 0.2
    while now < start + 30.0:  # 30 s of the search's rounds, the holder answering
        now = seeker.get_timer() or now + 1.0
        seeker.handle_timer(now)
        for datagram, destination in seeker.datagrams_to_send(now):
            if destination[0] in forged_ips:
                sent += len(datagram)
                assert isinstance(decode_datagram(datagram), WhoHas)
    assert sent <= 3 * forged
    assert seeker.counters.queries_sent >= 10  # it kept searching all along


def test_holders_that_served_us_a_chunk_keep_answers_few() -> None:
    """A holder that sent us a verified chunk is a real holder at a real address
    (``holder_proven``, from the transfer): it counts in how often we answer, so among
    17 known holders a query is answered about 4 times in 17, not every time."""
    _, (holder,) = office_of(1)
    holder.set_holding(CONTENT, ChunkSet(16, range(16)), now=0)
    holder.search(CONTENT, now=0, chunk_count=16)
    for number in range(2, 18):
        holder.holder_proven(CONTENT, f"10.1.0.{number}")
    query = encode_datagram(WhoHas(1, CONTENT, padding=who_has_padding(16)))
    for index in range(400):
        holder.receive_datagram(query, forged_source(index), now=0.001 * index)
    answered = holder.counters.queries_answered
    assert 40 <= answered <= 160  # 94 expected; 400 without the proof


def test_a_forged_new_query_id_delays_a_real_restart_by_one_interval_at_most() -> None:
    """The attacker spends a peer's renewal with a forged new ID just before the peer
    really restarts. The restarted process's own new ID was refused, not recorded: its
    first query after ``settled_query_interval`` renews it, and it hears of our chunks
    then (else not before what we told its old process expired, 12 s later)."""
    network, (seeker, holder) = office_of(2)
    seeker.set_holding(CONTENT, ChunkSet(4, [0]), now=0)
    holder.set_holding(CONTENT, ChunkSet(4, [1]), now=0)
    for machine in (seeker, holder):
        machine.search(CONTENT, now=0)
        pump(network, machine)
    address = (holder.config.local_addresses[0], PORT)
    restarted = DiscoveryMachine(replace(holder.config, first_query_id=7), now=1.5)

    def attack() -> None:  # the answer reaches the old process
        forged = WhoHas(999, CONTENT, padding=who_has_padding(None))
        seeker.receive_datagram(encode_datagram(forged), address, network.now)
        pump(network, seeker)

    def restart() -> None:
        network.bind(network.hosts[address[0]], PORT, restarted)
        restarted.set_holding(CONTENT, ChunkSet(4, [1]), now=network.now)
        restarted.search(CONTENT, now=network.now)
        pump(network, restarted)

    network.at(1.2, attack)
    network.at(1.5, restart)
    network.run(until=1.5)
    heard, until = [], 1.5
    while until < 11.0 and not heard:
        until += 0.25
        network.run(until=until)
        heard = [e for e in iter(restarted.next_event, None) if isinstance(e, PeerAvailable)]
    assert heard and heard[0].chunks == ChunkSet(4, [0])
    assert until <= 1.2 + seeker.config.settled_query_interval + 5.0


def test_a_peer_is_proven_to_the_transfer_by_its_echoed_token_or_the_servers_list() -> None:
    """What ``TransferEngine.trust_peers`` is given: an address that echoed our token (it
    receives there), or one the server listed; never one that only sent us a HAVE."""
    network, holder, _victim = proven_pair(16)
    assert holder.address_proven("10.1.0.2", network.now)
    forged = forged_source(3)
    have = encode_datagram(Have(0, CONTENT, ChunkSet(16, [0])))
    holder.receive_datagram(have, forged, network.now)
    assert not holder.address_proven(forged[0], network.now)
    holder.search(CONTENT, network.now, unicast_peers=[forged[0]], chunk_count=16)
    assert holder.address_proven(forged[0], network.now)  # the server vouches for it
