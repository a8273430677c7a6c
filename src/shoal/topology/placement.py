"""Placing addresses in a topology (``shoal.topology``): the P2P server in the Central
Office, and a client in its office (one auto-generated for a new subnet)."""

from __future__ import annotations

import ipaddress

from shoal.topology import parsing
from shoal.topology.model import (
    Office,
    OfficeType,
    ServerOutsideCentralOffice,
    Topology,
    TopologyInvalid,
    TopologyProblem,
)


def check_server_address(topology: Topology, address: str) -> Office:
    """Return the Central Office if ``address`` is in one of its subnets.

    Otherwise raise ``ServerOutsideCentralOffice`` saying where the address is and which
    subnets would do.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ServerOutsideCentralOffice(f"P2P server address {address!r} is not an IP") from None
    root = topology.root
    if any(ip.version == subnet.version and ip in subnet for subnet in root.subnets):
        return root
    found = topology.office_for_address(ip)
    subnets = ", ".join(str(subnet) for subnet in root.subnets) or "none defined yet"
    where = f"it is in office {found.name!r}" if found else "it is in no office's subnet"
    raise ServerOutsideCentralOffice(
        f"a P2P server must sit in a subnet of the {root.name!r} office; {address} is not "
        f"({where}); {root.name} subnets: {subnets}. Add the server's subnet to "
        f"{root.name!r} in the topology, or move the server."
    )


def with_client_subnet(topology: Topology, address: str, subnet: str) -> tuple[Topology, Office]:
    """Place a client: its office, adding one named after ``subnet`` when none holds it.

    Auto-generated offices hang under the Central Office with type Default. Raises
    ``TopologyInvalid`` when ``subnet`` is malformed, does not hold ``address``, or
    overlaps an existing office's subnet.
    """
    found = topology.office_for_address(address)
    if found is not None:
        return topology, found
    network, why = parsing.parse_subnet(subnet)
    where = f"client {address}"
    if network is None:
        raise TopologyInvalid([TopologyProblem(where, "subnet", why)])
    if ipaddress.ip_address(address) not in network:
        raise TopologyInvalid(
            [TopologyProblem(where, "subnet", f"{address} is not in its subnet {network}")]
        )
    other = topology._by_subnet[network.version].overlapping(network)
    if other is not None:
        raise TopologyInvalid(
            [
                TopologyProblem(
                    where, "subnet", f"{network} overlaps a subnet of office {other.name!r}"
                )
            ]
        )
    if len(topology.offices) >= parsing.MAX_OFFICES:
        raise TopologyInvalid(
            [
                TopologyProblem(
                    where,
                    "subnet",
                    f"no office added for {network}: the topology already holds "
                    f"{len(topology.offices)} offices (at most {parsing.MAX_OFFICES})",
                )
            ]
        )
    name = str(network)
    if topology.get(name) is not None:
        name = f"{network} (auto)"
    if topology.get(name) is not None:
        raise TopologyInvalid([TopologyProblem(where, "subnet", f"office {name!r} exists")])
    office = Office(name, topology.root.name, OfficeType.DEFAULT, (network,), where)
    return topology.with_office(office, network), office
