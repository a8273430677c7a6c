"""The last accepted assignment document, kept on disk for the next process.

A client learns what it is assigned from the signed document its check-in answer names
(``shoal.client.assignments``), fetched from the P2P server. A restarted client used to
fetch it again, and until the fetch succeeded it neither downloaded nor served anything:
in an estate simulation a device back from a crash asked for the document just as its
server died, and the chunks it held crossed its office's WAN again meanwhile. So the
shell keeps the last accepted document in ``assignments.json`` (written atomically, as
the trust file), and a new agent holds it as ``AssignmentsMachine.kept``: when its first
check-in answer names that document's SHA-256, the kept bytes are checked exactly as a
fetched document is (signature, expiry, not older than the newest accepted, for the
office the registration answer gave) and no fetch is needed. A kept document is used
before the server names it only when the server does not answer the new process's
first ``REGISTER``: the client then works offline from its kept registration too
(``shoal.client.kept_registration``), which gives it its office and its type. A missing
or unreadable file, or a document the server no longer names, means a fetch, as before.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from shoal.core.files import write_private

__all__ = ["KEPT_FILE", "load_kept", "save_kept"]

log = logging.getLogger("shoal.client")

KEPT_FILE = "assignments.json"


def save_kept(path: Path, document: bytes) -> None:
    """Replace the kept document (blocking: the shell runs it in a worker thread)."""
    write_private(path, json.dumps({"document": base64.b64encode(document).decode()}).encode())


def load_kept(path: Path) -> bytes | None:
    """The kept document; None when there is none or it is unreadable."""
    try:
        return base64.b64decode(json.loads(path.read_text())["document"], validate=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s is unreadable (%s): the P2P server's document will be fetched", path, error)
        return None
