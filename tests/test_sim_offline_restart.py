"""A device whose P2P server does not answer: offline after a restart, and its status
once the server is back."""

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


def test_the_status_says_the_server_answers_again_once_it_does(tmp_path: Path) -> None:
    """A check-in during the server's outage goes unanswered and the status says so;
    once the server is back and answers, the status says the device is registered
    again. It went on saying "does not answer" until the next registration before."""
    enterprise = three_devices(tmp_path)
    device = enterprise.clients[0]
    enterprise.run(until=30.0, stop=enterprise.all_complete)
    agent = device.agent
    assert agent.server_note.startswith("registered with the P2P server")
    enterprise.kill_server()
    agent.registrar.check_in_soon(enterprise.network.now)
    enterprise.run(until=enterprise.network.now + 30.0, stop=lambda: "not" in agent.server_note)
    assert "does not answer" in agent.server_note
    enterprise.restart_server()
    enterprise.run(
        until=enterprise.network.now + 30.0, stop=lambda: "does not" not in agent.server_note
    )
    assert agent.server_note == "registered with the P2P server, office office"
