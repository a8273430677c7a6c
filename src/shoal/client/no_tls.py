"""Import asyncio without ``ssl`` in the client's process: the client speaks UDP only.

asyncio imports ``ssl`` when it is imported, only to offer TLS transports
(``base_events``, ``selector_events``, ``sslproto``: ``try: import ssl`` / ``except
ImportError: ssl = None``). A client never opens one: it talks to its P2P server and its
peers over UDP alone (DESIGN), and its enrollment bundle is a file. ``ssl`` and what it
loads (``_ssl``, ``libssl``, ``base64``...) are ~1.2 MB of an idle client's 40 MB budget
(``benchmarks/idle_client_rss.py``; docs/network.md "Disk, memory and CPU").

``import_asyncio_without_tls`` imports asyncio while ``ssl`` is marked missing, then
lifts the mark: a later ``import ssl`` works as ever; only asyncio's own TLS support is
off in this process, and asking for it fails at once (``RuntimeError: Python ssl module
is not available``), never silently in plain text. ``shoal client run`` calls it before
it imports the agent; every other command, and a process that has imported asyncio or
ssl already (a test runner), keeps asyncio as it is.
"""

from __future__ import annotations

import sys


def import_asyncio_without_tls() -> bool:
    """Import asyncio with its TLS support off; False if asyncio or ssl was already
    imported (then nothing changes)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
    return True
