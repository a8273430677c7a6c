"""What the P2P servers report of their swarms: peers banned per office, and one office's
downloads with their rendezvous holders (``shoal.console.services.swarm``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages
from shoal.console.services import swarm

router = APIRouter(tags=["reports"])


@router.get("/banned-peers", response_model=schemas.Page[schemas.BannedPeerOut], responses=ERRORS)
def banned_peers(
    state: Console,
    session: Database,
    _admin: Admin,
    pages: Pages,
    office: Annotated[schemas.Name | None, Query(description="only this office")] = None,
) -> schemas.Page[schemas.BannedPeerOut]:
    """Peers banned now (devices reported bad chunks from them), newest first: the
    device by host name, its office, the application and how many devices reported it,
    since and until when."""
    return swarm.banned_peers(session, state.clock(), pages.limit, pages.offset, office)


@router.get("/offices/{office:path}", response_model=schemas.OfficeDetail, responses=ERRORS)
def office_detail(
    office: Annotated[str, Path(min_length=1, max_length=200)],
    state: Console,
    session: Database,
    _admin: Admin,
) -> schemas.OfficeDetail:
    """One office: devices, bytes by source, and per content its devices downloaded the
    bytes from peers and over the WAN against the package size, the devices holding all
    of it and the rendezvous holders bringing it in now; the peers banned in it."""
    return swarm.office_detail(state, session, office)
