"""Helpers shared by the command modules: one-line errors, JSON output, options."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from shoal.core.chunking import parse_size, validate_chunk_size
from shoal.core.errors import ShoalError
from shoal.core.files import write_durably

EXIT_USER_ERROR = 2


class InputFileError(ShoalError):
    """A file named on the command line that cannot be used as input."""


def fail(message: str) -> NoReturn:
    """Print ``shoal: error: MESSAGE`` on stderr and exit with the user-error code."""
    click.echo(f"shoal: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def print_json(document: object) -> None:
    """Print one JSON object on one line of stdout."""
    click.echo(json.dumps(document, sort_keys=True))


def parse_chunk_size(
    _context: click.Context | None, _parameter: click.Parameter | None, value: str | int
) -> int:
    """``--chunk-size`` callback: a size such as 1M or 65536, checked to be allowed."""
    size = value if isinstance(value, int) else parse_size(value)
    return validate_chunk_size(size)


def readable_file(path: Path) -> Path:
    """Return ``path`` if it is a regular file we can read, else raise ``InputFileError``."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise InputFileError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{path}: permission denied")
    return path


#: Write a result file durably (the one small-file writer, ``shoal.core.files``).
atomic_write = write_durably
