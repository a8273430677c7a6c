"""A server's BUSY refusal on the simulated enterprise: the client still completes, and
the refusal costs neither a loop of requests nor a chunk cut off on its way."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from shoal import ports
from shoal.client.agent import AgentCore
from shoal.store.content_store import ContentStore
from shoal_dev.lab.faults import CorruptingStore
from shoal_dev.sim.enterprise import Enterprise, SimOffice, build_enterprise, use_flow_engines

MIB = 1024 * 1024
OTHER_DISCOVERY_PORT = ports.DISCOVERY + 10_000
JOINS_AT = 2.5
"""Virtual seconds: the late client starts once its peers are complete (~1.5 s)."""


def a_late_client_its_peers_never_hear(tmp_path: Path, mode: str) -> Enterprise:
    """Three clients; the first starts at ``JOINS_AT`` with discovery on another port
    (as a client on the console's alternative ports whose peers never hear of it): it
    hears nobody and nobody hears it. Its peers have brought the package in by then, so
    the server's delivery ledger refuses it every chunk BUSY (the office holds them)
    until it lets them go, a lease period (3 s) after its first refusal of each."""
    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Branch", "10.1.0.0/24", 3, wan_rate=4e6)],
        package_size=2 * MIB,
        chunk_size=MIB // 16,
        mode=mode,
    )
    late = enterprise.clients[0]
    enterprise.kill(late)

    def join() -> None:
        config = replace(late.agent.config, discovery_port=OTHER_DISCOVERY_PORT)
        agent = AgentCore(config, late.store, enterprise.network.now, rng=random.Random(3))
        if enterprise.fabric is not None:
            use_flow_engines(enterprise.fabric, late.host, agent.engines, agent.bindings())
        enterprise.network.restart(late.host, agent.bindings(), agent)
        late.agent = agent

    enterprise.network.at(JOINS_AT, join)
    return enterprise


@pytest.mark.parametrize("mode", ["flow", "packet"])
def test_a_client_the_ledger_refuses_completes_without_a_refusal_loop(
    tmp_path: Path, mode: str
) -> None:
    # Before, every BUSY from the server made the client withdraw every request to it,
    # the chunk it was sending included, and ask again at once: a refusal every round
    # trip until the ledger let go, and then every chunk the server had started sending
    # was cut off by the next refusal of another one, again and again.
    enterprise = a_late_client_its_peers_never_hear(tmp_path, mode)
    enterprise.run(
        until=60, stop=lambda: enterprise.network.now > JOINS_AT and enterprise.all_complete()
    )
    assert enterprise.all_complete()
    late = enterprise.download_of(enterprise.clients[0])
    size, chunk_count = enterprise.manifest.size, enterprise.manifest.chunk_count
    assert late.bytes_from_server == size  # nobody else could give it anything
    # Each chunk asked of the server a few times over the ledger's 3 s, not every
    # round trip; and it comes soon after the ledger lets it go.
    assert enterprise.server.counters.refused_busy <= 5 * chunk_count
    assert late.completed_at - JOINS_AT < 3.0 + 2.5
    # No chunk on its way is cut off: the office's WAN carries the package twice (once
    # for the office, once for the client nobody hears), with headers and at most a
    # few datagrams sent again (4,402,586 bytes before the pacer woke flows for 0.5 ms
    # of their rate, 4,405,442 since: two datagrams), far less than a 64 KiB chunk.
    assert enterprise.wan_bytes_down("Branch") <= 2.1 * size + 5 * 1500
    if enterprise.fabric is not None:
        assert enterprise.fabric.counters.flows_cancelled == 0


def test_a_client_that_reported_the_office_s_liars_gets_their_chunks_from_the_server(
    tmp_path: Path,
) -> None:
    """The office's other client brought the package in from the server and serves it
    corrupted. The late client asks it, catches it lying, bans and reports it (one
    report: not a ban, which takes two devices). The server's ledger would hold
    every chunk back from it, since the office "holds" them, until a lease period after
    its first refusal; its own report frees them, and it asks the server again at once,
    not after its holds: it finishes about one WAN copy after it starts."""

    def store(directory: Path, number: int) -> ContentStore:
        kind = CorruptingStore if number == 1 else ContentStore
        return kind(directory, durable=False)

    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Branch", "10.1.0.0/24", 2, wan_rate=4e6)],
        package_size=2 * MIB,
        chunk_size=MIB // 16,
        store_factory=store,
    )
    late = enterprise.clients[0]
    enterprise.kill(late)
    enterprise.network.at(JOINS_AT, lambda: enterprise.restart(late))
    enterprise.run(
        until=60, stop=lambda: enterprise.network.now > JOINS_AT and enterprise.complete(late)
    )
    download = enterprise.download_of(late)
    assert enterprise.complete(late)
    assert enterprise.clients[1].host.ip in download.banned
    assert not enterprise.server.core.bad_peers.banned_in("Branch", enterprise.network.now)
    one_wan_copy = enterprise.manifest.size / 4e6
    assert download.completed_at - JOINS_AT < one_wan_copy + 1.0
