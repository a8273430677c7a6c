"""The two processes of ``shoal bench transfer``: a chunk server and a fetcher.

Each runs one ``TransferEngine`` on one ``DatagramEndpoint`` and writes a JSON result
(CPU seconds over the transfer, peak RSS, socket and engine counters).

    python -m shoal_dev.bench.transfer_peer serve --file F --manifest M --bind IP:PORT
        --result R [--loss P --seed S --no-gso]
    python -m shoal_dev.bench.transfer_peer fetch --manifest M --peer IP:PORT --bind IP:PORT
        --out F --result R [--window N --loss P --seed S --no-gso --timeout T]

The server answers every ``ChunkRequested`` for the manifest's content by reading the
chunk from the file (``os.pread``; nothing else is held in memory) and runs until
SIGTERM. The fetcher keeps ``--window`` chunk requests in flight, writes each verified
chunk at its offset (``os.pwrite``) and, once every chunk is in, checks the SHA-256 of
the whole file against the manifest; the final check is outside the timed part.

With ``--confidential F`` (a JSON file: the fetcher's device key, its sealed content key,
the plaintext size and SHA-256) the file moved is a confidential package's ciphertext,
and the fetcher does what a client does with a confidential download, inside the timed
part: it opens the sealed key and, in a worker thread, decrypts each chunk as soon as it
is written into a plaintext file (``shoal.client.plaintext.write_plaintext``:
AES-256-GCM, O_DIRECT writes, fsync, rename); the time ends when both are done. The
result also gives that thread's own CPU seconds (``decrypt_thread_cpu_seconds``, part of
the process's).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shoal.assignments import SealedContent
from shoal.client.plaintext import write_plaintext
from shoal.core.errors import ShoalError
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.net import Address, DatagramEndpoint, UdpConfig
from shoal.protocol.transfer import (
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    TransferConfig,
    TransferEngine,
    TransferTimedOut,
)
from shoal.wire.messages import Mode, RefusalReason
from shoal_dev.bench.measure import CpuSample, counter_change, peak_rss_bytes, udp_drops

MAX_ATTEMPTS_PER_CHUNK = 5


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def engine_config(settings: list[str]) -> TransferConfig:
    """A ``TransferConfig`` with ``NAME=VALUE`` overrides (for tuning experiments)."""
    config = TransferConfig()
    changes: dict[str, Any] = {}
    for setting in settings:
        name, _, text = setting.partition("=")
        current = getattr(config, name.strip(), None)
        if current is None or not text:
            raise SystemExit(f"not a TransferConfig setting: {setting!r}")
        changes[name.strip()] = type(current)(text)
    return dataclasses.replace(config, **changes)


def _udp_config(no_gso: bool) -> UdpConfig:
    return UdpConfig.plain() if no_gso else UdpConfig()


def _socket_report(endpoint: DatagramEndpoint) -> dict[str, Any]:
    receive_buffer, send_buffer = endpoint.udp.buffer_sizes
    return {
        "socket": endpoint.udp.counters.as_dict(),
        "gso": endpoint.udp.gso_enabled,
        "gro": endpoint.udp.gro_enabled,
        "offload_note": endpoint.udp.offload_note,
        "receive_buffer_bytes": receive_buffer,
        "send_buffer_bytes": send_buffer,
        "dropped_by_loss_filter": endpoint.loss.datagrams_dropped,
        "timer": endpoint.timer_counters.as_dict(),
    }


async def serve(arguments: argparse.Namespace) -> int:
    """Serve the manifest's chunks from ``--file`` until SIGTERM."""
    loop = asyncio.get_running_loop()
    manifest = decode_manifest_file(arguments.manifest.read_bytes()).manifest
    descriptor = os.open(arguments.file, os.O_RDONLY)
    engine = TransferEngine(config=engine_config(arguments.engine), now=loop.time())
    seen: Counter[str] = Counter()

    def on_event(event: object) -> None:
        seen[type(event).__name__] += 1
        if not isinstance(event, ChunkRequested):
            return
        now = loop.time()
        if event.content_id != manifest.content_id or not (
            0 <= event.chunk_index < manifest.chunk_count
            and event.chunk_length == manifest.chunk_length(event.chunk_index)
        ):
            engine.refuse_chunk(event.peer, event.request_id, RefusalReason.NOT_FOUND, now)
            return
        offset = event.chunk_index * manifest.chunk_size
        data = os.pread(descriptor, event.chunk_length, offset)
        engine.send_chunk(event.peer, event.request_id, data, now)

    bind = _address(arguments.bind)
    endpoint = DatagramEndpoint.open(
        engine,
        bind[0],
        bind[1],
        on_event,
        config=_udp_config(arguments.no_gso),
        receive_loss=arguments.loss,
        loss_seed=arguments.seed,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    drops_before = udp_drops()
    start = CpuSample.now()
    print("ready", flush=True)
    await stop.wait()
    end = CpuSample.now()
    socket_report = _socket_report(endpoint)
    # Per namespace: meaningful in the lab, shared with other programs on loopback.
    socket_report["kernel_udp_errors"] = counter_change(drops_before, udp_drops())
    endpoint.close()
    os.close(descriptor)
    document = {
        "role": "sender",
        "cpu": end.since(start),
        "peak_rss_bytes": peak_rss_bytes(),
        "events": dict(seen),
        "engine": engine.counters.as_dict(),
        **socket_report,
    }
    arguments.result.write_text(json.dumps(document))
    return 0


class ReceivedFile:
    """The fetched ciphertext, read as ``write_plaintext`` reads a client's cache."""

    def __init__(self, manifest: Manifest, path: Path) -> None:
        self._manifest = manifest
        self._path = path

    def manifest(self, content_id: ContentId) -> Manifest:
        return self._manifest

    def data_path(self, content_id: ContentId) -> Path:
        return self._path

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        length = self._manifest.chunk_length(chunk_index)
        with open(self._path, "rb") as data_file:
            data_file.seek(chunk_index * self._manifest.chunk_size)
            data = data_file.read(length)
        self._manifest.verify_chunk(chunk_index, data)
        return data


def decrypt_received(
    manifest: Manifest, path: Path, confidential: Path, fetcher: Fetch
) -> dict[str, Any]:
    """Decrypt the ciphertext as it is fetched, as a client does; return what it wrote."""
    settings = json.loads(confidential.read_text())
    sealed = SealedContent(
        int(settings["plaintext_size"]),
        bytes.fromhex(settings["plaintext_sha256"]),
        bytes.fromhex(settings["sealed_key"]),
    )
    device_key = DeviceKey.from_raw(bytes.fromhex(settings["device_key"]))
    started = time.thread_time()  # this thread's CPU: the decryption's share of the receiver's
    plaintext = write_plaintext(
        ReceivedFile(manifest, path),
        manifest.content_id,
        sealed,
        device_key,
        path.with_name(path.name + ".plaintext"),
        wait_for_chunk=fetcher.wait_for_chunk,
        stopped=lambda: bool(fetcher.failure),
    )
    return {
        "decrypt_thread_cpu_seconds": time.thread_time() - started,
        "plaintext_bytes": plaintext.stat().st_size,
        "plaintext_path": str(plaintext),
        "expected_plaintext_sha256": sealed.plaintext_sha256.hex(),
    }


class Fetch:
    """Pipelined requests for every chunk of one manifest from one peer."""

    def __init__(
        self,
        engine: TransferEngine,
        manifest: Manifest,
        peer: Address,
        descriptor: int,
        window: int,
        loop: asyncio.AbstractEventLoop,
        mode: Mode = Mode.FOREGROUND,
    ) -> None:
        self.engine = engine
        self.mode = mode
        self.manifest = manifest
        self.peer = peer
        self.descriptor = descriptor
        self.window = window
        self.loop = loop
        self.done = asyncio.Event()
        self.failure = ""
        self.received = 0
        self.bytes_received = 0
        self.retried: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.written: set[int] = set()
        self._chunk_written = threading.Condition()  # wakes the decrypting thread
        self._queue = list(range(manifest.chunk_count - 1, -1, -1))  # popped from the end
        self._attempts: Counter[int] = Counter()
        self._in_flight: dict[int, int] = {}  # request id -> chunk index
        if manifest.chunk_count == 0:
            self.done.set()

    def wait_for_chunk(self, chunk_index: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for chunk ``chunk_index`` to be written; is it?"""
        with self._chunk_written:
            return self._chunk_written.wait_for(lambda: chunk_index in self.written, timeout)

    def request_more(self) -> None:
        """Fill the window with requests for the next chunks."""
        now = self.loop.time()
        manifest = self.manifest
        while len(self._in_flight) < self.window and self._queue:
            chunk_index = self._queue.pop()
            self._attempts[chunk_index] += 1
            request_id = self.engine.request_chunk(
                self.peer,
                manifest.content_id,
                chunk_index,
                manifest.chunk_length(chunk_index),
                manifest.chunk_hashes[chunk_index],
                self.mode,
                now,
            )
            self._in_flight[request_id] = chunk_index

    def on_event(self, event: object) -> None:
        """Handle one engine event: write chunks, retry failures, request more."""
        self.seen[type(event).__name__] += 1
        if isinstance(event, ChunkReceived):
            chunk_index = self._in_flight.pop(event.request_id, None)
            if chunk_index is None:
                return
            offset = chunk_index * self.manifest.chunk_size
            os.pwrite(self.descriptor, event.data, offset)
            with self._chunk_written:
                self.written.add(chunk_index)
                self._chunk_written.notify_all()
            self.received += 1
            self.bytes_received += len(event.data)
            if self.received == self.manifest.chunk_count:
                self.done.set()
                return
        elif isinstance(event, ChunkCorrupted | ChunkRefused | TransferTimedOut):
            chunk_index = self._in_flight.pop(event.request_id, None)
            if chunk_index is None:
                return
            self.retried[type(event).__name__] += 1
            if self._attempts[chunk_index] >= MAX_ATTEMPTS_PER_CHUNK:
                self.failure = (
                    f"chunk {chunk_index}: {type(event).__name__} {MAX_ATTEMPTS_PER_CHUNK} times"
                )
                self.done.set()
                return
            self._queue.append(chunk_index)
        else:
            return
        self.request_more()


async def fetch(arguments: argparse.Namespace) -> int:
    """Fetch every chunk of the manifest from ``--peer`` into ``--out``."""
    loop = asyncio.get_running_loop()
    manifest = decode_manifest_file(arguments.manifest.read_bytes()).manifest
    descriptor = os.open(arguments.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(descriptor, manifest.size)
    engine = TransferEngine(config=engine_config(arguments.engine), now=loop.time())
    fetcher = Fetch(
        engine, manifest, _address(arguments.peer), descriptor, arguments.window, loop,
        Mode[arguments.mode.upper()],
    )  # fmt: skip
    bind = _address(arguments.bind)
    endpoint = DatagramEndpoint.open(
        engine,
        bind[0],
        bind[1],
        fetcher.on_event,
        config=_udp_config(arguments.no_gso),
        receive_loss=arguments.loss,
        loss_seed=arguments.seed,
    )

    def interrupted() -> None:
        fetcher.failure = "interrupted"
        fetcher.done.set()

    loop.add_signal_handler(signal.SIGTERM, interrupted)
    loop.add_signal_handler(signal.SIGINT, interrupted)
    drops_before = udp_drops()
    start = CpuSample.now()
    decrypting = None
    if arguments.confidential is not None:
        decrypting = loop.run_in_executor(
            None, decrypt_received, manifest, arguments.out, arguments.confidential, fetcher
        )
    fetcher.request_more()
    endpoint.transmit()
    timed_out = False
    try:
        await asyncio.wait_for(fetcher.done.wait(), timeout=arguments.timeout)
    except TimeoutError:
        timed_out = True
        fetcher.failure = fetcher.failure or "timed out"
    transferred = CpuSample.now()
    decrypted: dict[str, Any] = {}
    if decrypting is not None:
        try:
            decrypted = await decrypting
        except ShoalError as error:
            fetcher.failure = fetcher.failure or f"decryption: {error}"
        decrypted["decrypt_after_transfer_seconds"] = CpuSample.now().since(transferred)[
            "wall_seconds"
        ]
    complete = fetcher.received == manifest.chunk_count and not fetcher.failure
    end = CpuSample.now()
    if "plaintext_path" in decrypted:  # checked and removed outside the timed part
        plaintext = Path(decrypted.pop("plaintext_path"))
        # A client does not hash the plaintext (the chunk hashes and GCM tags pin it);
        # the benchmark does, as an audit would, so a wrong result cannot pass.
        decrypted["plaintext_sha256_matches"] = _file_sha256(plaintext).hex() == decrypted.pop(
            "expected_plaintext_sha256"
        )
        plaintext.unlink()
        plaintext.parent.rmdir()
    socket_report = _socket_report(endpoint)
    # Per namespace: meaningful in the lab, shared with other programs on loopback.
    socket_report["kernel_udp_errors"] = counter_change(drops_before, udp_drops())
    endpoint.close()
    os.close(descriptor)
    document: dict[str, Any] = {
        "role": "receiver",
        "complete": complete,
        "timed_out": timed_out,
        "failure": fetcher.failure,
        "chunks": manifest.chunk_count,
        "chunks_received": fetcher.received,
        "payload_bytes": fetcher.bytes_received,
        "retried": dict(fetcher.retried),
        "events": dict(fetcher.seen),
        "cpu": end.since(start),
        "peak_rss_bytes": peak_rss_bytes(),
        "engine": engine.counters.as_dict(),
        **decrypted,
        **socket_report,
    }
    if complete:
        ciphertext_matches = _file_sha256(arguments.out) == manifest.sha256
        plaintext_matches = bool(decrypted.get("plaintext_sha256_matches", True))
        document["sha256_matches"] = ciphertext_matches and plaintext_matches
    arguments.result.write_text(json.dumps(document))
    return 0 if complete and document.get("sha256_matches") else 1


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as stream:
        block = bytearray(1 << 20)
        view = memoryview(block)
        while got := stream.readinto(block):
            digest.update(view[:got])
    return digest.digest()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the benchmark's child processes."""
    parser = argparse.ArgumentParser(prog="shoal_dev.bench.transfer_peer")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "fetch"):
        command = commands.add_parser(name)
        command.add_argument("--manifest", type=Path, required=True)
        command.add_argument("--bind", required=True)
        command.add_argument("--result", type=Path, required=True)
        command.add_argument("--loss", type=float, default=0.0)
        command.add_argument("--seed", type=int, default=1)
        command.add_argument("--no-gso", action="store_true")
        command.add_argument("--profile", type=Path, help="write cProfile stats here")
        command.add_argument("--engine", action="append", default=[], metavar="NAME=VALUE")
        if name == "serve":
            command.add_argument("--file", type=Path, required=True)
        else:
            command.add_argument("--peer", required=True)
            command.add_argument("--out", type=Path, required=True)
            command.add_argument("--window", type=int, default=8)
            command.add_argument(
                "--mode", choices=("foreground", "background"), default="foreground"
            )
            command.add_argument("--timeout", type=float, default=600.0)
            command.add_argument(
                "--confidential", type=Path, help="decrypt as a client does (JSON settings)"
            )
    arguments = parser.parse_args(argv)
    role = serve if arguments.command == "serve" else fetch
    if arguments.profile is None:
        return asyncio.run(role(arguments))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return asyncio.run(role(arguments))
    finally:
        profiler.disable()
        profiler.dump_stats(arguments.profile)


if __name__ == "__main__":
    sys.exit(main())
