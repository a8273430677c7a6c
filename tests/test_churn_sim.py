"""Churn on a simulated office: a peer's process killed mid-download and restarted."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shoal.protocol.transfer.states import ReceiveState
from shoal_dev.sim.enterprise import SimOffice, build_enterprise, file_sha256

MIB = 1024 * 1024


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
    # Waiting out the old requests: 9 s. Asked at once: 1.47-1.58 s (the survivor is
    # refused BUSY once on the way, and the random back-off draws 0.05-0.25 s).
    assert survivor_done - restarted_at < 2.0
    # Each chunk crossed the WAN once: none of the victim's was fetched again meanwhile.
    from_server = sum(enterprise.received(client)[0] for client in (victim, survivor))
    assert from_server <= enterprise.manifest.size
