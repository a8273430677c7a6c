"""``POST /api/v1/link/swarm``: a P2P server's peers banned per office and rendezvous
holders now (``shoal.console.services.swarm``), beside the link's other reports."""

from __future__ import annotations

import anyio
from fastapi import APIRouter

from shoal.console import records, schemas
from shoal.console.auth import Console, LinkedServer, Server
from shoal.console.link_api import ERRORS, activated_server
from shoal.console.services import swarm
from shoal.console.state import ConsoleState

router = APIRouter(prefix="/api/v1/link", tags=["link"])


@router.post("/swarm", response_model=schemas.SwarmReportOut, responses=ERRORS)
async def report_swarm(
    body: schemas.SwarmReport, server: Server, state: Console
) -> schemas.SwarmReportOut:
    """The bans in force and the rendezvous holders now: replaces what this server
    reported before. Applied record by record, like the client report."""
    return await anyio.to_thread.run_sync(_record, state, server, body)


def _record(
    state: ConsoleState, server: LinkedServer, body: schemas.SwarmReport
) -> schemas.SwarmReportOut:
    with state.sessions() as session:
        row = activated_server(session, server)
        now = state.clock()
        row.last_seen = now
        answer = swarm.record_report(session, server.server_id, body, now)
        session.commit()
    records.log_refused(state, server.server_id, "swarm", answer.refused)
    return answer
