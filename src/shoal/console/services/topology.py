"""The office tree: download it, replace it (validated as a whole), list its offices."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from shoal import topology
from shoal.console import db, records, schemas
from shoal.console.services.errors import Invalid
from shoal.console.state import ConsoleState

log = logging.getLogger("shoal.console")


def load(state: ConsoleState, session: Session) -> topology.Topology:
    return records.load_topology(session, state.topology_cache)


def offices_out(
    session: Session, tree: topology.Topology, offices: list[topology.Office] | None = None
) -> list[schemas.OfficeOut]:
    """``offices`` (default: all) with their device counts, children and WAN totals."""
    chosen = list(tree.offices) if offices is None else offices
    names = [office.name for office in chosen]
    # Every office of the tree (the assign form, the whole list): no list of 500 names
    # for the database to match.
    every = offices is None or len(chosen) == len(tree.offices)

    def of_chosen(office: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
        return [] if every else [office.in_(names)]

    counts: dict[str | None, int] = {
        office: int(count)
        for office, count in session.execute(
            select(db.Device.office, func.count())
            .where(*of_chosen(db.Device.office))
            .group_by(db.Device.office)
        )
    }
    stat = db.DownloadStat
    traffic = {
        office: (int(peers), int(server))
        for office, peers, server in session.execute(
            select(stat.office, func.sum(stat.bytes_from_peers), func.sum(stat.bytes_from_server))
            .where(*of_chosen(stat.office))
            .group_by(stat.office)
        )
    }
    # Each package downloaded in the office counted once, at its size: the WAN bytes
    # of an office that took one copy of each are about this. Summed here from the
    # (office, content) pairs and the sizes: the database joining two grouped subqueries
    # took most of the listing's time (SQLite, 500 offices).
    downloaded = session.execute(
        select(stat.office, stat.content_id).where(*of_chosen(stat.office)).distinct()
    ).all()
    version = db.ApplicationVersion
    sizes: dict[str, int] = {
        content_id: int(size)
        for content_id, size in session.execute(
            select(version.content_id, func.max(version.size)).group_by(version.content_id)
        )
    }
    package_bytes: dict[str, int] = {}
    for office_name, content_id in downloaded:
        if content_id in sizes:
            package_bytes[office_name] = package_bytes.get(office_name, 0) + sizes[content_id]
    children: dict[str, int] = {}
    for office in tree.offices:
        if office.parent is not None:
            children[office.parent] = children.get(office.parent, 0) + 1
    auto = records.auto_generated_offices(session)
    result = []
    for office in chosen:
        peers, server = traffic.get(office.name, (0, 0))
        result.append(
            schemas.OfficeOut(
                office=office.name,
                parent=office.parent,
                type=office.type.value,
                subnets=[str(subnet) for subnet in office.subnets],
                auto_generated=office.name in auto,
                devices=counts.get(office.name, 0),
                children=children.get(office.name, 0),
                bytes_from_peers=peers,
                bytes_from_server=server,
                package_bytes=package_bytes.get(office.name, 0),
            )
        )
    return result


def list_offices(
    state: ConsoleState,
    session: Session,
    limit: int,
    offset: int,
    parent: str | None = None,
    search: str | None = None,
) -> schemas.Page[schemas.OfficeOut]:
    """Offices, parents first; ``parent``: only its children ("" for the root), so the
    tree is read one level at a time; ``search``: part of the name."""
    tree = load(state, session)
    chosen = list(tree.offices)
    if parent is not None:
        chosen = [o for o in chosen if (o.parent or "") == parent]
    if search:
        needle = search.casefold()
        chosen = [o for o in chosen if needle in o.name.casefold()]
    page = chosen[offset : offset + limit]
    return schemas.Page(
        items=offices_out(session, tree, page), total=len(chosen), limit=limit, offset=offset
    )


def parse(body: bytes, content_type: str) -> topology.Topology:
    """Parse and validate a topology file (CSV or JSON); blocking, run in a thread."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("topology file is not UTF-8 text") from None
    if content_type == "text/csv":
        return topology.parse_csv(text)
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise Invalid(f"topology JSON is not valid JSON: {error}") from None
    return topology.parse_json(document)


def replace(state: ConsoleState, tree: topology.Topology) -> schemas.TopologyOut:
    """Save ``tree``, moving every device to its office; blocking, run in a thread."""
    with state.topology_lock, state.sessions() as session:
        records.save_topology(state, session, tree)
        session.commit()
        log.info("topology replaced: %d offices", len(tree.offices))
        return schemas.TopologyOut(offices=offices_out(session, tree))
