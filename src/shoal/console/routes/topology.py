"""The office tree: download, replace (CSV or JSON), and its offices page by page."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages, Search
from shoal.console.services import topology
from shoal.console.services.errors import TooLarge, UnsupportedMedia

router = APIRouter(tags=["topology"])
MAX_TOPOLOGY_BYTES = 16 << 20
"""Largest topology file accepted: ample for ``topology.MAX_OFFICES`` offices."""
TOPOLOGY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TopologyIn"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.get(
    "/topology",
    responses={
        **ERRORS,
        200: {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TopologyOut"}},
                "text/csv": {"schema": {"type": "string"}},
            }
        },
    },
)
def get_topology(
    state: Console,
    session: Database,
    _admin: Admin,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Download the office tree as JSON (default) or CSV (office,parent,type,subnets)."""
    tree = topology.load(state, session)
    if format == "csv":
        return PlainTextResponse(
            tree.to_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="topology.csv"'},
        )
    document = schemas.TopologyOut(offices=topology.offices_out(session, tree))
    return Response(document.model_dump_json(), media_type="application/json")


@router.put(
    "/topology",
    response_model=schemas.TopologyOut,
    responses={**ERRORS, 413: {"model": schemas.Problem}, 415: {"model": schemas.Problem}},
    openapi_extra=TOPOLOGY_BODY,
)
async def put_topology(request: Request, state: Console, _admin: Admin) -> schemas.TopologyOut:
    """Replace the office tree with a CSV or JSON upload (validated as a whole first).

    Errors name the CSV line (or JSON entry) and the field: bad CIDR, overlapping
    subnets, unknown parent, a cycle, a second root, and the limits (offices, subnets,
    levels, bytes). Parsing runs in a worker thread, never on the event loop.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/csv", "application/json", ""):
        raise UnsupportedMedia(
            f"send the topology as text/csv or application/json, not {content_type!r}"
        )
    body = await _read_capped(request, MAX_TOPOLOGY_BYTES, "a topology file")
    tree = await anyio.to_thread.run_sync(topology.parse, body, content_type)
    return await anyio.to_thread.run_sync(topology.replace, state, tree)


async def _read_capped(request: Request, limit: int, what: str) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(what, limit)
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > limit:
            raise _too_large(what, limit)
    return bytes(received)


def _too_large(what: str, limit: int) -> TooLarge:
    return TooLarge(f"{what} is larger than the limit of {limit} bytes")


@router.get("/offices", response_model=schemas.Page[schemas.OfficeOut], responses=ERRORS)
def list_offices(
    state: Console,
    session: Database,
    _admin: Admin,
    pages: Pages,
    parent: Annotated[
        str | None,
        Query(max_length=200, description='only its children ("" for the Central Office)'),
    ] = None,
    search: Search = None,
) -> schemas.Page[schemas.OfficeOut]:
    """Offices, parents first, with device counts, children and bytes by source."""
    return topology.list_offices(state, session, pages.limit, pages.offset, parent, search)
