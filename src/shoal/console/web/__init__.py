"""The console's web UI: one static page and its script, a thin client of the REST API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

HERE = Path(__file__).parent
# The page loads only its own script and style; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(HERE / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/ui/console.js")
def script() -> FileResponse:
    return FileResponse(HERE / "console.js", media_type="text/javascript", headers=SECURITY_HEADERS)


@router.get("/ui/console.css")
def style() -> FileResponse:
    return FileResponse(HERE / "console.css", media_type="text/css", headers=SECURITY_HEADERS)


@router.get("/ui/favicon.svg")
def icon() -> FileResponse:
    # Without an icon of its own, every browser asks for /favicon.ico and logs a 404.
    return FileResponse(HERE / "favicon.svg", media_type="image/svg+xml", headers=SECURITY_HEADERS)
