"""Issue 12's target: Prometheus scrapes of the console and the P2P server under the
branch-flash lab scenario (CI size: 4 clients, 8 MiB, 50 Mbit/s WAN) match the lab's own
measurement of bytes from peers and from the server within 1%.

The lab's measurement is what each client's status says it received (as
``shoal lab run`` reports); the server's figures come from the clients' check-ins, the
console's from the server's statistics reports. Run as root (network namespaces):

    .venv/bin/python benchmarks/metrics_vs_lab.py [--clients 4] [--size-mb 8]
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shoal_dev.lab.deployment import Deployment, NamespacePlacement, OfficeSetup
from shoal_dev.lab.network import EmulatedNetwork, LabOffice

PREFIX = "opsm-"
BASE = "10.213"
METRICS_PORT = 9465


def _sum(text: str, name: str) -> int:
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=8)
    options = parser.parse_args()
    office = LabOffice(
        "branch",
        1,
        options.clients,
        wan_mbit=50,
        client_up_mbit=1000,
        client_down_mbit=1000,
        base=BASE,
    )
    network = EmulatedNetwork.create(PREFIX, [office], base=BASE)
    with tempfile.TemporaryDirectory(prefix="shoal-metrics-") as work:
        deployment = Deployment(
            NamespacePlacement(network),
            Path(work) / "site",
            [OfficeSetup("branch", office.subnet, "Default")],
            f"{BASE}.0.0/24",
            say=lambda _line: None,
        )
        try:
            deployment.start_console()
            host = network.host("central-0")
            deployment.server_arguments = ["--metrics", f"{host.address}:{METRICS_PORT}"]
            deployment.configure(seats=50)
            deployment.start_server()
            deployment.wait_for_server()
            package = Path(work) / "package.bin"
            package.write_bytes(os.urandom(options.size_mb << 20))
            row = deployment.upload_and_assign(package)
            started = time.monotonic()
            deployment.start_clients(network.office_hosts("branch"))
            statuses = deployment.wait_for_clients(row["content_id"], timeout=300)
            elapsed = time.monotonic() - started
            lab_peers = lab_server = 0
            for status in statuses.values():
                download = next(
                    d for d in status["downloads"] if d["content_id"] == row["content_id"]
                )
                lab_peers += download["bytes_from_peers"]
                lab_server += download["bytes_from_server"]
            # One check-in (3 s in the lab) reaches the server, one report (2 s) the console.
            verify = ssl.create_default_context(cafile=deployment.console_cert)
            deadline = time.monotonic() + 30
            while True:
                server_text = httpx.get(f"http://{host.address}:{METRICS_PORT}/metrics").text
                console_text = httpx.get(deployment.console_url + "/metrics", verify=verify).text
                figures = {
                    "server": (
                        _sum(server_text, "shoal_server_bytes_from_peers"),
                        _sum(server_text, "shoal_server_bytes_from_server"),
                    ),
                    "console": (
                        _sum(console_text, "shoal_console_bytes_from_peers"),
                        _sum(console_text, "shoal_console_bytes_from_servers"),
                    ),
                }
                if all(f == (lab_peers, lab_server) for f in figures.values()) or (
                    time.monotonic() > deadline
                ):
                    break
                time.sleep(1)
        finally:
            deployment.close()
    print(
        f"branch-flash {options.clients} clients x {options.size_mb} MiB in {elapsed:.1f} s; "
        f"lab (clients' status): from peers {lab_peers}, from server {lab_server}"
    )
    worst = 0.0
    for where, (peers, server) in figures.items():
        errors = [
            abs(got - want) / want if want else float(got != 0)
            for got, want in ((peers, lab_peers), (server, lab_server))
        ]
        worst = max(worst, *errors)
        print(
            f"{where:8s} scrape: from peers {peers} ({errors[0]:.2%}), "
            f"from server {server} ({errors[1]:.2%})"
        )
    verdict = "within 1%" if worst <= 0.01 else "NOT within 1%"
    print(f"worst difference {worst:.2%}: {verdict}")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
