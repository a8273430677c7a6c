"""The simulator's usual stop test: ``Enterprise.all_complete`` (every live client has
its download complete), which asks first the client it found incomplete last time."""

from __future__ import annotations

from pathlib import Path

from shoal_dev.sim.enterprise import SimOffice, build_enterprise

MIB = 1024 * 1024


def test_all_complete_is_every_live_client_whichever_it_asked_first(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 3)], package_size=1 * MIB
    )
    assert not enterprise.all_complete()
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    first, _, last = enterprise.clients
    cid = enterprise.content_id

    # The last client loses its download: incomplete, and now the one asked first.
    taken = last.agent.downloads.pop(cid)
    assert not enterprise.all_complete()
    assert enterprise.first_pending == 2
    # It is back, but the first client lost its own: the hint must not hide that.
    last.agent.downloads[cid] = taken
    first_taken = first.agent.downloads.pop(cid)
    assert not enterprise.all_complete()
    # A client whose host is down is not waited for.
    enterprise.kill(first)
    assert enterprise.all_complete()
    first.agent.downloads[cid] = first_taken
