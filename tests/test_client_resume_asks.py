"""A restarted client asks the server the rest of a chunk it holds a prefix of on disk,
off its stripes too (``shoal.client.resume_asks``; issues 9 and 10)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from shoal.client.agent import AgentCore
from shoal.client.server_origin import RESUME_MAX, ServerOrigin
from shoal.core.chunkset import ChunkSet
from shoal.protocol.transfer import Mode
from shoal.store.content_store import ContentStore
from shoal_dev.sim.enterprise import SimClient, SimOffice, build_enterprise, file_sha256

MIB = 1024 * 1024
CHUNK = 256 * 1024


def _record_requests(agent: AgentCore, server: Any) -> list[tuple[int, int, bool, bool]]:
    """(chunk index, prefix length, asked of the server, off the lease) of every request."""
    asked: list[tuple[int, int, bool, bool]] = []
    engine = agent.engines[Mode.FOREGROUND]
    request_chunk = engine.request_chunk

    def recording(*args: Any) -> int:
        peer, chunk_index = args[0], args[2]
        prefix = args[7] if len(args) > 7 else b""
        download = agent.downloader.downloads.get(args[1])
        if download is not None and download.picker is not None:  # not the manifest
            granted = download.origin.granted
            off_lease = granted is None or chunk_index not in granted
            asked.append((chunk_index, len(prefix), peer == server, off_lease))
        return request_chunk(*args)

    engine.request_chunk = recording  # type: ignore[method-assign]
    return asked


def _holder_with_a_prefix(client: SimClient, content_id: Any) -> bool:
    store = client.store
    assert isinstance(store, ContentStore)
    if content_id not in store:
        return False
    partials = store.partials
    return len(store.verified(content_id)) >= 1 and any(
        partials.size(content_id, index) >= 40_000 for index in partials.chunks(content_id)
    )


def test_a_restarted_holder_asks_the_server_the_rest_of_a_chunk_off_its_stripes(
    tmp_path: Path,
) -> None:
    """Two holders share the office's WAN copy (2 Mbit/s, 4 MiB in 16 chunks). One is
    killed mid-chunk and stays down 6 s: its lease (3 s) lapses and its stripe passes to the
    other. Restarted, it holds the chunk's prefix on disk and no stripe with the chunk:
    it asks the server the rest (an offset), and the server serves it (held for it,
    ``shoal.server.cut_chunks``; served off the stripes, ``shoal.server.resumes``). Before,
    it asked only its stripes' chunks: the other holder fetched the chunk whole."""
    office = SimOffice("Branch", "10.1.0.0/24", 2, wan_rate=2.5e5)
    enterprise = build_enterprise(
        tmp_path, [office], package_size=4 * MIB, chunk_size=CHUNK, checkin_seconds=10
    )
    victim = enterprise.clients[0]
    content_id = enterprise.content_id
    enterprise.run(until=30, stop=lambda: _holder_with_a_prefix(victim, content_id))
    assert _holder_with_a_prefix(victim, content_id), "the holder never had a prefix on disk"
    store = victim.store
    assert isinstance(store, ContentStore)
    saved = store.read_partials(content_id)
    enterprise.kill(victim)
    # Down past its lease (3 s here), within two check-in periods (10 s each): present.
    enterprise.network.run(until=enterprise.network.now + 6.0)
    enterprise.restart(victim)
    server = victim.agent.downloader.office.server_data_address(Mode.FOREGROUND)
    asked = _record_requests(victim.agent, server)
    enterprise.run(until=enterprise.network.now + 120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    package = enterprise.package
    expected = hashlib.sha256(package).hexdigest()
    assert all(file_sha256(c.store, content_id) == expected for c in enterprise.clients)
    first: dict[int, tuple[int, bool, bool]] = {}
    for chunk_index, prefix_length, of_server, off_lease in asked:
        first.setdefault(chunk_index, (prefix_length, of_server, off_lease))
    resumed = {index: first.get(index) for index in saved}
    # Each chunk with a prefix on disk: its first request asked the server the rest...
    assert resumed == {index: (len(saved[index]), True, resumed[index][2]) for index in saved}  # type: ignore[index]
    # ...and at least one of them was off the restarted holder's lease.
    assert any(off_lease for _, _, off_lease in resumed.values())  # type: ignore[misc]
    # So the WAN carried each such chunk once and its prefix was not sent again.
    wan = enterprise.wan_bytes_down("Branch")
    assert wan < len(package) * 1.05 + sum(len(prefix) for prefix in saved.values()) / 2


def test_the_rests_asked_off_the_lease_are_bounded_and_a_refusal_ends_them() -> None:
    """At most ``RESUME_MAX`` (the server's ``PER_DEVICE``) at once; one the server
    refuses BUSY is not asked off the lease again (its prefix waits for a peer)."""
    origin = ServerOrigin()
    assert not origin.resume(0) or True  # before any lease answer: not offered
    assert origin.offered(8) is None
    origin.resuming.clear()
    origin.grant(None)  # redirected
    assert origin.offered(8) is None  # and nothing to resume: not an origin
    for chunk_index in range(RESUME_MAX + 2):
        origin.resume(chunk_index)
    assert origin.resuming == set(range(RESUME_MAX))
    offered = origin.offered(8)
    assert offered is not None and sorted(offered) == list(range(RESUME_MAX))
    origin.refused(0, now=1.0)  # BUSY: its prefix waits for a peer
    assert 0 not in origin.resuming and not origin.resume(0)
    origin.resumed(1)
    assert origin.resume(5) and origin.resuming == {2, 3, 5}
    origin.grant(ChunkSet.full(8))  # a lease with every chunk: nothing more off it
    assert not origin.resume(6)
