"""A whole site as real processes in network namespaces: console, P2P server, clients.

Needs root (network namespaces, HTB); skipped otherwise. Every namespace, link and
process is removed at the end of each test, also when it fails.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shoal.store.content_store import ContentStore
from shoal_dev.lab.deployment import Deployment, NamespacePlacement, OfficeSetup
from shoal_dev.lab.netns import lab_available, list_links, list_namespaces
from shoal_dev.lab.network import EmulatedNetwork, LabOffice

PREFIX = os.environ.get("SHOAL_SITE_PREFIX", "shs-")
"""Names of namespaces and links (set it to run beside another run of these tests)."""
BASE = os.environ.get("SHOAL_SITE_BASE", "10.231")
"""The first two octets of the site's addresses (another run beside this one picks
another: the management link's address is in this host's namespace)."""
OfficeWanted = tuple[LabOffice, str, bool]  # spec, office type, in the uploaded topology
Site = Callable[[list[OfficeWanted]], tuple[Deployment, EmulatedNetwork]]
MIB = 1024 * 1024

available, why = lab_available()
pytestmark = [pytest.mark.skipif(not available, reason=why), pytest.mark.slow, pytest.mark.serial]
POLL = 0.1


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(POLL)


def server_log(tmp_path: Path) -> str:
    path = tmp_path / "site" / "server.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_until_the_server_serves(tmp_path: Path, content_id: str) -> None:
    """The server fetched the content from the console (it logs it once ready)."""
    line = f"content {content_id[:12]} ready to serve"
    wait_until(lambda: line in server_log(tmp_path), 30, f"the server logs {line!r}")


def udp_port_bound(pid: int, port: int) -> bool:
    """Does a UDP socket in the network namespace of process ``pid`` hold ``port``?"""
    try:
        table = Path(f"/proc/{pid}/net/udp").read_text()
    except OSError:
        return False
    return any(
        line.split()[1].endswith(f":{port:04X}") for line in table.splitlines()[1:] if line.strip()
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Build a site from office specs; everything is torn down after the test."""
    built: list[Deployment] = []

    def build(offices: list[OfficeWanted]) -> tuple[Deployment, EmulatedNetwork]:
        offices = [(replace(spec, base=BASE), kind, listed) for spec, kind, listed in offices]
        # One packet per datagram on WAN links, as on a wire (see EmulatedNetwork).
        network = EmulatedNetwork.create(
            PREFIX, [spec for spec, _, _ in offices], base=BASE, segment_wan=True
        )
        setups = [
            OfficeSetup(spec.name, spec.subnet, kind)
            for spec, kind, in_topology in offices
            if in_topology
        ]
        deployment = Deployment(
            NamespacePlacement(network),
            tmp_path / "site",
            setups,
            f"{BASE}.0.0/24",
            say=lambda _line: None,
        )
        built.append(deployment)
        deployment.start_console()
        deployment.configure(seats=50)
        deployment.start_server()
        deployment.wait_for_server()
        return deployment, network

    yield build
    for deployment in built:
        deployment.close()
    assert list_namespaces(PREFIX) == [], "a namespace outlived the test"
    assert list_links(PREFIX) == [], "a link outlived the test"


def package(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "SampleApp.msi"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def cached_sha(deployment: Deployment, name: str, content_id: str) -> str:
    path = deployment.cached_file(deployment.clients[name], content_id)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(status: dict[str, Any], content_id: str) -> dict[str, Any]:
    return next(d for d in status["downloads"] if d["content_id"] == content_id)


def test_eight_clients_behind_a_wan_link_pull_the_package_across_it_once(
    site: Callable,
    tmp_path: Path,
) -> None:
    branch = LabOffice("branch", 1, 8, wan_mbit=50)
    deployment, network = site([(branch, "Default", True)])
    path, sha = package(tmp_path, 16 * MIB)
    content_id = deployment.upload_and_assign(path)["content_id"]
    wait_until_the_server_serves(tmp_path, content_id)  # it fetches it from the console
    before = network.wan_counters("branch")
    deployment.start_clients(network.office_hosts("branch"))  # all eight at once
    statuses = deployment.wait_for_clients(content_id, timeout=120)
    after = network.wan_counters("branch")
    frames = after["rx_bytes"] - before["rx_bytes"]
    # IP bytes: the interface counts Ethernet frames, 14 bytes of header per packet more.
    wan_in = frames - 14 * (after["rx_packets"] - before["rx_packets"])
    for name in statuses:
        assert cached_sha(deployment, name, content_id) == sha, f"{name} has a wrong file"
    assert wan_in <= 1.05 * 16 * MIB, (
        f"WAN carried {wan_in / (16 * MIB):.3f}x the package in IP bytes "
        f"({frames / (16 * MIB):.3f}x in Ethernet frames)"
    )
    from_server = sorted(download(s, content_id)["bytes_from_server"] for s in statuses.values())
    # The office's one WAN copy is striped over a few holders (core/stripes.py): together
    # they pull the package from the server exactly once, the others pull nothing from it.
    assert sum(from_server) == 16 * MIB, f"the server sent {sum(from_server) / MIB:.2f} MiB"
    assert from_server.count(0) >= len(from_server) - 6, f"too many holders: {from_server}"
    for status in statuses.values():
        assert status["office"] == "branch"


def test_vpn_and_unknown_networks_use_the_server_and_a_lying_peer_is_banned(
    site: Callable,
    tmp_path: Path,
) -> None:
    branch = LabOffice("branch", 1, 4, wan_mbit=100)
    remote = LabOffice("remote", 2, 1, wan_mbit=100)
    unlisted = LabOffice("unlisted", 3, 1, wan_mbit=100)
    deployment, network = site(
        [(branch, "Default", True), (remote, "VPN", True), (unlisted, "Default", False)]
    )
    path, sha = package(tmp_path, 8 * MIB)
    content_id = deployment.upload_and_assign(path)["content_id"]
    wait_until_the_server_serves(tmp_path, content_id)
    liar, *honest = network.office_hosts("branch")
    deployment.start_clients([liar], liars={liar.name})
    deployment.wait_for_clients(content_id, timeout=60)  # the liar holds it first...
    deployment.clients.clear()
    others = [*honest, *network.office_hosts("remote"), *network.office_hosts("unlisted")]
    deployment.start_clients(others)  # ...and serves every peer bad chunks
    statuses = deployment.wait_for_clients(content_id, timeout=120)
    for name in statuses:
        assert cached_sha(deployment, name, content_id) == sha
    for name in ("remote-0", "unlisted-0"):
        entry = download(statuses[name], content_id)
        assert entry["bytes_from_peers"] == 0, f"{name} used peers"
        assert entry["bytes_from_server"] == 8 * MIB
    assert download(statuses["remote-0"], content_id)["source"] == "direct"

    def reported() -> set[str]:
        # What the server's metrics listener shows (shoal_server_bad_peer_reporters).
        return set(deployment.bad_peer_reporters())

    wait_until(lambda: reported() == {liar.address}, 30, f"only {liar.address} reported")


def test_a_killed_client_resumes_without_fetching_verified_chunks_again(
    site: Callable,
    tmp_path: Path,
) -> None:
    branch = LabOffice("branch", 1, 1, wan_mbit=16)  # 8 MiB takes ~4.5 s
    deployment, network = site([(branch, "Default", True)])
    path, sha = package(tmp_path, 8 * MIB)
    content_id = deployment.upload_and_assign(path)["content_id"]
    wait_until_the_server_serves(tmp_path, content_id)
    (host,) = network.office_hosts("branch")
    deployment.start_clients([host])
    process = deployment.processes[f"client-{host.name}"]
    kept = deployment.client_dir(host) / "assignments.json"  # the accepted document
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not kept.exists():
            time.sleep(0.05)
            continue
        status = deployment.client_status(host)
        # Killed between an eighth and three quarters of the way (whatever the chunk
        # size): some chunks verified, some still to fetch.
        progress = status["downloads"][0] if status and status["downloads"] else None
        if progress and progress["chunks"] <= 8 * progress["chunks_done"] < 6 * progress["chunks"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the download never got a quarter of the way")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    with ContentStore(deployment.client_dir(host) / "cache") as cache:
        held = cache.verified(cache.entries()[0].content_id)
        missing_bytes = sum(
            cache.manifest(cache.entries()[0].content_id).chunk_length(index)
            for index in held.missing()
        )
    del deployment.processes[f"client-{host.name}"]
    deployment.start_clients([host])
    statuses = deployment.wait_for_clients(content_id, timeout=90)
    assert cached_sha(deployment, host.name, content_id) == sha
    entry = download(statuses[host.name], content_id)
    assert entry["bytes_from_server"] == missing_bytes, "verified chunks were fetched again"
    # Its check-in answer named the document it kept: taken from disk, not fetched.
    assert statuses[host.name]["trust"]["documents_kept"] == 1


def test_a_client_restarted_while_the_server_is_down_completes_from_its_peers(
    site: Callable,
    tmp_path: Path,
) -> None:
    """Real processes: a client killed half-way comes back while the P2P server is
    down; it works offline from the registration and the document it kept, and takes
    the rest from its office's peer."""
    branch = LabOffice("branch", 1, 2, wan_mbit=16)  # 8 MiB takes ~4.5 s
    deployment, network = site([(branch, "Default", True)])
    path, sha = package(tmp_path, 8 * MIB)
    content_id = deployment.upload_and_assign(path)["content_id"]
    wait_until_the_server_serves(tmp_path, content_id)
    first, second = network.office_hosts("branch")
    deployment.start_clients([first, second])
    deadline = time.monotonic() + 60
    kept = deployment.client_dir(first) / "registration.json"
    while time.monotonic() < deadline:
        status = deployment.client_status(first)
        progress = status["downloads"][0] if status and status["downloads"] else None
        if kept.exists() and progress and 0 < progress["chunks_done"] < progress["chunks"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the first client never got part of the way")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    process = deployment.processes.pop(f"client-{first.name}")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    wait_until(
        lambda: bool(
            (status := deployment.client_status(second))
            and status["downloads"]
            and status["downloads"][0]["state"] == "complete"
        ),
        60,
        "the second client complete",
    )
    server = deployment.processes.pop("server")
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    deployment.start_clients([first])
    statuses = deployment.wait_for_clients(content_id, timeout=60)
    assert cached_sha(deployment, first.name, content_id) == sha
    status = statuses[first.name]
    assert "working offline" in status["note"], status["note"]
    assert status["trust"]["documents_kept"] == 1


def test_refusals_are_explicit_and_shown_in_client_status(
    site: Callable,
    tmp_path: Path,
) -> None:
    branch = LabOffice("branch", 1, 2, wan_mbit=100)
    deployment, network = site([(branch, "Default", True)])
    too_new, wrong_key = network.office_hosts("branch")
    deployment.start_clients(
        [too_new], extra_arguments={too_new.name: ["--claim-version", "9.0.0"]}
    )
    good_token = deployment.enrollment_token
    deployment.enrollment_token = "00" * 16
    deployment.start_clients([wrong_key])
    deployment.enrollment_token = good_token
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        first, second = (deployment.client_status(h) for h in (too_new, wrong_key))
        if first and first["refusal"] and second and "enrollment" in second["note"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no refusal shown: {first}, {second}")
    assert first["refusal"]["cause"] == "VERSION_UNSUPPORTED"
    assert "upgrade the P2P server" in first["refusal"]["message"]
    assert "authentication failed" in second["note"]
    wait_until(
        lambda: all(
            f"cause={cause}" in server_log(tmp_path)  # one structured line per refusal
            for cause in ("version_unsupported", "authentication_failed")
        ),
        30,
        "the server logs both refusals",
    )


def test_console_ports_and_bandwidth_policy_reach_the_clients(
    site: Site,
    tmp_path: Path,
) -> None:
    branch = LabOffice("branch", 1, 3, wan_mbit=200)
    deployment, network = site([(branch, "Default", True)])
    assert deployment.admin is not None
    deployment.admin.put_settings(
        {
            "ports": {
                "discovery": 41440,
                "control": 41441,
                "foreground_data": 41442,
                "background_data": 41443,
            },
            "alternative_ports": {
                "discovery": 51440,
                "control": 51441,
                "foreground_data": 51442,
                "background_data": 51443,
            },
            "bandwidth": [{"office": "branch", "foreground_kbps": 40_000}],
        }
    )
    path, sha = package(tmp_path, 8 * MIB)
    content_id = deployment.upload_and_assign(path)["content_id"]
    # The server follows the settings (put first, earlier in the console's change feed)
    # by the time it serves the content.
    wait_until_the_server_serves(tmp_path, content_id)
    first, second, blocked = network.office_hosts("branch")
    # `blocked` learnt the alternative ports on an earlier run; now its data port is taken.
    deployment.client_dir(blocked).mkdir(parents=True)
    (deployment.client_dir(blocked) / "network.json").write_text(
        '{"main": [41440, 41442, 41443], "alternative": [51440, 51442, 51443]}'
    )
    squatter = network.spawn(
        blocked,
        [
            "python3",
            "-c",
            "import socket, time; s = socket.socket("
            "socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', "
            "41442)); time.sleep(600)",
        ],
    )
    wait_until(lambda: udp_port_bound(squatter.pid, 41442), 10, "the squatter holds 41442")
    assert squatter.poll() is None
    # The kernel's ephemeral ports on the other two include the console's data ports: a
    # client that bound its control socket (port 0) first could take its own data port.
    for host in (first, second):
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                host.namespace,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_local_port_range=41441 41444",
            ],
            check=True,
        )
    started = time.monotonic()
    deployment.start_clients([first, second, blocked])
    statuses = deployment.wait_for_clients(content_id, timeout=120)
    elapsed = time.monotonic() - started
    for name in statuses:
        assert cached_sha(deployment, name, content_id) == sha
    # 40 Mbit/s = 5 MB/s per client: 8 MiB cannot arrive in less than ~1.7 s.
    assert elapsed >= 1.5
    for host in (first, second):
        assert "foreground 40000 kbit/s" in statuses[host.name]["note"]
        saved = (deployment.client_dir(host) / "network.json").read_text()
        assert "51442" in saved, "the alternative ports were not kept"
    log = (tmp_path / "site" / f"client-{blocked.name}.log").read_text()
    assert "using the console's alternative ports" in log
