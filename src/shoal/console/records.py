"""Reading and writing the console's records: the pieces that several routes share."""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shoal import topology
from shoal.console import db, schemas
from shoal.console.state import ConsoleState, TopologyCache
from shoal.core.changes import ChangeKind

log = logging.getLogger("shoal.console")

P2P_SETTINGS_KEY = "p2p"
TOPOLOGY_GENERATION_KEY = "topology_generation"
REFUSALS_REMEMBERED = 10_000
"""Distinct refused report records remembered so that each is logged once."""
Record = TypeVar("Record", bound=BaseModel)


def validate_record(
    model: type[Record], index: int, raw: object, id_field: str
) -> Record | schemas.RecordRefused:
    """One record of a report, validated on its own: the model, or why it is refused.

    A report is applied record by record (issue 13, row 5): one device with a control
    character in its host name must not freeze the last-seen, progress and seats of
    every other device of its server.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        identity = raw.get(id_field) if isinstance(raw, dict) else None
        return schemas.RecordRefused(
            index=index,
            id=identity[:100] if isinstance(identity, str) and _printable(identity) else None,
            problems=[_field_problem(problem) for problem in error.errors()[:10]],
        )


def _printable(text: str) -> bool:
    """Safe to echo in an answer or a log: no control character, encodable as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return re.fullmatch(schemas.NO_CONTROL_CHARACTERS, text) is not None


def _field_problem(problem: Any) -> schemas.FieldProblem:
    location = ".".join(str(part) for part in problem.get("loc", ())) or "record"
    message = str(problem.get("msg", "invalid"))
    context = problem.get("ctx") or {}
    if problem.get("type") == "string_pattern_mismatch" and (
        context.get("pattern") == schemas.NO_CONTROL_CHARACTERS
    ):
        message = "contains a control character (U+0000-U+001F or U+007F)"
    value = problem.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        message += f" (got {value!r:.60})"
    return schemas.FieldProblem(field=location, message=message)


def log_refused(
    state: ConsoleState, server_id: str, what: str, refused: Sequence[schemas.RecordRefused]
) -> None:
    """Warn once per distinct refusal: a server re-sends the same bad record every report."""
    for record in refused:
        key = (server_id, what, record.id, tuple((p.field, p.message) for p in record.problems))
        if key in state.refusals_logged:
            continue
        if len(state.refusals_logged) >= REFUSALS_REMEMBERED:
            state.refusals_logged.clear()
        state.refusals_logged.add(key)
        log.warning(
            "refused a %s record from P2P server %s (index %d, id %r): %s",
            what,
            server_id,
            record.index,
            record.id,
            "; ".join(f"{p.field}: {p.message}" for p in record.problems),
        )


def load_topology(session: Session, cache: TopologyCache | None = None) -> topology.Topology:
    """The saved office tree (the default Central Office when none was saved).

    With ``cache``, the tree is read from the database only when its generation changed.
    """
    generation = _topology_generation(session)
    if cache is not None and cache.tree is not None and cache.generation == generation:
        return cache.tree
    rows = session.scalars(select(db.OfficeRow).order_by(db.OfficeRow.position)).all()
    tree = (
        topology.build(
            topology.Office(
                row.name,
                row.parent,
                topology.OfficeType(row.type),
                tuple(ipaddress.ip_network(subnet) for subnet in row.subnets),
            )
            for row in rows
        )
        if rows
        else topology.default_topology()
    )
    if cache is not None:
        cache.generation, cache.tree = generation, tree
    return tree


def _topology_generation(session: Session) -> str:
    row = session.get(db.Setting, TOPOLOGY_GENERATION_KEY)
    return str(row.value.get("generation", "")) if row is not None else ""


def auto_generated_offices(session: Session) -> set[str]:
    return set(
        session.scalars(select(db.OfficeRow.name).where(db.OfficeRow.auto_generated.is_(True)))
    )


def save_topology(
    state: ConsoleState, session: Session, tree: topology.Topology, auto: Iterable[str] = ()
) -> None:
    """Replace the office tree and move every device to the office its address is in."""
    auto_names = set(auto)
    # A random token, not a counter: two console processes saving at once cannot both
    # write the same generation and leave one of them with a tree the database lacks.
    generation = secrets.token_hex(8)
    state.topology_cache.generation, state.topology_cache.tree = generation, tree
    row = session.get(db.Setting, TOPOLOGY_GENERATION_KEY)
    if row is None:
        session.add(db.Setting(key=TOPOLOGY_GENERATION_KEY, value={"generation": generation}))
    else:
        row.value = {"generation": generation}
    session.execute(delete(db.OfficeRow))
    for position, office in enumerate(tree.offices):
        session.add(
            db.OfficeRow(
                name=office.name,
                parent=office.parent,
                type=office.type.value,
                subnets=[str(subnet) for subnet in office.subnets],
                position=position,
                auto_generated=office.name in auto_names,
            )
        )
    for device in session.scalars(select(db.Device)):
        found = tree.office_for_address(device.address)
        device.office = found.name if found else None
    _prune_bandwidth_policies(session, tree)
    state.record_change(session, ChangeKind.TOPOLOGY_CHANGED)
    # The signed assignment document lists each office target's sub-offices: servers
    # fetch it again, and it is signed anew if what it says changed.
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)


def _prune_bandwidth_policies(session: Session, tree: topology.Topology) -> None:
    settings = load_p2p_settings(session)
    kept = [policy for policy in settings.bandwidth if tree.get(policy.office) is not None]
    if len(kept) != len(settings.bandwidth):
        settings.bandwidth = kept
        store_p2p_settings(session, settings)


def load_p2p_settings(session: Session) -> schemas.P2PSettings:
    row = session.get(db.Setting, P2P_SETTINGS_KEY)
    if row is None:
        return schemas.P2PSettings()
    return schemas.P2PSettings.model_validate(row.value)


def store_p2p_settings(session: Session, settings: schemas.P2PSettings) -> None:
    row = session.get(db.Setting, P2P_SETTINGS_KEY)
    value = settings.model_dump(mode="json")
    if row is None:
        session.add(db.Setting(key=P2P_SETTINGS_KEY, value=value))
    else:
        row.value = value


def version_out(version: db.ApplicationVersion, application: db.Application) -> schemas.VersionOut:
    return schemas.VersionOut(
        id=version.id,
        application_id=application.id,
        application=application.name,
        version=version.version,
        confidential=application.confidential,
        content_id=version.content_id,
        size=version.size,
        sha256=version.sha256,
        chunk_size=version.chunk_size,
        chunks=version.chunk_count,
        created_at=version.created_at,
        encrypted=version.content_key is not None,
        plaintext_size=version.plaintext_size,
        plaintext_sha256=version.plaintext_sha256,
        install=version.install_spec,
    )


def application_out(session: Session, application: db.Application) -> schemas.ApplicationOut:
    versions = session.scalars(
        select(db.ApplicationVersion)
        .where(db.ApplicationVersion.application_id == application.id)
        .order_by(db.ApplicationVersion.id)
    ).all()
    return schemas.ApplicationOut(
        id=application.id,
        name=application.name,
        confidential=application.confidential,
        created_at=application.created_at,
        versions=[version_out(version, application) for version in versions],
    )


def targeted_devices(
    session: Session, tree: topology.Topology, target_kind: str, target: str | None
) -> Sequence[str]:
    """Device IDs an assignment reaches now."""
    query = select(db.Device.id)
    if target_kind == schemas.TargetKind.DEVICE:
        query = query.where(db.Device.id == target)
    elif target_kind == schemas.TargetKind.OFFICE:
        query = query.where(db.Device.office.in_(tree.subtree(target or "")))
    return session.scalars(query).all()
