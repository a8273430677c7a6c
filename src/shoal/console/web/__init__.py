"""The console's web UI: one static page and its script, a thin client of the REST API;
and the API documentation (Swagger UI), with every asset served from the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

HERE = Path(__file__).parent
VENDOR = HERE / "vendor"
# The page loads only its own scripts and style; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
VENDORED = {
    "chart.umd.min.js": "text/javascript",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
}
"""The third-party files served under /ui/vendor/ (see vendor/README.md)."""

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


@router.get("/ui/vendor/{name}")
def vendored(name: str) -> FileResponse:
    media_type = VENDORED.get(name)
    if media_type is None:
        raise HTTPException(404, f"no asset {name!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"}
    return FileResponse(VENDOR / name, media_type=media_type, headers=headers)


@router.get("/api/v1/docs")
def api_docs() -> HTMLResponse:
    """Swagger UI over the OpenAPI document, from the package: it works air-gapped."""
    return get_swagger_ui_html(
        openapi_url="/api/v1/openapi.json",
        title="shoal console API",
        swagger_js_url="/ui/vendor/swagger-ui-bundle.js",
        swagger_css_url="/ui/vendor/swagger-ui.css",
        swagger_favicon_url="/ui/favicon.svg",
    )
