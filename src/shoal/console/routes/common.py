"""What every router shares: the documented error answers, path types, paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from shoal.console import schemas
from shoal.console.services.paging import DEFAULT_LIMIT, MAX_LIMIT

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": schemas.Problem} for code in (400, 401, 403, 404, 409, 422)
}
RowIdPath = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=100)]
Search = Annotated[
    str | None, Query(max_length=200, description="part of the name (case-insensitive)")
]


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (at most {MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=schemas.MAX_ID, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit, offset)


Pages = Annotated[Paging, Depends(paging)]


def source_of(request: Request) -> str:
    """The caller's address, as the login throttle counts it."""
    return request.client.host if request.client else "unknown"
