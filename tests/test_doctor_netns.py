"""``shoal doctor`` in network namespaces: each of four faults is named by its cause.

A site (console, P2P server, one office with a running client as the peer) in
namespaces prefixed ``ops-``; the doctor runs in another host of the office. Faults:
broadcast blocked, a port taken, a wrong enrollment key, the server down (last, as it
stops the server). Needs root (namespaces, tc); skipped otherwise. Every namespace,
link and process is removed at the end, also when a test fails.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab_site import one_office_site
from shoal_dev.lab.deployment import Deployment
from shoal_dev.lab.netns import lab_available, run_tc
from shoal_dev.lab.network import EmulatedNetwork, LabHost, LabOffice

PREFIX = "ops-"
BASE = "10.212"  # not the lab's default: other engineers' labs may run beside this one

available, why = lab_available()
pytestmark = [pytest.mark.skipif(not available, reason=why), pytest.mark.serial]


@dataclass
class Site:
    deployment: Deployment
    network: EmulatedNetwork
    peer: LabHost
    device: LabHost
    work: Path

    def enroll(self, name: str, token: str | None = None) -> Path:
        """An enrolled data directory (agent not running), with ``token`` if given."""
        bundle = {**self.deployment.enrollment}
        if token is not None:
            bundle["enrollment_token"] = token
        path = self.work / f"bundle-{name}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as output:
            json.dump(bundle, output)
        data_dir = self.work / f"doctor-{name}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal",
                "client",
                "enroll",
                str(path),
                "--data-dir",
                str(data_dir),
            ],
            check=True,
            capture_output=True,
        )
        return data_dir

    def doctor(self, data_dir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
        answer = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.device.namespace,
                sys.executable,
                "-m",
                "shoal",
                "doctor",
                "client",
                "--json",
                "--data-dir",
                str(data_dir),
                "--server",
                self.deployment.console_host.address,  # type: ignore[union-attr]
                "--ip",
                self.device.address,
                "--prefix",
                "24",
                "--timeout",
                "3",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        document = json.loads(answer.stdout)
        return answer.returncode, {check["name"]: check for check in document["checks"]}


def _failed(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, check in checks.items() if not check["ok"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("doctor")
    office = LabOffice("branch", 1, 2, wan_mbit=100, base=BASE)
    with one_office_site(PREFIX, BASE, office, work, seats=10) as (deployment, network):
        peer, device = network.office_hosts("branch")
        deployment.start_clients([peer])
        deadline = time.monotonic() + 60
        while not (deployment.client_status(peer) or {}).get("registered"):
            deployment.check_alive()
            assert time.monotonic() < deadline, "the peer did not register"
            time.sleep(0.3)
        yield Site(deployment, network, peer, device, work)


def test_a_healthy_device_passes_every_check(site: Site) -> None:
    code, checks = site.doctor(site.enroll("healthy"))
    assert _failed(checks) == set(), checks
    assert code == 0
    assert "1 peer(s) answered" in checks["broadcast"]["detail"]
    assert site.peer.address in checks["broadcast"]["detail"]
    # The running peer's counters reach `shoal client status --json`.
    status = site.deployment.client_status(site.peer)
    assert status is not None
    assert {"queries_sent", "answers_received", "out_of_office_answers"} <= set(
        status["counters"]["discovery"]
    )
    assert status["server_silent_seconds"] < 3


def test_blocked_broadcast_is_named(site: Site) -> None:
    # The device's interface drops every broadcast it sends (as a switch or a Wi-Fi
    # access point with client isolation would); unicast still flows. HTB with a class
    # whose queue holds nothing: the lab's kernel has no netem and no tc actions.
    namespace = site.device.namespace
    tc = functools.partial(run_tc, namespace=namespace)
    tc("qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10")
    try:
        for classid in ("1:10", "1:20"):
            tc(
                "class",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "classid",
                classid,
                "htb",
                "rate",
                "10gbit",
            )
        tc("qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "pfifo", "limit", "0")
        for destination in (f"{BASE}.1.255/32", "255.255.255.255/32"):
            tc(
                "filter",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "dst",
                destination,
                "flowid",
                "1:20",
            )
        code, checks = site.doctor(site.enroll("broadcast"))
    finally:
        tc("qdisc", "del", "dev", "eth0", "root")
    assert code == 1
    assert _failed(checks) == {"broadcast"}, checks
    assert "broadcast is blocked" in checks["broadcast"]["detail"]
    assert "allow UDP broadcast" in checks["broadcast"]["fix"]


def test_a_port_taken_is_named(site: Site) -> None:
    holder = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            site.device.namespace,
            sys.executable,
            "-c",
            "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 41440)); print('bound', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"bound\n"
        code, checks = site.doctor(site.enroll("port"))
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    (failed,) = _failed(checks)
    assert failed.startswith("discovery port 41440"), checks
    assert "another program holds it" in checks[failed]["detail"]


def test_a_wrong_key_is_named(site: Site) -> None:
    code, checks = site.doctor(site.enroll("key", token="ab" * 16))
    assert code == 1
    assert _failed(checks) == {"key"}, checks
    assert "wrong key" in checks["key"]["detail"]
    assert "enroll again" in checks["key"]["fix"]


def _server_doctor(site: Site, auth_key: str) -> tuple[int, dict[str, dict[str, Any]]]:
    deployment = site.deployment
    host = deployment.console_host
    assert host is not None
    answer = subprocess.run(
        [
            *("ip", "netns", "exec", host.namespace, sys.executable, "-m", "shoal"),
            *("doctor", "server", "--json", "--data-dir", str(deployment.work / "server")),
            *("--console", deployment.console_url, "--auth-key", auth_key),
            *("--console-ca", str(deployment.console_cert), "--bind", host.address),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    document = json.loads(answer.stdout)
    return answer.returncode, {check["name"]: check for check in document["checks"]}


def test_a_running_server_passes_and_a_wrong_auth_key_is_named(site: Site) -> None:
    assert site.deployment.admin is not None
    right_key = site.deployment.admin.server_auth_key()
    code, checks = _server_doctor(site, right_key)
    assert (code, _failed(checks)) == (0, set()), checks["activation"]
    assert "held by this P2P server" in checks["control port 41441/udp"]["detail"]
    code, checks = _server_doctor(site, "not-the-key")
    assert code == 1
    assert _failed(checks) == {"key"}, checks
    assert "authentication key" in checks["key"]["fix"]


def test_the_server_down_is_named(site: Site) -> None:
    data_dir = site.enroll("down")
    server = site.deployment.processes.pop("server")
    server.terminate()
    server.wait(timeout=20)
    code, checks = site.doctor(data_dir)
    assert code == 1
    assert _failed(checks) == {"server reachable"}, checks
    assert "no answer from the P2P server" in checks["server reachable"]["detail"]
    assert "start the P2P server" in checks["server reachable"]["fix"]
    # The running peer says so within seconds (its next check-in goes unanswered), in its
    # status and once in its log, not after a request gives up at 15 s.
    deadline = time.monotonic() + 10
    while (site.deployment.client_status(site.peer) or {}).get("server_silent_seconds", 0) < 3:
        assert time.monotonic() < deadline, "the peer did not notice its silent server"
        time.sleep(0.5)
    log = (site.deployment.work / f"client-{site.peer.name}.log").read_text()
    assert log.count("has not answered for") == 1
