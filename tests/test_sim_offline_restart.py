"""A device restarted while its P2P server does not answer goes on with its office."""

from __future__ import annotations

from pathlib import Path

from test_sim_document_retry import three_devices


def test_a_device_restarted_while_its_server_is_down_completes_from_its_peers(
    tmp_path: Path,
) -> None:
    """The device is killed half-way, its server dies, and the device comes back while
    the server is still down: its first REGISTER goes unanswered, so it takes the
    registration and the assignment document its earlier process kept and fetches the
    rest from the office's peers. It waited for the server before, with what it held
    useless to its office and nothing more coming."""
    enterprise = three_devices(tmp_path, package_size=4 << 20, wan_rate=2.5e6)
    device, other = enterprise.clients[0], enterprise.clients[1]

    def half_way() -> bool:
        download = enterprise.download_of(device)
        return download is not None and sum(enterprise.received(device)) >= 1 << 20

    enterprise.run(until=30.0, stop=half_way)
    assert half_way() and not enterprise.complete(device)
    enterprise.kill(device)
    enterprise.run(until=enterprise.network.now + 30.0, stop=lambda: enterprise.complete(other))
    assert enterprise.complete(other)
    enterprise.kill_server()
    enterprise.restart(device)
    restarted = enterprise.network.now
    enterprise.run(until=restarted + 60.0, stop=lambda: enterprise.complete(device))
    agent = device.agent
    assert enterprise.complete(device), agent.registrar.note
    assert "working offline" in agent.registrar.note
    assert agent.counters.documents_kept == 1
    assert enterprise.network.now < restarted + 20.0
    # The server back, the device registers with it again: its answer replaces the kept one.
    enterprise.restart_server()
    kept = agent.registration
    enterprise.run(until=enterprise.network.now + 10.0, stop=lambda: agent.registration is not kept)
    assert agent.registration is not kept and agent.registration is not None
    assert agent.registrar.note.startswith("registered with the P2P server")
