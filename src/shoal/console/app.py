"""The console web service: the FastAPI application and how ``shoal console`` runs it.

FastAPI (on Starlette, served by uvicorn) is used because the API's pydantic models are
at once the input validation (bad input -> 422 naming the field) and the published
OpenAPI document (``/api/v1/openapi.json``, browsable at ``/api/v1/docs``) that
schemathesis fuzzes. Plain Starlette would need both written by hand.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError

from shoal import __version__
from shoal.console import api, keys_api, link_api, swarm_link, web
from shoal.console.routes import health, installs, metrics
from shoal.console.services.errors import ServiceError
from shoal.console.state import ConsoleConfig, ConsoleState, open_console
from shoal.core.errors import ShoalError
from shoal.topology import TopologyInvalid

log = logging.getLogger("shoal.console")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


HSTS_MAX_AGE = 365 * 24 * 3600


class AnswerHeaders:
    """Adds to every answer ``X-Shoal-Version``, so a P2P server can check the console,
    and ``Strict-Transport-Security``: the console is HTTPS only, so a browser that has
    seen it once never tries plain HTTP (where a LAN attacker could answer) again.
    Browsers ignore HSTS received over plain HTTP, so it is sent with ``--no-tls`` too,
    for the TLS-terminating proxy to pass on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [
            (b"x-shoal-version", __version__.encode()),
            (b"strict-transport-security", f"max-age={HSTS_MAX_AGE}".encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location or 'body'}: {error.get('msg', 'invalid')}"


async def _validation_failed(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_describe(item) for item in error.errors()]
    return JSONResponse(
        {"detail": "; ".join(problems[:10]) or "invalid request", "problems": problems},
        status_code=422,
    )


MAX_PROBLEMS_LISTED = 1000


async def _topology_invalid(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TopologyInvalid)
    # The detail counts them all; the list stops at a thousand (a file of 10,000 bad
    # CIDRs needs no 10,000-line answer to be fixed).
    return JSONResponse(
        {
            "detail": str(error),
            "problems": [
                {"where": problem.where, "field": problem.field, "message": problem.message}
                for problem in error.problems[:MAX_PROBLEMS_LISTED]
            ],
        },
        status_code=422,
    )


async def _service_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return JSONResponse({"detail": str(error)}, status_code=error.status, headers=error.headers)


async def _shoal_error(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=400)


async def _database_refused(_request: Request, error: Exception) -> JSONResponse:
    # Constraints on the models should stop bad values first; this is the safety net.
    log.warning("database refused a value: %s", error)
    return JSONResponse(
        {"detail": "a value was refused by the database (too long or out of range)"},
        status_code=422,
    )


async def _conflict(_request: Request, error: Exception) -> JSONResponse:
    log.info("conflicting write: %s", error)
    return JSONResponse(
        {"detail": "conflicts with an existing record (written concurrently?); retry"},
        status_code=409,
    )


def create_app(state: ConsoleState) -> FastAPI:
    """The console's ASGI application over an opened ``ConsoleState``."""
    app = FastAPI(
        title="shoal console",
        version=__version__,
        description="Applications, devices, assignments, licence, topology, P2P settings, "
        "and the link that P2P servers follow.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by shoal.console.web from packaged assets (no CDN)
        redoc_url=None,
    )
    app.state.console = state
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(api.router)
    app.include_router(keys_api.router)
    app.include_router(link_api.router)
    app.include_router(swarm_link.router)
    app.include_router(installs.router)
    app.include_router(web.router)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(TopologyInvalid, _topology_invalid)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ShoalError, _shoal_error)
    app.add_exception_handler(DataError, _database_refused)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_middleware(AnswerHeaders)
    return app


def freeze_startup_objects() -> None:
    """Keep what exists once the console is up (modules, the application, its routes and
    schemas: ~140,000 objects) out of every later garbage collection.

    A full collection walks every object it tracks: ~100 ms of CPU at that size, so the
    API call that happened to trigger one answered that much later (many times that on a
    loaded machine): the spikes in the p95 of ``benchmarks/console_api.py`` (issue 14).
    What is frozen lives as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


def serve(config: ConsoleConfig, host: str, port: int, log_level: str = "info") -> None:
    """Open the console and serve it until interrupted (HTTPS unless TLS is off)."""
    state = open_console(config)
    scheme = "https" if config.tls else "http"
    if state.generated_admin_password is not None:
        # Printed once, on stdout, at the first start only.
        print(
            f"shoal console: first administrator {config.admin_username!r} created with "
            f"password {state.generated_admin_password} (shown once; change it with "
            "POST /api/v1/auth/password)",
            flush=True,
        )
    if not config.tls:
        log.warning("TLS is off: serve only behind a TLS-terminating proxy")
    log.info(
        "console %s listening on %s://%s:%d (data in %s, signing key %s)",
        __version__,
        scheme,
        host,
        port,
        config.data_dir,
        state.signing_key.verify_key.key_id.hex(),
    )
    app = create_app(state)
    freeze_startup_objects()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=str(state.cert_path) if state.cert_path else None,
            ssl_keyfile=str(state.key_path) if state.key_path else None,
            log_config=None,
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    try:
        server.run()
    finally:
        state.close()
