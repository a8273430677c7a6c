"""The console's status and the dashboard's summary (polled by the web UI)."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS
from shoal.console.services import summary

router = APIRouter(tags=["status"])


@router.get("/status", response_model=schemas.StatusOut, responses=ERRORS)
def console_status(state: Console, session: Database, _admin: Admin) -> schemas.StatusOut:
    """Version, signing key, TLS fingerprint, licence (with any overage) and counts."""
    return summary.status(state, session)


@router.get("/summary", response_model=schemas.Summary, responses=ERRORS)
def dashboard_summary(state: Console, session: Database, _admin: Admin) -> schemas.Summary:
    """Counts, licence, WAN saved, what needs a person, and a token per kind of data
    (``changed``): poll this, and fetch a list again only when its token changed."""
    return summary.summary(state, session)
