"""The libtorrent uTP baseline: one seeding process, one downloading process.

Run by ``shoal bench transfer`` inside the two namespaces (or on loopback), exactly
like the shoal peers, so both move the same file over the same link. Only uTP is
enabled (TCP, DHT, local discovery, UPnP and NAT-PMP are off); the downloader is told
the seeder's address directly. Each process writes a JSON result: CPU seconds over the
transfer and its peak RSS.

    python -m shoal_dev.bench.utp_peer make-torrent FILE TORRENT
    python -m shoal_dev.bench.utp_peer seed --torrent T --data-dir D --bind IP:PORT --result R
    python -m shoal_dev.bench.utp_peer download --torrent T --out-dir D --bind IP:PORT
        --seeder IP:PORT --result R
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from shoal_dev.bench.measure import CpuSample, peak_rss_bytes, snmp_counter

PIECE_SIZE = 1024 * 1024
POLL_SECONDS = 0.02


def _libtorrent() -> Any:
    import libtorrent

    return libtorrent


def make_torrent(data_file: Path, torrent_file: Path) -> None:
    """Write a v1 .torrent for ``data_file`` (1 MiB pieces, like shoal's chunks)."""
    lt = _libtorrent()
    with warnings.catch_warnings():
        # The file_storage constructor is deprecated in 2.1 but is the one that works
        # across 2.0 and 2.1.
        warnings.simplefilter("ignore", DeprecationWarning)
        storage = lt.file_storage()
        lt.add_files(storage, str(data_file))
        creator = lt.create_torrent(storage, PIECE_SIZE, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(data_file.parent))
    torrent_file.write_bytes(lt.bencode(creator.generate()))


def _session(bind: str) -> Any:
    lt = _libtorrent()
    return lt.session(
        {
            "listen_interfaces": bind,
            "enable_outgoing_tcp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_utp": True,
            "enable_incoming_utp": True,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": 0,
        }
    )


def _add(session: Any, torrent: Path, directory: Path, seed: bool) -> Any:
    lt = _libtorrent()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(directory)
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    return session.add_torrent(params)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def seed(torrent: Path, data_dir: Path, bind: str, result: Path) -> None:
    """Seed until SIGTERM, then write the result."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    session = _session(bind)
    handle = _add(session, torrent, data_dir, seed=True)
    start = CpuSample.now()
    print("ready", flush=True)
    while not stop.wait(0.1):
        pass
    end = CpuSample.now()
    status = handle.status()
    document = {
        "role": "utp-seeder",
        "cpu": end.since(start),
        "peak_rss_bytes": peak_rss_bytes(),
        "payload_uploaded": status.total_payload_upload,
        "bytes_uploaded": status.total_upload,
    }
    result.write_text(json.dumps(document))


def download(
    torrent: Path, out_dir: Path, bind: str, seeder: str, result: Path, timeout: float
) -> int:
    """Download from ``seeder`` over uTP, check the file's SHA-256, write the result."""
    lt = _libtorrent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    session = _session(bind)
    info = lt.torrent_info(str(torrent))
    udp_before, tcp_before = snmp_counter("Udp", "InDatagrams"), snmp_counter("Tcp", "InSegs")
    start = CpuSample.now()
    handle = _add(session, torrent, out_dir, seed=False)
    handle.connect_peer(_split(seeder))
    deadline = time.monotonic() + timeout
    finished = False
    while time.monotonic() < deadline and not stop.is_set():
        status = handle.status()
        if status.is_seeding or status.is_finished:
            finished = True
            break
        if status.num_peers == 0:
            handle.connect_peer(_split(seeder))
        stop.wait(POLL_SECONDS)
    end = CpuSample.now()
    status = handle.status()
    document: dict[str, Any] = {
        "role": "utp-downloader",
        "finished": finished,
        "cpu": end.since(start),
        "peak_rss_bytes": peak_rss_bytes(),
        "payload_downloaded": status.total_payload_download,
        "bytes_downloaded": status.total_download,
        # Counted in this network namespace: proof that the bytes came over UDP (uTP).
        "udp_datagrams_in": snmp_counter("Udp", "InDatagrams") - udp_before,
        "tcp_segments_in": snmp_counter("Tcp", "InSegs") - tcp_before,
    }
    session.pause()
    if finished:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            output = out_dir / info.files().file_path(0)
        digest = hashlib.sha256()
        with open(output, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        document["sha256"] = digest.hexdigest()
    result.write_text(json.dumps(document))
    return 0 if finished else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the baseline's child processes."""
    parser = argparse.ArgumentParser(prog="shoal_dev.bench.utp_peer")
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make-torrent")
    maker.add_argument("data_file", type=Path)
    maker.add_argument("torrent_file", type=Path)
    seeder = commands.add_parser("seed")
    seeder.add_argument("--torrent", type=Path, required=True)
    seeder.add_argument("--data-dir", type=Path, required=True)
    seeder.add_argument("--bind", required=True)
    seeder.add_argument("--result", type=Path, required=True)
    downloader = commands.add_parser("download")
    downloader.add_argument("--torrent", type=Path, required=True)
    downloader.add_argument("--out-dir", type=Path, required=True)
    downloader.add_argument("--bind", required=True)
    downloader.add_argument("--seeder", required=True)
    downloader.add_argument("--result", type=Path, required=True)
    downloader.add_argument("--timeout", type=float, default=600.0)
    arguments = parser.parse_args(argv)
    if arguments.command == "make-torrent":
        make_torrent(arguments.data_file, arguments.torrent_file)
        return 0
    if arguments.command == "seed":
        seed(arguments.torrent, arguments.data_dir, arguments.bind, arguments.result)
        return 0
    return download(
        arguments.torrent,
        arguments.out_dir,
        arguments.bind,
        arguments.seeder,
        arguments.result,
        arguments.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
