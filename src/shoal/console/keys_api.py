"""The console's signing key under ``/api/v1/console-key``: show it, rotate it.

Rotation (``POST /api/v1/console-key/rotate``) makes a new Ed25519 key, has the old
one sign the hand-over (``shoal.key_rotation``), signs every manifest and the
assignment document again with the new key, and puts the document (with the whole
chain of statements) on the change feed: each client follows the chain from the key it
pinned at enrollment and from then on accepts only what the new key signs. See
``shoal.console.keys`` and docs/console.md.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from sqlalchemy import func, select

from shoal.console import db, documents, keys, schemas
from shoal.console.auth import Admin, Console
from shoal.console.state import ConsoleState
from shoal.core.signing import VerifyKey

router = APIRouter(prefix="/api/v1/console-key", tags=["console key"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": schemas.Problem} for code in (400, 401, 409, 422)
}


def _key_out(state: ConsoleState, previous: VerifyKey | None = None) -> schemas.ConsoleKeyOut:
    key = state.signing_key.verify_key
    with state.sessions() as session:
        count = session.scalar(select(func.count()).select_from(db.ConsoleKey)) or 1
        document = session.get(db.SignedDocument, documents.ASSIGNMENTS)
        return schemas.ConsoleKeyOut(
            key=key.raw.hex(),
            key_id=key.key_id.hex(),
            rotations=count - 1,
            previous_key=previous.raw.hex() if previous is not None else None,
            previous_key_id=previous.key_id.hex() if previous is not None else None,
            document_sequence=document.sequence if document is not None else None,
            document_expires=document.expires_at if document is not None else None,
        )


@router.get("", response_model=schemas.ConsoleKeyOut, responses=ERRORS)
async def console_key(state: Console, _admin: Admin) -> schemas.ConsoleKeyOut:
    """The current signing key (what enrollment bundles pin) and the assignment
    document's sequence number and expiry."""
    return await anyio.to_thread.run_sync(_key_out, state)


@router.post("/rotate", response_model=schemas.ConsoleKeyOut, responses=ERRORS)
async def rotate_console_key(state: Console, _admin: Admin) -> schemas.ConsoleKeyOut:
    """Replace the signing key; the old key signs the hand-over, clients follow it."""

    def rotate() -> schemas.ConsoleKeyOut:
        old, _new = keys.rotate(state)
        documents.signed_assignments(state, force=True)
        return _key_out(state, old)

    return await anyio.to_thread.run_sync(rotate)
