"""The two processes of ``shoal bench transfer``: a chunk server and a fetcher.

Each runs one ``TransferEngine`` on one ``DatagramEndpoint`` and writes a JSON result
(CPU seconds over the transfer, peak RSS, socket and engine counters).

    python -m shoal_dev.bench.transfer_peer serve --file F --manifest M --bind IP:PORT
        --result R [--loss P --seed S --no-gso --trace T]
    python -m shoal_dev.bench.transfer_peer fetch --manifest M --peer IP:PORT --bind IP:PORT
        --out F --result R [--window N --loss P --seed S --no-gso --timeout T]

The server answers every ``ChunkRequested`` for the manifest's content by reading the
chunk from the file (``os.pread``; nothing else is held in memory) and runs until
SIGTERM. The fetcher keeps ``--window`` chunk requests in flight, writes each verified
chunk at its offset (``os.pwrite``) and, once every chunk is in, checks the SHA-256 of
the whole file against the manifest; the final check is outside the timed part.

After the transfer (its time and CPU end when the last chunk is written), the fetcher
stages the file as a client's installer does, timed apart (``staging``: wall and CPU
seconds): a plain package is copied (``shoal.client.installer.stage``). With
``--confidential F`` (a JSON file: the fetcher's device key, its sealed content key, the
plaintext size and SHA-256) the file moved is a confidential package's ciphertext,
transferred and verified like any other, and staging is its decryption
(``shoal.client.plaintext.stage_plaintext``: open the sealed key, AES-256-GCM, O_DIRECT
writes, fsync, rename), as a client does it since the decryption moved out of the
download.
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
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shoal.assignments import SealedContent
from shoal.client.installer import stage
from shoal.client.plaintext import stage_plaintext
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
from shoal_dev.bench import cc_trace
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
    trace = cc_trace.install() if arguments.trace is not None else None
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
    if trace is not None:
        cc_trace.write(trace, arguments.trace)
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


def stage_received(
    manifest: Manifest, path: Path, confidential: Path | None
) -> tuple[Path, bytes | None]:
    """Stage the fetched file as a client's installer does: copied, or (confidential)
    decrypted. Returns the staged file and the plaintext's expected SHA-256, if any."""
    staged = path.with_name(path.name + ".staged")
    if confidential is None:
        stage(path, staged)
        return staged, None
    settings = json.loads(confidential.read_text())
    sealed = SealedContent(
        int(settings["plaintext_size"]),
        bytes.fromhex(settings["plaintext_sha256"]),
        bytes.fromhex(settings["sealed_key"]),
    )
    device_key = DeviceKey.from_raw(bytes.fromhex(settings["device_key"]))
    stage_plaintext(ReceivedFile(manifest, path), manifest.content_id, sealed, device_key, staged)
    return staged, sealed.plaintext_sha256


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
        self._queue = list(range(manifest.chunk_count - 1, -1, -1))  # popped from the end
        self._attempts: Counter[int] = Counter()
        self._in_flight: dict[int, int] = {}  # request id -> chunk index
        if manifest.chunk_count == 0:
            self.done.set()

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
    fetcher.request_more()
    endpoint.transmit()
    timed_out = False
    try:
        await asyncio.wait_for(fetcher.done.wait(), timeout=arguments.timeout)
    except TimeoutError:
        timed_out = True
        fetcher.failure = fetcher.failure or "timed out"
    end = CpuSample.now()
    complete = fetcher.received == manifest.chunk_count and not fetcher.failure
    staging: dict[str, Any] = {}
    if complete:
        try:
            staged, plaintext_sha256 = stage_received(
                manifest, arguments.out, arguments.confidential
            )
        except (ShoalError, OSError) as error:
            fetcher.failure = f"staging: {error}"
            complete = False
        else:
            staging = {"staging": CpuSample.now().since(end)}
            # A client hashes neither copy (chunk hashes and GCM tags pin them); the
            # benchmark does, outside every timed part, so a wrong result cannot pass.
            expected = plaintext_sha256 or manifest.sha256
            staging["staged_sha256_matches"] = _file_sha256(staged) == expected
            staged.unlink()
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
        **staging,
        **socket_report,
    }
    if complete:
        ciphertext_matches = _file_sha256(arguments.out) == manifest.sha256
        document["sha256_matches"] = ciphertext_matches and bool(
            staging.get("staged_sha256_matches")
        )
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
            command.add_argument(
                "--trace", type=Path, help="write every controller input here (cc_trace)"
            )
        else:
            command.add_argument("--peer", required=True)
            command.add_argument("--out", type=Path, required=True)
            command.add_argument("--window", type=int, default=8)
            command.add_argument(
                "--mode", choices=("foreground", "background"), default="foreground"
            )
            command.add_argument("--timeout", type=float, default=600.0)
            command.add_argument(
                "--confidential", type=Path, help="stage by decrypting (JSON settings)"
            )
    arguments = parser.parse_args(argv)
    role = serve if arguments.command == "serve" else fetch
    if arguments.profile is None:
        return asyncio.run(role(arguments))
    # The event loop thread's CPU time (user and system), not wall time: on a loaded
    # machine wall time charges whatever ran when the process was preempted.
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        return asyncio.run(role(arguments))
    finally:
        profiler.disable()
        profiler.dump_stats(arguments.profile)


if __name__ == "__main__":
    sys.exit(main())
