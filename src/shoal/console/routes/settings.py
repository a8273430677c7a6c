"""P2P settings: ports, alternative ports, bandwidth policy per office."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS
from shoal.console.services import settings

router = APIRouter(tags=["settings"])


@router.get("/settings/p2p", response_model=schemas.P2PSettings, responses=ERRORS)
def get_p2p_settings(session: Database, _admin: Admin) -> schemas.P2PSettings:
    """Ports, alternative ports and bandwidth policy per office."""
    return settings.get_p2p(session)


@router.put("/settings/p2p", response_model=schemas.P2PSettings, responses=ERRORS)
def put_p2p_settings(
    body: schemas.P2PSettings, state: Console, session: Database, _admin: Admin
) -> schemas.P2PSettings:
    """Replace the P2P settings; servers pick them up from the change feed."""
    return settings.put_p2p(state, session, body)
