"""SIGKILL the console during uploads and assignment writes: nothing acknowledged is lost,
nothing half-registered becomes visible."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.core.signing import VerifyKey, verify_manifest_file

from .process import ConsoleProcess

UPLOAD_SIZE = 3 * 1024 * 1024
PIECE = 256 * 1024


def package_bytes(name: str, pace: float = 0.02) -> Iterator[bytes]:
    """A package derived from its name, sent in pieces (a chunked, streamed upload)."""
    seed = hashlib.sha256(name.encode()).digest()
    for index in range(UPLOAD_SIZE // PIECE):
        yield hashlib.sha256(seed + index.to_bytes(4, "big")).digest() * (PIECE // 32)
        time.sleep(pace)  # keep uploads in flight long enough to be cut


def expected_sha256(name: str) -> str:
    return hashlib.sha256(b"".join(package_bytes(name, pace=0))).hexdigest()


class Workload:
    """Uploaders and an assigner hammering the console until it dies."""

    def __init__(self, console: ConsoleProcess, round_number: int) -> None:
        self.console = console
        self.round = round_number
        self.acknowledged_uploads: dict[str, dict] = {}
        self.acknowledged_assignments: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.admin = console.admin()
        self.threads = [
            threading.Thread(target=self._upload_loop, args=(worker,)) for worker in range(3)
        ] + [threading.Thread(target=self._assign_loop)]

    def _upload_loop(self, worker: int) -> None:
        number = 0
        while not self.stop.is_set():
            name = f"r{self.round}-w{worker}-{number}"
            number += 1
            try:
                answer = self.admin.post(
                    "/api/v1/applications",
                    params={"name": name, "version": "1"},
                    content=package_bytes(name),
                    headers={"content-type": "application/octet-stream"},
                )
            except httpx.HTTPError:
                return  # the console died under us: this upload was never acknowledged
            if answer.status_code == 201:
                with self.lock:
                    self.acknowledged_uploads[name] = answer.json()

    def _assign_loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                versions = [version["id"] for version in self.acknowledged_uploads.values()]
            if not versions:
                time.sleep(0.02)
                continue
            try:
                answer = self.admin.post(
                    "/api/v1/assignments",
                    json={"version_id": versions[-1], "target_kind": "everyone"},
                )
            except httpx.HTTPError:
                return
            if answer.status_code == 201:
                with self.lock:
                    self.acknowledged_assignments.append(answer.json()["id"])

    def run_until_killed(self, seconds: float) -> None:
        """Kill the console after ``seconds``, or later: once it has acknowledged an upload
        and an assignment of this round (so every round writes, whatever the machine's
        load). Uploads are in flight all the time, so the kill cuts some."""
        for thread in self.threads:
            thread.start()
        time.sleep(seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                if self.acknowledged_uploads and self.acknowledged_assignments:
                    break
            time.sleep(0.05)
        self.console.kill()
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.admin.close()


def check_console_state(
    console: ConsoleProcess, acknowledged: dict[str, dict], assignments: set[int]
) -> int:
    """Every acknowledged write is there; every visible version is whole. Returns versions."""
    signing_key = VerifyKey.load(console.data_dir / "console-signing.key.pub")
    content_dir = console.data_dir / "content"
    admin = console.admin()
    try:
        every = {"limit": 1000}
        applications = admin.get("/api/v1/applications", params=every).json()
        assert applications["total"] == len(applications["items"])
        listed = {app["name"]: app for app in applications["items"]}
        for name, version in acknowledged.items():
            assert name in listed, f"acknowledged upload {name} lost"
            assert listed[name]["versions"][0]["content_id"] == version["content_id"]
        visible = 0
        for name, application in listed.items():
            for version in application["versions"]:
                visible += 1
                data = (content_dir / f"{version['content_id']}.data").read_bytes()
                assert len(data) == version["size"] == UPLOAD_SIZE, f"{name} is half-written"
                assert (
                    hashlib.sha256(data).hexdigest() == version["sha256"] == expected_sha256(name)
                )
                manifest = verify_manifest_file(
                    (content_dir / f"{version['content_id']}.manifest").read_bytes(), [signing_key]
                )
                assert manifest.content_id.hex == version["content_id"]
        answer = admin.get("/api/v1/assignments", params=every).json()
        assert answer["total"] == len(answer["items"])
        present = {assignment["id"] for assignment in answer["items"]}
        assert assignments <= present, f"acknowledged assignments lost: {assignments - present}"
    finally:
        admin.close()
    assert list((content_dir / "tmp").iterdir()) == [], "unfinished uploads left behind"
    return visible


@pytest.mark.slow
def test_sigkill_during_uploads_and_assignments_loses_nothing_acknowledged(
    tmp_path: Path, database_url: str | None
) -> None:
    console = ConsoleProcess(tmp_path / "console", database_url)
    acknowledged: dict[str, dict] = {}
    assignments: set[int] = set()
    interrupted = 0
    try:
        # Two kills: the second restarts from the state the first left (the recovery
        # code runs on a store that was itself recovered), as a third would again.
        for round_number in range(2):
            console.start()
            check_console_state(console, acknowledged, assignments)
            workload = Workload(console, round_number)
            workload.run_until_killed(seconds=1.0 + round_number)
            acknowledged.update(workload.acknowledged_uploads)
            assignments.update(workload.acknowledged_assignments)
            tmp_files = os.listdir(console.data_dir / "content" / "tmp")
            interrupted += len(tmp_files)
        console.start()
        visible = check_console_state(console, acknowledged, assignments)
    finally:
        console.stop()
    assert acknowledged and assignments, "the workload acknowledged nothing: test proves nothing"
    assert interrupted > 0, "no upload was cut by the kill: test proves nothing"
    assert visible >= len(acknowledged)
