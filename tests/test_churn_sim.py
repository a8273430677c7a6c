"""Churn on a simulated office: a stripe holder's process killed mid-download."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shoal.protocol.transfer.states import ReceiveState
from shoal.wire.control import LeaseDecision
from shoal_dev.sim.enterprise import SimClient, SimOffice, build_enterprise, file_sha256

MIB = 1024 * 1024


def test_a_dead_holders_stripe_is_fetched_while_it_is_down_and_only_once(
    tmp_path: Path,
) -> None:
    """A holder is killed while it still has chunks of its stripe to fetch over the WAN.
    The server's data to it bounces (ICMP port unreachable): its process is gone, so its
    stripe goes to a live holder at its next renewal, and the chunks nobody in the office
    had come in during the outage, not ``lease_seconds`` (10 s here, the product's
    default) later. What the dead holder had received stays on its disk: nobody fetches
    it over the WAN again."""
    office = SimOffice(
        "Branch", "10.1.0.0/24", 4, wan_rate=12.5e6, client_up_rate=2.5e6, client_down_rate=12.5e6
    )
    enterprise = build_enterprise(
        tmp_path,
        [office],
        package_size=4 * MIB,
        chunk_size=128 * 1024,
        lease_seconds=10.0,
        link_profiles=True,
    )
    network = enterprise.network
    chunk_count = enterprise.manifest.chunk_count

    def held(client: SimClient) -> set[int]:
        if enterprise.content_id not in client.store:
            return set()
        return set(client.store.verified(enterprise.content_id))

    def holder_midway() -> SimClient | None:
        """A stripe holder that has fetched a chunk from the server, with more to fetch."""
        in_office = set().union(*(held(client) for client in enterprise.clients))
        if len(in_office) > chunk_count // 2:
            return None
        for client in enterprise.clients:
            download = enterprise.download_of(client)
            if (
                download is not None
                and download.source is LeaseDecision.GRANTED
                and download.bytes_from_server > 0
            ):
                return client
        return None

    enterprise.run(until=30, stop=lambda: holder_midway() is not None)
    victim = holder_midway()
    assert victim is not None, "no holder was midway through its stripe"
    survivors = [client for client in enterprise.clients if client is not victim]
    only_on_its_disk_at_kill = held(victim) - set().union(*(held(c) for c in survivors))
    enterprise.kill(victim)
    killed_at = network.now
    wanted = set(range(chunk_count)) - only_on_its_disk_at_kill

    def survivors_hold_what_they_can() -> bool:
        """Every live client holds every chunk but those only the dead one has."""
        return all(wanted <= held(client) for client in survivors)

    enterprise.run(until=killed_at + 30, stop=survivors_hold_what_they_can)
    assert survivors_hold_what_they_can()
    # The chunks of its stripe nobody else had came in while it was down, at the next
    # renewal of a live holder (every 0.3 x 10 s) and a few round trips: 4.4 s after the
    # kill; waiting for its lease to lapse, over 10 s.
    assert network.now - killed_at < 6.0
    assert enterprise.server.counters.stripes_freed >= 1
    # What it held did not cross the WAN again (the delivery ledger): one chunk at most
    # twice, the one the server was sending it when it died.
    from_server = sum(enterprise.received(client)[0] for client in enterprise.clients)
    assert from_server <= enterprise.manifest.size + enterprise.manifest.chunk_size


def test_requests_to_a_killed_peer_end_and_its_new_process_is_asked_at_once(
    tmp_path: Path,
) -> None:
    """Two holders, each the only source of its stripe. One is killed while it sends the
    other a chunk, and restarted on its cache 2 s later. The other's requests died with
    the old process: the ICMP port unreachable that our datagrams to it draw ends them,
    and the new process is asked as soon as it searches, not once the old requests time
    out (the transfer's idle timeout, 5 s of silence, which a new process talking to us
    never lets come) or the endgame finds them late."""
    office = SimOffice("Branch", "10.1.0.0/24", 2, wan_rate=12.5e6, client_up_rate=2.5e6)
    enterprise = build_enterprise(tmp_path, [office], package_size=2 * MIB)
    victim, survivor = enterprise.clients
    network = enterprise.network

    def receiving_from_victim() -> bool:
        """The victim is halfway through sending the survivor a chunk."""
        download = enterprise.download_of(survivor)
        if download is None or download.picker is None or len(download.picker.have) < 4:
            return False
        receiver = survivor.agent.engines[download.mode]._receiver
        return any(
            peer[0] == victim.host.ip
            and (transfer := receiver.downloads.get(request_id)) is not None
            and transfer.state is ReceiveState.RECEIVING
            for request_id, (peer, _) in download.requests.items()
        )

    enterprise.run(until=30, stop=receiving_from_victim)
    assert receiving_from_victim(), "the victim never sent the survivor anything"
    enterprise.kill(victim)
    network.run(until=network.now + 2.0)
    assert not enterprise.complete(survivor)  # it needs what only the victim holds
    restarted_at = network.now
    enterprise.restart(victim)
    enterprise.run(until=restarted_at + 30, stop=enterprise.all_complete)
    expected = hashlib.sha256(enterprise.package).hexdigest()
    for client in (victim, survivor):
        assert enterprise.complete(client)
        assert file_sha256(client.store, enterprise.content_id) == expected
    survivor_done = enterprise.download_of(survivor).completed_at
    assert survivor_done - restarted_at < 1.5  # waiting out the old requests: 9 s
    # Each chunk crossed the WAN once: none of the victim's was fetched again meanwhile.
    from_server = sum(enterprise.received(client)[0] for client in (victim, survivor))
    assert from_server <= enterprise.manifest.size
