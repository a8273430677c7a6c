"""P2P settings: ports, alternative ports and the bandwidth policy per office."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shoal.console import records, schemas
from shoal.console.services.errors import Invalid
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind


def get_p2p(session: Session) -> schemas.P2PSettings:
    return records.load_p2p_settings(session)


def put_p2p(
    state: ConsoleState, session: Session, body: schemas.P2PSettings
) -> schemas.P2PSettings:
    """Check and replace the P2P settings; servers pick them up from the change feed."""
    main = body.ports.to_ports().numbers()
    if len(set(main)) != 4:
        raise Invalid("ports: the four ports must be different")
    if body.alternative_ports is not None:
        alternative = body.alternative_ports.to_ports().numbers()
        if len(set(alternative)) != 4:
            raise Invalid("alternative_ports: the four ports must be different")
        clash = set(alternative) & set(main)
        if clash:
            raise Invalid(f"alternative_ports: {sorted(clash)} already used by the main ports")
    tree = records.load_topology(session, state.topology_cache)
    seen: set[str] = set()
    for index, policy in enumerate(body.bandwidth):
        if tree.get(policy.office) is None:
            raise Invalid(f"bandwidth[{index}].office: no office named {policy.office!r}")
        if policy.office in seen:
            raise Invalid(f"bandwidth[{index}].office: {policy.office!r} has two policies")
        seen.add(policy.office)
    records.store_p2p_settings(session, body)
    state.record_change(session, ChangeKind.SETTINGS_CHANGED)
    session.commit()
    return body
