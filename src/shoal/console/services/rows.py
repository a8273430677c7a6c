"""A row by its primary key, or ``NotFound``: the first step of most services."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session

from shoal.console.services.errors import NotFound

_Row = TypeVar("_Row")


def get_row(session: Session, model: type[_Row], key: Any, what: str) -> _Row:
    """The ``model`` row with primary key ``key``; ``NotFound(what)`` (``what`` names it,
    e.g. "device 'abc'") when there is none."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(what)
    return row
