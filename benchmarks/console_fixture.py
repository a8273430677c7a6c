"""A large console for benchmarks and demos: 10,000 devices in 500 offices, 200 applications.

Writes the rows straight into the console's database (SQLite in DATA_DIR, or the
PostgreSQL of ``--database-url``), after ``open_console`` has created and migrated it:

- an office tree of 20 regions under the Central Office, each with 24 branches (500
  offices, one /24 each), 20 devices per office, 2 % on an older client version and
  10 % offline;
- 200 applications (one version each, 10 MB to 2 GB; content files are not written,
  so manifests cannot be downloaded), 200 assignments (to regions, to branches, to
  everyone, to single devices) and what devices report holding of them;
- 50 banned peers (one in every tenth office) and 4 rendezvous holders per office;
- a licence of 9,500 seats that expires in 20 days (overage to show); 5 P2P
  servers, download statistics per office and content, and 30 days of hourly samples
  of the running totals (the WAN-saved chart).

    .venv/bin/python benchmarks/console_fixture.py DATA_DIR [--database-url URL]

prints the administrator's password (``SHOAL_ADMIN_PASSWORD`` or ``fixture password``).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from shoal import __version__, topology
from shoal.console import db, records
from shoal.console.services import licence
from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, ConsoleState, open_console
from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence

DEFAULT_PASSWORD = "fixture password"


@dataclass(frozen=True, slots=True)
class Scale:
    devices: int = 10_000
    offices: int = 500
    applications: int = 200
    regions: int = 20
    servers: int = 5
    held_per_device: int = 3


def office_tree(scale: Scale) -> topology.Topology:
    """The Central Office, ``regions`` regions and branches under them (``offices`` in all)."""
    offices = [
        topology.Office(
            "Central Office",
            None,
            topology.OfficeType.DEFAULT,
            (ipaddress.ip_network("10.0.0.0/24"),),
        )
    ]
    for index in range(1, scale.offices):
        subnet = ipaddress.ip_network(f"10.{1 + index // 256}.{index % 256}.0/24")
        if index <= scale.regions:
            name, parent = f"Region {index:02}", "Central Office"
        else:
            region = 1 + (index - scale.regions - 1) % scale.regions
            name, parent = f"Branch {index:03}", f"Region {region:02}"
        kind = topology.OfficeType.WIFI if index % 25 == 0 else topology.OfficeType.DEFAULT
        offices.append(topology.Office(name, parent, kind, (subnet,)))
    return topology.build(offices)


def populate(state: ConsoleState, scale: Scale = Scale(), seed: int = 14) -> None:
    """Fill an empty console with ``scale``'s devices, offices and applications."""
    rng = random.Random(seed)
    now = state.clock()
    tree = office_tree(scale)
    with state.sessions() as session:
        records.save_topology(state, session, tree)
        session.commit()
    offices = list(tree.offices)
    with state.sessions() as session:
        servers = [f"srv-{n}" for n in range(scale.servers)]
        session.execute(
            insert(db.Server),
            [
                {
                    "id": server,
                    "name": f"p2p-{n}",
                    "address": f"10.0.0.{10 + n}",
                    "version": __version__,
                    "registered_at": now - timedelta(days=60),
                    "last_seen": now,
                    "activated_at": now - timedelta(days=60),
                }
                for n, server in enumerate(servers)
            ],
        )
        devices = []
        for n in range(scale.devices):
            office = offices[n % len(offices)]
            network = office.subnets[0]
            address = str(network.network_address + 10 + n // len(offices))
            devices.append(
                {
                    "id": hashlib.sha256(f"device {n}".encode()).hexdigest()[:32],
                    "hostname": f"pc-{n:05}",
                    "address": address,
                    "subnet": str(network),
                    "office": office.name,
                    "version": "0.0.9" if n % 50 == 0 else __version__,
                    "server_id": servers[n % len(servers)],
                    "licensed": True,
                    "first_seen": now - timedelta(days=30),
                    "last_seen": now - timedelta(hours=2) if n % 10 == 0 else now,
                    "public_key": None,
                }
            )
        session.execute(insert(db.Device), devices)
        versions = []
        for n in range(scale.applications):
            session.execute(
                insert(db.Application),
                [
                    {
                        "id": n + 1,
                        "name": f"Application {n:03}",
                        "confidential": False,
                        "created_at": now,
                    }
                ],
            )
            size = rng.randint(10, 2000) << 20
            versions.append(
                {
                    "id": n + 1,
                    "application_id": n + 1,
                    "version": f"{1 + n % 7}.{n % 10}.0",
                    "content_id": hashlib.sha256(f"application {n}".encode()).hexdigest(),
                    "size": size,
                    "sha256": hashlib.sha256(f"bytes {n}".encode()).hexdigest(),
                    "chunk_size": 1 << 20,
                    "chunk_count": size >> 20,
                    "created_at": now - timedelta(days=scale.applications - n),
                }
            )
        session.execute(insert(db.ApplicationVersion), versions)
        assignments = []
        for n, version in enumerate(versions):
            if n % 20 == 0:
                kind, target = "everyone", None
            elif n % 20 == 1:
                kind, target = "device", devices[rng.randrange(len(devices))]["id"]
            elif n % 2 == 0:
                kind, target = "office", f"Region {1 + n % scale.regions:02}"
            else:
                kind, target = "office", offices[scale.regions + 1 + n % (len(offices) - 21)].name
            assignments.append(
                {
                    "id": n + 1,
                    "version_id": version["id"],
                    "target_kind": kind,
                    "target": target,
                    "background": n % 3 == 0,
                    "created_at": version["created_at"],
                }
            )
        session.execute(insert(db.Assignment), assignments)
        held = []
        for n, device in enumerate(devices):
            for k in range(scale.held_per_device):
                version = versions[(n + 37 * k) % len(versions)]
                done = version["size"] if (n + k) % 4 else version["size"] // 2
                held.append(
                    {
                        "device_id": device["id"],
                        "content_id": version["content_id"],
                        "bytes_done": done,
                        "complete": done == version["size"],
                    }
                )
        session.execute(insert(db.DeviceContent), held)
        stats = []
        for n, office in enumerate(offices):
            for k in range(5):
                version = versions[(n + k * 41) % len(versions)]
                from_server = version["size"]
                stats.append(
                    {
                        "server_id": servers[n % len(servers)],
                        "content_id": version["content_id"],
                        "office": office.name,
                        "bytes_from_peers": from_server * rng.randint(5, 19),
                        "bytes_from_server": from_server,
                        "updated_at": now,
                    }
                )
        session.execute(insert(db.DownloadStat), stats)
        # What the servers' swarm reports say: one peer banned in every tenth office,
        # and per office the stripe holders of the content it downloads first.
        session.execute(
            insert(db.BannedPeer),
            [
                {
                    "server_id": servers[n % len(servers)],
                    "office": office.name,
                    "peer_ip": str(office.subnets[0].network_address + 10),
                    "device_id": devices[n]["id"],
                    "content_id": versions[n % len(versions)]["content_id"],
                    "reporters": 2 + n % 5,
                    "banned_at": now - timedelta(hours=n % 24),
                    "until": now + timedelta(hours=24 - n % 24),
                    "reported_at": now,
                }
                for n, office in enumerate(offices)
                if n % 10 == 5
            ],
        )
        session.execute(
            insert(db.RendezvousHolder),
            [
                {
                    "server_id": servers[n % len(servers)],
                    "office": office.name,
                    "content_id": versions[n % len(versions)]["content_id"],
                    "device_id": devices[n + k * len(offices)]["id"],
                    "stripe": k,
                    "reported_at": now,
                }
                for n, office in enumerate(offices)
                for k in range(4)
                if n + k * len(offices) < len(devices)
            ],
        )
        peers_total = sum(int(row["bytes_from_peers"]) for row in stats)
        server_total = sum(int(row["bytes_from_server"]) for row in stats)
        hours = 30 * 24
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
        session.execute(
            insert(db.WanTotal),
            [
                {
                    "recorded_at": start + timedelta(hours=hour),
                    "bytes_from_peers": peers_total * (hour + 1) // hours,
                    "bytes_from_server": server_total * (hour + 1) // hours,
                }
                for hour in range(hours)
            ],
        )
        session.commit()
    # Planner statistics, as a live site has them: PostgreSQL's autovacuum analyses a
    # table about a minute after a bulk change (SQLite keeps none unless asked, and the
    # console does not ask). Without them PostgreSQL planned sequential scans of 10,000
    # devices for two-row lookups (it guessed 728 rows): a page of assignments spent
    # twice as long in SQL, p95 252 ms (issue 14).
    if state.engine.dialect.name == "postgresql":
        with state.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def open_fixture(data_dir: Path, database_url: str | None = None) -> ConsoleState:
    """Open a console in ``data_dir`` (created: vendor key, admin password) and fill it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    vendor = data_dir / "vendor.key.pub"
    vendor_key = SigningKey.generate()
    vendor_key.verify_key.save(vendor)
    os.environ.setdefault(ADMIN_PASSWORD_VARIABLE, DEFAULT_PASSWORD)
    state = open_console(
        ConsoleConfig(
            data_dir=data_dir / "console",
            database_url=database_url,
            vendor_public_key=vendor,
            tls=False,
        ),
        lambda: datetime.now(UTC),
    )
    populate(state)
    # Fewer seats than devices, expiring soon: the dashboard has overage to show.
    key = issue_licence(
        vendor_key, "Fixture", 9_500, date.today() + timedelta(days=20), date.today()
    )
    with state.sessions() as session:
        licence.save_licence(state, session, key)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--database-url", default=None)
    arguments = parser.parse_args()
    state = open_fixture(arguments.data_dir, arguments.database_url)
    state.close()
    print(
        f"console data in {arguments.data_dir / 'console'}; administrator 'admin', password "
        f"{os.environ[ADMIN_PASSWORD_VARIABLE]!r}"
    )


if __name__ == "__main__":
    main()
