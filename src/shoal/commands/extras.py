"""The optional parts of shoal: ``pip install 'shoal[server]'`` and ``'shoal[console]'``.

A device installs ``shoal`` alone (the client); the P2P server and the console bring
their web and SQL stacks as extras. A command of a role whose extra is missing stops
with one line that names the extra, never with an ``ImportError`` traceback.
"""

from __future__ import annotations

from importlib.util import find_spec

from shoal.core.errors import ShoalError

EXTRAS: dict[str, tuple[str, ...]] = {
    # The import names each extra brings (pyproject.toml's optional-dependencies).
    "server": ("httpx", "sqlalchemy", "alembic"),
    "console": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "argon2"),
}


class MissingExtra(ShoalError):
    """A role's optional dependencies are not installed."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [module for module in EXTRAS[extra] if find_spec(module) is None]


def require_extra(extra: str) -> None:
    """Raise ``MissingExtra`` (one line naming the extra) unless ``extra`` is installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f"the {extra} needs the '{extra}' extra: pip install 'shoal[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )
