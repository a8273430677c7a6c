"""One page of a list: ``limit`` rows from ``offset``, and the total matched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

Row = TypeVar("Row")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def page_of(
    session: Session, query: Select[Row], limit: int, offset: int
) -> tuple[Sequence[Row], int]:
    """The rows of ``query`` from ``offset`` (at most ``limit``) and how many it matches.

    ``query`` must be ordered (a stable order makes offsets meaningful).
    """
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    return rows, int(total or 0)
