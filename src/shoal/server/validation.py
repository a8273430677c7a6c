"""Values a client's control request may carry: what the console can store and what
makes sense, refused by field name (``INVALID_REQUEST``) at the server's boundary."""

from __future__ import annotations

import re
import unicodedata

from shoal.wire.control import (
    CheckIn,
    ControlBody,
    InstallReport,
    RefusalCause,
    Refused,
    Register,
)

MAX_HOSTNAME = 64
MAX_VERSION = 40
MAX_COUNTER = 2**62
"""Byte counters above this are refused: the console's integers stop there (row 5)."""
VERSION_PATTERN = re.compile(r"[0-9A-Za-z.+\-]+")


def invalid_request(body: ControlBody) -> Refused | None:
    """Values the console cannot take (or that make no sense), refused by field name."""
    problem: str | None = None
    if isinstance(body, Register):
        if len(body.hostname) > MAX_HOSTNAME:
            problem = f"hostname: longer than {MAX_HOSTNAME} characters"
        elif any(unicodedata.category(char)[0] == "C" for char in body.hostname):
            problem = "hostname: contains a control or unassigned character"
        elif len(body.version) > MAX_VERSION or not VERSION_PATTERN.fullmatch(body.version):
            problem = "version: not a version number"
    elif isinstance(body, InstallReport):
        if body.exit_code is not None and not -(2**31) <= body.exit_code < 2**32:
            problem = "exit_code: out of range (a 32-bit exit code)"
    elif isinstance(body, CheckIn):
        for entry in body.content:
            if entry.chunks_done > entry.chunk_count:
                problem = f"chunks_done: {entry.chunks_done} > chunk_count {entry.chunk_count}"
            elif entry.bytes_from_peers >= MAX_COUNTER:
                problem = "bytes_from_peers: out of range (at most 2^62)"
            elif entry.bytes_from_server >= MAX_COUNTER:
                problem = "bytes_from_server: out of range (at most 2^62)"
            if problem is not None:
                break
    if problem is None:
        return None
    return Refused(RefusalCause.INVALID_REQUEST, f"invalid {type(body).__name__}: {problem}")
