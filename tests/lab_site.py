"""A one-office site in network namespaces for end-to-end tests: console, activated P2P
server and an office whose clients the test starts; torn down, and checked gone, whatever
happens (even when the deployment fails half-way)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal_dev.lab.deployment import Deployment, NamespacePlacement, OfficeSetup
from shoal_dev.lab.netns import list_links, list_namespaces
from shoal_dev.lab.network import EmulatedNetwork, LabOffice


@contextmanager
def one_office_site(
    prefix: str,
    base: str,
    office: LabOffice,
    work: Path,
    *,
    seats: int,
    segment_wan: bool = False,
) -> Iterator[tuple[Deployment, EmulatedNetwork]]:
    """Console and server running, ``office`` (a Default office) in the topology."""
    network = EmulatedNetwork.create(prefix, [office], segment_wan=segment_wan, base=base)
    deployment: Deployment | None = None
    try:
        deployment = Deployment(
            NamespacePlacement(network),
            work / "site",
            [OfficeSetup(office.name, office.subnet, "Default")],
            f"{base}.0.0/24",
            say=lambda _line: None,
        )
        deployment.start_console()
        deployment.configure(seats=seats)
        deployment.start_server()
        deployment.wait_for_server()
        yield deployment, network
    finally:
        if deployment is not None:
            deployment.close()
        else:
            network.close()
        assert list_namespaces(prefix) == [], "a namespace outlived the test"
        assert list_links(prefix) == [], "a link outlived the test"
