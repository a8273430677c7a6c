"""Benchmark: what confidential content costs in CPU, without network or disk.

Prints MB/s (10^6 bytes of plaintext per second) of, over ``--size-mb`` of random data
in memory, with ``--chunk-size`` chunks (the median of ``--repeat`` runs, and the spread):

- AES-256-GCM per chunk alone (``ChunkCipher.encrypt`` / ``decrypt``);
- packing as the console does it, plain (``pack_stream``) and encrypted
  (``pack_sealed_stream``: encryption, chunk hashes, whole-file and plaintext SHA-256);
- a client's decryption path (``write_plaintext``: AES-256-GCM, write, fsync; no
  plaintext SHA-256) from and into /dev/shm, so that no disk is timed;
- a client's installer staging, from and into /dev/shm, in MB/s and in CPU seconds per
  GB (this process's user + system time, which other programs disturb less): a plain
  package copied (``shoal.client.installer.stage``), a confidential one decrypted
  (``shoal.client.plaintext.stage_plaintext``); the difference is what decrypting at
  staging adds to an install;
- sealing and opening one content key (HPKE, X25519), per second.

Figures, not assertions: the machine is shared.

    .venv/bin/python benchmarks/confidential_crypto.py --size-mb 256
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shoal.assignments import SealedContent
from shoal.client.installer import stage
from shoal.client.plaintext import stage_plaintext, write_plaintext
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.core.packing import pack_sealed_stream, pack_stream
from shoal.core.sealing import ChunkCipher, new_content_key, open_content_key, seal_content_key

MB = 1_000_000


class MemoryCache:
    """The ciphertext in a /dev/shm file, read as ``write_plaintext`` reads a cache."""

    def __init__(self, manifest: Manifest, ciphertext: bytes, path: Path) -> None:
        self._manifest = manifest
        self._ciphertext = ciphertext
        self._path = path
        path.write_bytes(ciphertext)

    def manifest(self, content_id: ContentId) -> Manifest:
        return self._manifest

    def data_path(self, content_id: ContentId) -> Path:
        return self._path

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        start = chunk_index * self._manifest.chunk_size
        data = self._ciphertext[start : start + self._manifest.chunk_length(chunk_index)]
        self._manifest.verify_chunk(chunk_index, data)
        return data


def timed(repeat: int, action: Callable[[], object], cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each run of ``action`` (its CPU seconds appended to ``cpu``)."""
    seconds = []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        action()
        seconds.append(time.perf_counter() - started)
        if cpu is not None:
            cpu.append(time.process_time() - cpu_started)
    return seconds


def cpu_line(label: str, size: int, cpu_seconds: list[float]) -> str:
    per_gb = sorted(second / (size / 1e9) for second in cpu_seconds)
    return (
        f"{label:<44}{statistics.median(per_gb):>9.2f} CPU s/GB"
        f" (min {per_gb[0]:.2f}, max {per_gb[-1]:.2f})"
    )


def line(label: str, size: int, seconds: list[float]) -> str:
    rates = sorted(size / MB / second for second in seconds)
    return (
        f"{label:<44}{statistics.median(rates):>9.0f} MB/s"
        f"   (min {rates[0]:.0f}, max {rates[-1]:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    size = options.size_mb * MB
    plaintext = os.urandom(size)
    key = new_content_key()
    cipher = ChunkCipher(key, options.chunk_size, size)
    step = cipher.plaintext_chunk_size
    view = memoryview(plaintext)
    chunks = [cipher.encrypt(i, view[i * step : (i + 1) * step]) for i in range(cipher.chunk_count)]
    print(
        f"{options.size_mb} MB, chunks of {options.chunk_size} bytes "
        f"({step} of plaintext), median of {options.repeat} runs"
    )

    def encrypt_all() -> None:
        for index in range(cipher.chunk_count):
            cipher.encrypt(index, view[index * step : (index + 1) * step])

    def decrypt_all() -> None:
        for index, chunk in enumerate(chunks):
            cipher.decrypt(index, chunk)

    print(line("AES-256-GCM encrypt (per chunk)", size, timed(options.repeat, encrypt_all)))
    print(line("AES-256-GCM decrypt (per chunk)", size, timed(options.repeat, decrypt_all)))

    def pack_plain() -> None:
        pack_stream(io.BytesIO(plaintext), options.chunk_size)

    def pack_sealed() -> None:
        with open(os.devnull, "wb") as sink:
            pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)

    print(line("console: pack (plain)", size, timed(options.repeat, pack_plain)))
    print(line("console: encrypt + pack (confidential)", size, timed(options.repeat, pack_sealed)))

    sink = io.BytesIO()
    package = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    device = DeviceKey.generate()
    content_id = package.manifest.content_id
    sealed = SealedContent(
        size, package.plaintext_sha256, seal_content_key(key, device.public_raw, content_id.digest)
    )
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as directory:
        cache = MemoryCache(package.manifest, sink.getvalue(), Path(directory) / "cache.data")

        def client_path() -> None:
            target = write_plaintext(cache, content_id, sealed, device, Path(directory) / "out")
            target.unlink()

        seconds = timed(options.repeat, client_path)
        print(line("client: open key + decrypt + verify + write", size, seconds))

        plain_source = Path(directory) / "plain.data"
        plain_source.write_bytes(plaintext)
        staged = Path(directory) / "staging" / "package.bin"

        def stage_copy() -> None:
            stage(plain_source, staged)
            staged.unlink()

        def stage_decrypt() -> None:
            stage_plaintext(cache, content_id, sealed, device, staged)
            staged.unlink()

        copy_cpu: list[float] = []
        decrypt_cpu: list[float] = []
        copy_seconds = timed(options.repeat, stage_copy, copy_cpu)
        decrypt_seconds = timed(options.repeat, stage_decrypt, decrypt_cpu)
        print(line("installer stage: copy (plain)", size, copy_seconds))
        print(line("installer stage: decrypt (confidential)", size, decrypt_seconds))
        print(cpu_line("installer stage: copy (plain)", size, copy_cpu))
        print(cpu_line("installer stage: decrypt (confidential)", size, decrypt_cpu))

    count = 200
    started = time.perf_counter()
    sealed_keys = [
        seal_content_key(key, device.public_raw, content_id.digest) for _ in range(count)
    ]
    sealing = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for sealed_key in sealed_keys:
        open_content_key(sealed_key, device, content_id.digest)
    opening = count / (time.perf_counter() - started)
    print(f"{'content key sealed to a device (HPKE)':<44}{sealing:>9.0f} /s")
    print(f"{'content key opened by a device':<44}{opening:>9.0f} /s")


if __name__ == "__main__":
    main()
