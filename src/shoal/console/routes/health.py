"""``/api/v1/health``: liveness and readiness, without authentication.

- ``/api/v1/health/live``: the process answers (restart it when this fails);
- ``/api/v1/health/ready``: the database answers and the content directory is writable
  with room (route to it only when this is 200; 503 names the failing check and its fix);
- ``/api/v1/health``: the same as ``ready`` (kept for existing monitors).
"""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shoal import __version__
from shoal.console.auth import Console
from shoal.console.state import ConsoleState
from shoal.health import CheckResult, check_database, check_directory, report

router = APIRouter(prefix="/api/v1/health", tags=["status"])


def readiness_checks(state: ConsoleState) -> list[CheckResult]:
    """What must work for the console to serve: its database and content directory."""
    return [check_database(state.engine), check_directory(state.content.root)]


CHECK_INTERVAL = 1.0
"""Readiness is checked at most once a second: monitors polling fast share the answer
instead of each taking a database connection (and the GIL) from the requests."""

_last: list[tuple[ConsoleState, float, list[CheckResult]]] = []


async def _ready(state: ConsoleState) -> JSONResponse:
    if _last and _last[0][0] is state and time.monotonic() - _last[0][1] < CHECK_INTERVAL:
        checks = _last[0][2]
    else:
        # Off the event loop: a database that hangs must not stop the other requests.
        checks = await anyio.to_thread.run_sync(readiness_checks, state)
        _last[:] = [(state, time.monotonic(), checks)]  # one console per process
    status_code, body = report(checks, __version__)
    return JSONResponse(body, status_code=status_code)


@router.get("", responses={503: {"description": "a check failed"}})
async def health(state: Console) -> JSONResponse:
    """Readiness (as ``/ready``): 200 when the database and content directory work."""
    return await _ready(state)


@router.get("/ready", responses={503: {"description": "a check failed"}})
async def ready(state: Console) -> JSONResponse:
    """Readiness: 200 when the database answers and the content directory is writable."""
    return await _ready(state)


@router.get("/live")
def live() -> dict[str, str]:
    """Liveness: the process answers (no checks)."""
    return {"status": "ok", "version": __version__}
