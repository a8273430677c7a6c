"""The lab's baselines as processes: an HTTP origin and downloaders, a libtorrent swarm.

``shoal lab run`` starts these in the same namespaces as shoal's processes, on the same
file, so the systems are compared on the same network:

    python -m shoal_dev.lab.baseline_peers http-serve --file F --bind IP:PORT
    python -m shoal_dev.lab.baseline_peers http-get --url URL --out FILE
        --trigger T --ready R --result J
    python -m shoal_dev.lab.baseline_peers torrent-seed --torrent T --data-dir D --bind IP:PORT
    python -m shoal_dev.lab.baseline_peers torrent-get --torrent T --out-dir D --bind IP:PORT
        --seeder IP:PORT --trigger T --ready R --result J

A downloader starts, writes its ``--ready`` file, then waits for the ``--trigger`` file:
the lab creates it once every downloader is ready, so that the flash crowd starts
together and process start-up is not in the figures (shoal's clients are likewise
running and registered before the assignment). A restarted downloader finds the
trigger already there and starts at once. When the file is complete and its SHA-256
computed, the downloader writes ``--result`` (JSON: the monotonic clock at completion,
SHA-256, bytes from the server and from peers, its CPU seconds and peak RSS). The
libtorrent downloader then keeps seeding, as a BitTorrent peer does, until SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shoal_dev.bench.measure import peak_rss_bytes

TRIGGER_POLL_SECONDS = 0.01
STATUS_POLL_SECONDS = 0.05
READ_BLOCK = 1 << 20
# Local service discovery announces at add time and then every N seconds (default
# 300); a short interval lets peers that missed the first announce find each other.
LSD_ANNOUNCE_SECONDS = 5


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _wait_for_trigger(ready: Path, trigger: Path) -> float:
    ready.write_text(str(os.getpid()))
    while not trigger.exists():
        time.sleep(TRIGGER_POLL_SECONDS)
    return time.monotonic()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _write_result(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------- HTTP


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def http_serve(file: Path, bind: str) -> None:
    """Serve ``file``'s directory over HTTP/1.0 until SIGTERM (one thread per request)."""
    host, port = _split(bind)
    handler = functools.partial(_QuietHandler, directory=str(file.parent))
    server = ThreadingHTTPServer((host, port), handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever()
    server.server_close()


def http_get(url: str, out: Path, trigger: Path, ready: Path, result: Path) -> int:
    """Download ``url`` to ``out`` (from the start, as a plain downloader does)."""
    _wait_for_trigger(ready, trigger)
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as output:
        while block := response.read(READ_BLOCK):
            output.write(block)
            digest.update(block)
            received += len(block)
    _write_result(
        result,
        {
            "completed_monotonic": time.monotonic(),
            "sha256": digest.hexdigest(),
            "bytes_from_server": received,
            "bytes_from_peers": 0,
            "cpu_seconds": _cpu_seconds(),
            "peak_rss_bytes": peak_rss_bytes(),
        },
    )
    return 0


# -------------------------------------------------------------- libtorrent


def _session(bind: str) -> Any:
    import libtorrent as lt

    return lt.session(
        {
            "listen_interfaces": bind,
            "enable_outgoing_tcp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_utp": True,
            "enable_incoming_utp": True,
            "enable_dht": False,
            "enable_lsd": True,
            "local_service_announce_interval": LSD_ANNOUNCE_SECONDS,
            "enable_upnp": False,
            "enable_natpmp": False,
            "alert_mask": 0,
        }
    )


def _add(session: Any, torrent: Path, directory: Path, seed: bool) -> Any:
    import libtorrent as lt

    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(directory)
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    return session.add_torrent(params)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def torrent_seed(torrent: Path, data_dir: Path, bind: str) -> None:
    """Seed the torrent until SIGTERM."""
    stop = _stop_event()
    session = _session(bind)
    _add(session, torrent, data_dir, seed=True)
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass


def torrent_get(
    torrent: Path, out_dir: Path, bind: str, seeder: str, trigger: Path, ready: Path, result: Path
) -> int:
    """Download from the seeder and the peers LSD finds; then seed until SIGTERM."""
    import libtorrent as lt

    stop = _stop_event()
    session = _session(bind)
    info = lt.torrent_info(str(torrent))
    _wait_for_trigger(ready, trigger)
    handle = _add(session, torrent, out_dir, seed=False)
    seeder_address = _split(seeder)
    handle.connect_peer(seeder_address)
    downloaded_from: dict[tuple[str, int], int] = {}
    while not stop.is_set():
        status = handle.status()
        for peer in handle.get_peer_info():
            endpoint = (str(peer.ip[0]), int(peer.ip[1]))
            downloaded_from[endpoint] = max(
                downloaded_from.get(endpoint, 0), int(peer.total_download)
            )
        if status.is_seeding or status.is_finished:
            break
        if status.num_peers == 0:
            handle.connect_peer(seeder_address)
        stop.wait(STATUS_POLL_SECONDS)
    else:
        return 1
    completed = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        output = out_dir / info.files().file_path(0)
    from_server = sum(n for (ip, _), n in downloaded_from.items() if ip == seeder_address[0])
    from_peers = sum(n for (ip, _), n in downloaded_from.items() if ip != seeder_address[0])
    _write_result(
        result,
        {
            "completed_monotonic": completed,
            "sha256": _sha256_of(output),
            "bytes_from_server": from_server,
            "bytes_from_peers": from_peers,
            "cpu_seconds": _cpu_seconds(),
            "peak_rss_bytes": peak_rss_bytes(),
        },
    )
    while not stop.wait(0.2):
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the baselines' processes."""
    parser = argparse.ArgumentParser(prog="shoal_dev.lab.baseline_peers")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("http-serve")
    serve.add_argument("--file", type=Path, required=True)
    serve.add_argument("--bind", required=True)
    get = commands.add_parser("http-get")
    get.add_argument("--url", required=True)
    get.add_argument("--out", type=Path, required=True)
    seed = commands.add_parser("torrent-seed")
    seed.add_argument("--torrent", type=Path, required=True)
    seed.add_argument("--data-dir", type=Path, required=True)
    seed.add_argument("--bind", required=True)
    fetch = commands.add_parser("torrent-get")
    fetch.add_argument("--torrent", type=Path, required=True)
    fetch.add_argument("--out-dir", type=Path, required=True)
    fetch.add_argument("--bind", required=True)
    fetch.add_argument("--seeder", required=True)
    for downloader in (get, fetch):
        downloader.add_argument("--trigger", type=Path, required=True)
        downloader.add_argument("--ready", type=Path, required=True)
        downloader.add_argument("--result", type=Path, required=True)
    arguments = parser.parse_args(argv)
    if arguments.command == "http-serve":
        http_serve(arguments.file, arguments.bind)
        return 0
    if arguments.command == "http-get":
        return http_get(
            arguments.url, arguments.out, arguments.trigger, arguments.ready, arguments.result
        )
    if arguments.command == "torrent-seed":
        torrent_seed(arguments.torrent, arguments.data_dir, arguments.bind)
        return 0
    return torrent_get(
        arguments.torrent,
        arguments.out_dir,
        arguments.bind,
        arguments.seeder,
        arguments.trigger,
        arguments.ready,
        arguments.result,
    )


if __name__ == "__main__":
    sys.exit(main())
