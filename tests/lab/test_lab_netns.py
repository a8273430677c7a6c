"""Namespaces: a real transfer between two of them, and nothing left behind.

These need root (network namespaces); they skip with the reason otherwise.
"""

from __future__ import annotations

import sys

import pytest

from shoal.bench.transfer import NAMESPACE_PREFIX, TransferBenchOptions, run_transfer_bench
from shoal.lab.netns import (
    TwoHostLab,
    cleanup_prefix,
    create_namespace,
    lab_available,
    list_links,
    list_namespaces,
)

AVAILABLE, WHY_NOT = lab_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT or "lab unavailable")

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
