"""The licence key."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS
from shoal.console.services import licence

router = APIRouter(tags=["licence"])


@router.get("/license", response_model=schemas.LicenceOut, responses=ERRORS)
def get_licence(state: Console, session: Database, _admin: Admin) -> schemas.LicenceOut:
    """The licence: seats, seats used, seats over (overage), expiry, and what it means."""
    return licence.licence_out(state, session)


@router.put("/license", response_model=schemas.LicenceOut, responses=ERRORS)
def save_licence(
    body: schemas.LicenceSave, state: Console, session: Database, _admin: Admin
) -> schemas.LicenceOut:
    """Save a licence key: this activates the console and its P2P servers."""
    return licence.save_licence(state, session, body.key)
