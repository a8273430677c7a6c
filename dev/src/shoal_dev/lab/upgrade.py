"""The lab's upgrade through the swarm: an office of clients moves to a new client release.

``run_upgrade`` on a started deployment (console and P2P server up, no client yet):

1. builds wheels of this tree at the old and the new version (``shoal_dev.lab.release``)
   and installs the old one as each client's own copy (the Debian package's layout), run
   under ``shoal_dev.lab.supervise`` (systemd's ``Restart=on-failure``);
2. uploads the new wheel as version NEW of the ``shoal`` application and asks the console
   to mark it as the client release while the P2P server is still older: refused (409);
3. upgrades the P2P server (restarted from a copy of the new version), marks the release
   again: accepted, assigned to everyone with the release's signed install action;
4. waits until the console lists every client at the new version and the release
   ``installed`` on each, measuring the office's WAN link (IP bytes into the office)
   and, for the same time before the release, the control traffic alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.client.self_upgrade import installed_version
from shoal_dev.lab.deployment import Deployment, DeploymentError
from shoal_dev.lab.network import EmulatedNetwork, LabHost
from shoal_dev.lab.release import build_release, install_copy

POLL = 0.5
BASELINE_SECONDS = 5.0


@dataclass
class UpgradeResult:
    clients: int
    old: str
    new: str
    release_bytes: int
    refusal: str
    """The console's answer while the P2P server was older."""
    wan_bytes: int
    """IP bytes into the office from the release being marked until the last client
    reported the new version (the release and the control traffic)."""
    baseline_bytes_per_second: float
    """IP bytes per second into the office before the release (control traffic only)."""
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    """Each client's version as the console lists it at the end."""
    on_disk: dict[str, str | None] = field(default_factory=dict)
    """Each client's installed copy's version at the end."""
    restarts: dict[str, int] = field(default_factory=dict)
    """Starts after an exit, per client (the supervisor's log)."""
    install_states: dict[str, str] = field(default_factory=dict)

    @property
    def wan_ratio(self) -> float:
        """WAN bytes per byte of the release, control traffic included."""
        return self.wan_bytes / self.release_bytes

    @property
    def wan_ratio_net(self) -> float:
        """The same, without the control traffic the baseline predicts."""
        control = self.baseline_bytes_per_second * self.seconds
        return (self.wan_bytes - control) / self.release_bytes

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "from": self.old,
            "to": self.new,
            "release_bytes": self.release_bytes,
            "wan_bytes": self.wan_bytes,
            "wan_per_release": round(self.wan_ratio, 3),
            "wan_per_release_without_control": round(self.wan_ratio_net, 3),
            "seconds": round(self.seconds, 1),
            "refusal": self.refusal,
        }


def _wan_ip_bytes(network: EmulatedNetwork, office: str) -> int:
    counters = network.wan_counters(office)
    return counters["rx_bytes"] - 14 * counters["rx_packets"]  # Ethernet header per frame


def _devices(deployment: Deployment) -> dict[str, str]:
    assert deployment.admin is not None
    page = deployment.admin.get("/devices", limit=500)
    return {row["hostname"]: row["version"] for row in page["items"]}


def _wait(what: str, timeout: float, deployment: Deployment, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        deployment.check_alive()
        if time.monotonic() > deadline:
            raise DeploymentError(f"not within {timeout:.0f} s: {what}")
        time.sleep(POLL)


def _mark(deployment: Deployment, version_id: int) -> Any:
    assert deployment.admin is not None
    return deployment.admin._http.put("/client-release", json={"version_id": version_id})


def _upgrade_server(deployment: Deployment, launcher: Path, new: str, timeout: float) -> None:
    process = deployment.processes.pop("server")
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deployment.server_command = (str(launcher),)
    deployment.start_server()
    assert deployment.admin is not None
    admin = deployment.admin
    _wait(
        f"the P2P server reports {new}",
        timeout,
        deployment,
        lambda: all(row["version"] == new for row in admin.get("/servers")["items"]),
    )


def run_upgrade(
    deployment: Deployment,
    network: EmulatedNetwork,
    hosts: Sequence[LabHost],
    work: Path,
    old: str = "0.1.1",
    new: str = "0.2.0",
    timeout: float = 180.0,
    say: Callable[[str], None] = print,
) -> UpgradeResult:
    """See the module docstring; every host in ``hosts`` is in one office."""
    office = hosts[0].office
    wheels = {version: build_release(version, work / "wheels") for version in (old, new)}
    say(f"wheels built: {', '.join(path.name for path in wheels.values())}")
    for host in hosts:
        launcher = install_copy(wheels[old], work / f"opt-{host.name}")
        deployment.client_commands[host.name] = (
            *(sys.executable, "-m", "shoal_dev.lab.supervise", "--"),
            str(launcher),
        )
    deployment.start_clients(hosts)
    names = {host.name for host in hosts}
    _wait(
        f"{len(hosts)} clients at {old} on the console",
        timeout,
        deployment,
        lambda: (
            {n: v for n, v in _devices(deployment).items() if n in names}
            == dict.fromkeys(names, old)
        ),
    )
    say(f"{len(hosts)} clients run {old}")
    assert deployment.admin is not None
    row = deployment.admin.upload(wheels[new], "shoal", new)
    refused = _mark(deployment, row["id"])
    if refused.status_code != 409:
        raise DeploymentError(f"marking {new} with an older server: {refused.status_code}")
    refusal = str(refused.json()["detail"])
    say(f"refused while the server is older: {refusal}")
    _upgrade_server(deployment, install_copy(wheels[new], work / "opt-server"), new, timeout)
    say(f"P2P server upgraded to {new}")
    start = _wan_ip_bytes(network, office)
    time.sleep(BASELINE_SECONDS)
    baseline = (_wan_ip_bytes(network, office) - start) / BASELINE_SECONDS
    before, started = _wan_ip_bytes(network, office), time.monotonic()
    marked = _mark(deployment, row["id"])
    if marked.status_code != 200:
        raise DeploymentError(f"marking {new}: {marked.status_code} {marked.text}")
    admin = deployment.admin

    def upgraded() -> bool:
        versions = _devices(deployment)
        if any(versions.get(name) != new for name in names):
            return False
        rows = admin.installs(application="shoal")
        return len(rows) >= len(names) and all(r["state"] == "installed" for r in rows)

    _wait(f"{len(hosts)} clients at {new}, the release installed", timeout, deployment, upgraded)
    seconds = time.monotonic() - started
    wan = _wan_ip_bytes(network, office) - before
    result = UpgradeResult(
        clients=len(hosts),
        old=old,
        new=new,
        release_bytes=wheels[new].stat().st_size,
        refusal=refusal,
        wan_bytes=wan,
        baseline_bytes_per_second=baseline,
        seconds=seconds,
        versions={n: v for n, v in _devices(deployment).items() if n in names},
        on_disk={h.name: installed_version(work / f"opt-{h.name}" / "lib") for h in hosts},
        restarts={
            host.name: deployment._log(f"client-{host.name}")
            .read_text(errors="replace")
            .count("supervise: exited with 75")
            for host in hosts
        },
        install_states={r["hostname"]: r["state"] for r in admin.installs(application="shoal")},
    )
    say(f"upgraded: {result.summary()}")
    return result
