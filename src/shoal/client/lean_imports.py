"""The client's process imports asyncio without TLS and hashlib without OpenSSL.

A device runs ``shoal client run`` for as long as it is on, so every module it loads
stays resident; two standard modules load big native libraries the client never needs:

* asyncio imports ``ssl`` when it is imported, only to offer TLS transports
  (``base_events``, ``selector_events``, ``sslproto``: ``try: import ssl`` / ``except
  ImportError: ssl = None``). A client never opens one: it talks to its P2P server and
  its peers over UDP alone (DESIGN), and its enrollment bundle is a file. ``ssl`` and
  what it loads (``_ssl``, ``libssl``, ``base64``...) are ~1.2 MB.
* hashlib and hmac load ``_hashlib``, the binding to the system's OpenSSL (libcrypto),
  ~3.5 MB, while the client has OpenSSL already: the copy inside the cryptography
  library, which hashes every chunk (``shoal.core.digest``). Without ``_hashlib``,
  hashlib falls back to CPython's built-in SHA-256 (for small inputs: control messages,
  keys) and hmac to its pure-Python HMAC over it.

``import_lean`` imports asyncio, hashlib and hmac while ``ssl`` and ``_hashlib`` are
marked missing, then lifts the marks: a later ``import ssl`` works as ever; only
asyncio's own TLS support is off in this process, and asking for it fails at once
(``RuntimeError: ... ssl module ... not available``), never silently in plain text.
``shoal client run`` calls it before it imports the agent (~4.7 MB less of an idle
client's 40 MB budget: ``benchmarks/idle_client_rss.py``, docs/network.md "Disk, memory
and CPU"). Every other command, and a process that has imported any of these already (a
test runner), keeps them as they are.
"""

from __future__ import annotations

import sys

LEFT_OUT = ("ssl", "_hashlib")
"""Native bindings the client's process does without (see the module docstring)."""
IMPORTED_WITHOUT = ("asyncio", "hashlib", "hmac")
"""The modules that would load them, imported here while they are marked missing."""


def import_lean() -> bool:
    """Import ``IMPORTED_WITHOUT`` with ``LEFT_OUT`` marked missing; False (and nothing
    changes) if any of them was imported already."""
    if any(name in sys.modules for name in (*LEFT_OUT, *IMPORTED_WITHOUT)):
        return False
    for name in LEFT_OUT:
        sys.modules[name] = None  # type: ignore[assignment]  # `import` raises ImportError
    try:
        for name in IMPORTED_WITHOUT:
            __import__(name)
    finally:
        for name in LEFT_OUT:
            del sys.modules[name]
    return True
