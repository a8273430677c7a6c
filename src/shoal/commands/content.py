"""Content commands: ``shoal keygen``, ``shoal pack``, ``shoal verify``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from shoal.commands.common import (
    atomic_write,
    parse_chunk_size,
    print_json,
    readable_file,
)
from shoal.core.chunking import DEFAULT_CHUNK_SIZE
from shoal.core.errors import ContentHashMismatch
from shoal.core.manifest import Manifest, ManifestFile, decode_manifest_file
from shoal.core.packing import pack_stream
from shoal.core.signing import SigningKey, VerifyKey, verify_manifest_file


def pack_file(
    path: Path, chunk_size: int, on_progress: Callable[[int], None] | None = None
) -> Manifest:
    """Stream ``path`` once and return its manifest."""
    with open(readable_file(path), "rb", buffering=0) as package:
        return pack_stream(package, chunk_size, on_progress)


def _pack_with_progress(path: Path, chunk_size: int) -> Manifest:
    """Pack, drawing a progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return pack_file(path, chunk_size)
    total = path.stat().st_size
    with click.progressbar(length=total, label=f"packing {path.name}", file=sys.stderr) as bar:
        done = 0

        def advance(position: int) -> None:
            nonlocal done
            bar.update(position - done)
            done = position

        return pack_file(path, chunk_size, advance)


@click.command()
@click.argument("keyfile", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(keyfile: Path, force: bool) -> None:
    """Create an Ed25519 signing key in KEYFILE (and its public key in KEYFILE.pub)."""
    if keyfile.exists() and not force:
        raise click.UsageError(f"{keyfile} exists; pass --force to overwrite it")
    key = SigningKey.generate()
    key.save(keyfile)
    public_path = keyfile.with_name(keyfile.name + ".pub")
    key.verify_key.save(public_path)
    print_json(
        {"key": str(keyfile), "public_key": str(public_path), "key_id": key.verify_key.key_id.hex()}
    )


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--chunk-size",
    default=str(DEFAULT_CHUNK_SIZE),
    show_default="1M",
    callback=parse_chunk_size,
    help="Chunk size: a power of two from 64K to 16M (65536, 64K, 1M, 16MiB...).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory to write CONTENT_ID.manifest into (created if missing).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path),
    help="Ed25519 private key (PEM) to sign the manifest with; unsigned without it.",
)
def pack(file: Path, chunk_size: int, out_dir: Path, key_file: Path | None) -> None:
    """Cut FILE into verified chunks and write its manifest.

    Streams FILE once (never loads it whole), writes CONTENT_ID.manifest into --out and
    prints one JSON object: content_id, size, sha256, chunk_size, chunks, manifest,
    signed, key_id.
    """
    signing_key = SigningKey.load(key_file) if key_file is not None else None
    manifest = _pack_with_progress(file, chunk_size)
    manifest_file = (
        signing_key.sign(manifest) if signing_key is not None else ManifestFile(manifest, None)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / f"{manifest.content_id.hex}.manifest"
    atomic_write(manifest_path, manifest_file.encode())
    trailer = manifest_file.trailer
    print_json(
        {
            **manifest.summary(),
            "manifest": str(manifest_path),
            "signed": trailer is not None,
            "key_id": trailer.key_id.hex() if trailer is not None else None,
        }
    )


@click.command()
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Trusted public (or private) key; repeat for several. Requires a valid signature.",
)
@click.option(
    "--file",
    "package",
    type=click.Path(path_type=Path),
    help="Also check that this file is exactly the content the manifest describes.",
)
def verify(manifest_path: Path, key_files: tuple[Path, ...], package: Path | None) -> None:
    """Check a manifest (and optionally a file against it).

    With --key, an unsigned, tampered or foreign-signed manifest is refused. Prints the
    manifest's fields as JSON when everything checks.
    """
    data = readable_file(manifest_path).read_bytes()
    if key_files:
        manifest = verify_manifest_file(data, [VerifyKey.load(path) for path in key_files])
    else:
        manifest = decode_manifest_file(data).manifest
    if package is not None:
        actual = pack_file(package, manifest.chunk_size)
        if actual.content_id != manifest.content_id:
            raise ContentHashMismatch(
                f"{package} does not match manifest {manifest.content_id.short} "
                f"(file SHA-256 {actual.sha256.hex()[:12]}, "
                f"expected {manifest.sha256.hex()[:12]})"
            )
    print_json({**manifest.summary(), "signature_checked": bool(key_files)})


COMMANDS = (keygen, pack, verify)
