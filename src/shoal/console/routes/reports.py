"""Reports: bytes by source per content and office; the WAN-saved history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages
from shoal.console.services import reports

router = APIRouter(tags=["reports"])


@router.get(
    "/reports/downloads",
    response_model=schemas.Page[schemas.DownloadReportRow],
    responses=ERRORS,
)
def download_report(
    session: Database,
    _admin: Admin,
    pages: Pages,
    office: Annotated[schemas.Name | None, Query(description="only this office")] = None,
) -> schemas.Page[schemas.DownloadReportRow]:
    """Bytes from peers and from servers, per content and office (all servers summed)."""
    return reports.download_report(session, pages.limit, pages.offset, office)


@router.get("/reports/wan", response_model=schemas.WanHistory, responses=ERRORS)
def wan_history(
    state: Console,
    session: Database,
    _admin: Admin,
    period: Annotated[reports.Period, Query(description="hour, day or 30d")] = reports.Period.DAY,
) -> schemas.WanHistory:
    """Bytes from peers and from servers over time: the last hour by minute, the last
    day by hour, or the last 30 days by day."""
    return reports.wan_history(session, period, state.clock())
