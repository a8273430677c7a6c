"""Content-store commands: ``shoal store list|check|repair|import``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shoal.commands.common import print_json, readable_file
from shoal.core.ids import ContentId
from shoal.core.manifest import decode_manifest_file
from shoal.store.content_store import ContentStore, EntryInfo
from shoal.store.errors import ChunkNotAvailable, StoreError

STORE_DIR = click.argument("store_dir", metavar="STORE_DIR", type=click.Path(path_type=Path))


def _entry_json(info: EntryInfo) -> dict[str, object]:
    return {
        "content_id": info.content_id.hex,
        "size": info.size,
        "chunks": info.chunk_count,
        "verified_chunks": info.verified_chunks,
        "complete": info.complete,
        "pinned": info.pinned,
        "last_used": info.last_used,
    }


def _existing_store(store_dir: Path, *, strict: bool = True) -> ContentStore:
    if not store_dir.is_dir():
        raise StoreError(f"{store_dir}: no such store directory")
    return ContentStore(store_dir, strict=strict)


@click.group()
def store() -> None:
    """Inspect and maintain a local content store (a client's cache or a server's origin)."""


@store.command("list")
@STORE_DIR
def list_entries(store_dir: Path) -> None:
    """Print one JSON object per package held, most recently used first."""
    with _existing_store(store_dir) as content_store:
        for info in content_store.entries():
            print_json(_entry_json(info))


@store.command()
@STORE_DIR
def check(store_dir: Path) -> None:
    """Re-hash every verified chunk; fail naming the first problem found.

    A corrupt sidecar or a verified chunk whose bytes went bad is an error (exit 2);
    ``shoal store repair`` fixes both by keeping only chunks that still verify.
    """
    with _existing_store(store_dir) as content_store:
        checked = 0
        for info in content_store.entries():
            for chunk_index in content_store.verified(info.content_id):
                content_store.read_chunk(info.content_id, chunk_index)
                checked += 1
        print_json(
            {
                "store": str(store_dir),
                "packages": len(content_store.entries()),
                "chunks_checked": checked,
                "ok": True,
            }
        )


@store.command()
@STORE_DIR
def repair(store_dir: Path) -> None:
    """Rebuild unreadable sidecars (and re-check all others) from the bytes on disk."""
    content_store = _existing_store(store_dir, strict=False)
    with content_store:
        targets = [problem.content_id for problem in content_store.problems]
        targets += [info.content_id for info in content_store.entries()]
        for content_id in targets:
            print_json({"repaired": True, **_entry_json(content_store.repair(content_id))})


@store.command("import")
@STORE_DIR
@click.argument("package", type=click.Path(path_type=Path))
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option("--pin", is_flag=True, help="Protect the package from eviction.")
def import_package(store_dir: Path, package: Path, manifest_path: Path, pin: bool) -> None:
    """Add a complete PACKAGE described by MANIFEST, verifying every chunk."""
    manifest_file = readable_file(manifest_path).read_bytes()
    decode_manifest_file(manifest_file)
    with ContentStore(store_dir) as content_store:
        info = content_store.import_file(manifest_file, readable_file(package), pinned=pin)
        print_json(_entry_json(info))


@store.command()
@STORE_DIR
@click.argument("content_id")
@click.argument("chunk_index", type=int)
def cat(store_dir: Path, content_id: str, chunk_index: int) -> None:
    """Write one verified chunk of CONTENT_ID to stdout (for debugging peers)."""
    with _existing_store(store_dir) as content_store:
        try:
            data = content_store.read_chunk(ContentId.from_hex(content_id), chunk_index)
        except IndexError as error:
            raise ChunkNotAvailable(str(error)) from None
        sys.stdout.buffer.write(data)


COMMANDS = (store,)
