"""Namespaces: a real transfer between two of them, and nothing left behind.

These need root (network namespaces); they skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shoal_dev.bench.transfer import NAMESPACE_PREFIX, TransferBenchOptions, run_transfer_bench
from shoal_dev.lab.netns import (
    TwoHostLab,
    cleanup_orphans,
    cleanup_prefix,
    create_namespace,
    delete_namespace,
    lab_available,
    list_links,
    list_namespaces,
    namespace_command,
    remove_shaping,
    run_tc,
    shape_htb,
)

AVAILABLE, WHY_NOT = lab_available()
pytestmark = [
    pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT or "lab unavailable"),
    pytest.mark.serial,
]

TEST_PREFIX = "shn-t"


def test_transfer_between_two_namespaces_and_every_namespace_is_gone_after() -> None:
    before = set(list_namespaces(NAMESPACE_PREFIX))
    document = run_transfer_bench(
        TransferBenchOptions(size_mb=4, baseline=False, timeout_seconds=60),
        report=lambda _line: None,
    )
    shoal = document["shoal"]
    assert document["link"].startswith("veth between namespaces")
    assert shoal["complete"] and shoal["sha256_matches"]
    assert shoal["payload_mb_per_s"] > 0
    assert set(list_namespaces(NAMESPACE_PREFIX)) == before


def test_lab_removes_namespaces_and_kills_processes_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), TwoHostLab.create(TEST_PREFIX, "f") as lab:
        names = lab.namespaces
        assert set(names) <= set(list_namespaces(TEST_PREFIX))
        sleeper = lab.spawn(lab.right, [sys.executable, "-c", "import time; time.sleep(60)"])
        raise RuntimeError("the test body failed")
    assert sleeper.poll() is not None
    assert not set(names) & set(list_namespaces(TEST_PREFIX))
    assert not list_links(TEST_PREFIX)


def test_cleanup_prefix_removes_leftovers_of_a_crashed_run() -> None:
    name = f"{TEST_PREFIX}crash"
    create_namespace(name)
    try:
        removed = cleanup_prefix(TEST_PREFIX)
        assert f"netns {name}" in removed
        assert name not in list_namespaces(TEST_PREFIX)
    finally:
        cleanup_prefix(TEST_PREFIX)


BROADCAST_SCRIPT = """
import asyncio, json
from shoal.net import DatagramEndpoint, DatagramRefused, UdpConfig

class Recorder:
    def __init__(self):
        self.outbox, self.arrived = [], []
    def receive_datagram(self, data, addr, now):
        self.arrived.append(bytes(data).decode())
    def handle_timer(self, now):
        pass
    def datagrams_to_send(self, now):
        out, self.outbox = self.outbox, []
        return out
    def get_timer(self):
        return None
    def next_event(self):
        return None

async def main():
    listener = Recorder()
    listening = DatagramEndpoint.open(listener, "0.0.0.0", 47500)
    refusals = []
    for broadcast in (False, True):
        sender = Recorder()
        endpoint = DatagramEndpoint.open(
            sender, "127.0.0.1", 0, refusals.append, config=UdpConfig(broadcast=broadcast)
        )
        sender.outbox.append((f"broadcast={broadcast}".encode(), ("127.255.255.255", 47500)))
        endpoint.transmit()
        # Poll: it arrives (broadcast allowed) or is refused at once (not allowed).
        arrived, refused = len(listener.arrived), len(refusals)
        for _ in range(300):
            if len(listener.arrived) > arrived or len(refusals) > refused:
                break
            await asyncio.sleep(0.01)
        endpoint.close()
    listening.close()
    print(json.dumps({
        "arrived": listener.arrived,
        "refused": [(type(event).__name__, event.cause) for event in refusals],
    }))

asyncio.run(main())
"""


def test_broadcast_needs_the_broadcast_option_and_reaches_listeners() -> None:
    namespace = f"{TEST_PREFIX}bc{os.getpid() % 100000}"
    create_namespace(namespace)
    try:
        done = subprocess.run(
            namespace_command(namespace, [sys.executable, "-c", BROADCAST_SCRIPT]),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        delete_namespace(namespace)
    outcome = json.loads(done.stdout)
    assert outcome["arrived"] == ["broadcast=True"]
    [(kind, cause)] = outcome["refused"]
    assert kind == "DatagramRefused" and "EACCES" in cause
    assert namespace not in list_namespaces(TEST_PREFIX)


def test_cleanup_orphans_removes_only_namespaces_whose_owner_is_gone() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = f"{TEST_PREFIX}o{dead.pid}a"
    alive = f"{TEST_PREFIX}o{os.getpid()}a"
    create_namespace(orphan)
    create_namespace(alive)
    try:
        removed = cleanup_orphans(f"{TEST_PREFIX}o")
        remaining = list_namespaces(f"{TEST_PREFIX}o")
        assert removed == [f"netns {orphan}"]
        assert remaining == [alive]
    finally:
        delete_namespace(orphan)
        delete_namespace(alive)


def test_htb_shaping_is_installed_and_removed() -> None:
    with TwoHostLab.create(TEST_PREFIX, "h") as lab:
        shape_htb(lab.left.device, 50, lab.left.namespace)
        classes = run_tc("class", "show", "dev", lab.left.device, namespace=lab.left.namespace)
        assert "htb 1:10" in classes and "rate 50Mbit" in classes
        remove_shaping(lab.left.device, lab.left.namespace)
        qdiscs = run_tc("qdisc", "show", "dev", lab.left.device, namespace=lab.left.namespace)
        assert "htb" not in qdiscs
