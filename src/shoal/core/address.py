"""The one spelling of a UDP endpoint across shoal: an (IPv4 address text, port) pair,
as the standard library's sockets give and take it."""

from __future__ import annotations

Address = tuple[str, int]
"""``("192.0.2.7", 41442)``: a peer's or a server's UDP address."""
