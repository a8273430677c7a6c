"""``shoal bench transfer``: shoal's chunk transfer against libtorrent's uTP.

Theory of operation
-------------------
The parent process writes a random file of N MB and its manifest
(``shoal.core.packing``), then places two hosts:

* as root, two network namespaces joined by a veth pair (``shoal_dev.lab.netns``, names
  starting with ``shn-``), so the datagrams cross a real (virtual) link;
* otherwise both ends on loopback (127.0.0.1).

``--rate-mbit R`` shapes both veth ends with tc HTB, to see a real link's rate.

It then runs, one after the other on the same two hosts and the same file:

1. shoal: a ``serve`` process on one host and a ``fetch`` process on the other
   (``shoal_dev.bench.transfer_peer``). The fetcher keeps several chunk requests in flight,
   writes each verified chunk, and at the end checks the whole file's SHA-256.
   After the transfer the fetcher stages the file as a client's installer does (timed
   apart): a copy. With ``--confidential`` the parent encrypts the file as the console
   does (``pack_sealed_stream``) and seals its key to a device key of the fetcher's; the
   ciphertext moves and is verified like any package, and staging decrypts it, as a
   client does since its decryption moved from the download to the install's staging.
   ``payload MB/s`` is plaintext bytes per second until the last (ciphertext) chunk is
   verified and written; ``staged MB/s`` until the staged file (the plaintext, for a
   confidential package) is in place, transfer and staging one after the other.
2. libtorrent over uTP (``shoal_dev.bench.utp_peer``), when the ``libtorrent`` module is
   installed (``pip install -e ./dev (shoal-dev)``); otherwise it says so and skips it.

Each child measures its own CPU time over the transfer and its peak RSS (``VmHWM``).
``--loss P`` drops that fraction of the datagrams each shoal process receives, from a
seeded generator in the shell's receive path (this lab has no ``tc netem``); it applies
to shoal only, since libtorrent's sockets cannot be filtered the same way.

Every namespace, link and process is removed when the run ends, also on an error,
Ctrl-C or SIGTERM; temporary files are deleted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.core.chunking import DEFAULT_CHUNK_SIZE
from shoal.core.errors import ShoalError
from shoal.core.identity import DeviceKey
from shoal.core.manifest import Manifest
from shoal.core.packing import pack_sealed_stream, pack_stream
from shoal.core.sealing import ChunkCipher, new_content_key, seal_content_key
from shoal_dev.lab.netns import (
    TwoHostLab,
    cleanup_orphans,
    lab_available,
    shape_htb,
    stop_processes,
)

MB = 1_000_000
GB = 1_000_000_000
NAMESPACE_PREFIX = "shn-"
LAB_TAG = "x"
SHOAL_PORT = 47000
UTP_PORT = 47001
READY_TIMEOUT_SECONDS = 30.0
WRITE_BLOCK = 1 << 20

Report = Callable[[str], None]


class BenchmarkFailed(ShoalError):
    """A benchmark process failed or the copy it made is not the original."""


@dataclass(frozen=True, slots=True)
class TransferBenchOptions:
    """What ``shoal bench transfer`` runs."""

    size_mb: int
    loss: float = 0.0
    gso: bool = True
    window: int = 8
    baseline: bool = True
    namespaces: bool = True
    timeout_seconds: float = 600.0
    seed: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workdir: Path | None = None
    profile_dir: Path | None = None
    engine_settings: tuple[str, ...] = ()
    rate_mbit: float | None = None
    repeat: int = 1
    confidential: bool = False


@dataclass
class Placement:
    """Where the two processes run: two namespaces, or both on loopback."""

    sender_ip: str
    receiver_ip: str
    description: str
    lab: TwoHostLab | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, on_sender: bool, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` on the sender's or the receiver's host."""
        if self.lab is not None:
            host = self.lab.left if on_sender else self.lab.right
            return self.lab.spawn(host, argv, stdout=subprocess.PIPE)
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop every process, then remove the namespaces."""
        stop_processes(self.processes)
        if self.lab is not None:
            self.lab.close()


@contextlib.contextmanager
def placed(use_namespaces: bool, rate_mbit: float | None = None) -> Iterator[Placement]:
    """Two namespaces on a veth pair when possible, else loopback; torn down on exit.

    ``rate_mbit`` shapes both ends of the veth pair with HTB (namespaces only).
    """
    available, why = lab_available()
    if use_namespaces and available:
        cleanup_orphans(NAMESPACE_PREFIX + LAB_TAG)
        lab = TwoHostLab.create(NAMESPACE_PREFIX, LAB_TAG)
        description = f"veth between namespaces {lab.left.namespace} and {lab.right.namespace}"
        try:
            if rate_mbit is not None:
                for host in (lab.left, lab.right):
                    shape_htb(host.device, rate_mbit, host.namespace)
                description += f", HTB {rate_mbit:g} Mbit/s each way"
        except BaseException:
            lab.close()
            raise
        placement = Placement(lab.left.address, lab.right.address, description, lab)
    else:
        if rate_mbit is not None:
            raise BenchmarkFailed("--rate-mbit needs the namespaces (root, not --loopback)")
        reason = why if use_namespaces else "--loopback asked for"
        placement = Placement("127.0.0.1", "127.0.0.1", f"loopback ({reason})")
    try:
        yield placement
    finally:
        placement.close()


def write_random_file(path: Path, size: int, seed: int) -> None:
    """Write ``size`` pseudo-random bytes (incompressible, reproducible) to ``path``."""
    generator = random.Random(seed)
    with open(path, "wb", buffering=0) as output:
        remaining = size
        while remaining:
            block = generator.randbytes(min(WRITE_BLOCK, remaining))
            output.write(block)
            remaining -= len(block)


def _python(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def _wait_ready(process: subprocess.Popen[bytes], what: str) -> str:
    """Wait for the ``ready`` line of ``process``; return the rest of the line."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable:
            line = process.stdout.readline().decode().strip()
            if line.startswith("ready"):
                return line[len("ready") :].strip()
            if not line and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    raise BenchmarkFailed(f"the {what} process did not start (exit status {process.poll()})")


def _wait(process: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkFailed(f"the {what} process did not finish in {timeout:.0f} s") from None


def _read_result(path: Path, what: str) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BenchmarkFailed(f"the {what} process wrote no result ({error})") from None
    return document


def run_shoal(
    placement: Placement, options: TransferBenchOptions, source: Path, manifest_file: Path,
    workdir: Path, confidential: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Move ``source`` with shoal; return both processes' results."""
    sender_result = workdir / "shoal-sender.json"
    receiver_result = workdir / "shoal-receiver.json"
    output = workdir / "shoal-copy.bin"
    common = ["--manifest", str(manifest_file), "--loss", str(options.loss)]
    if not options.gso:
        common.append("--no-gso")
    for setting in options.engine_settings:
        common += ["--engine", setting]

    def profile(role: str) -> list[str]:
        if options.profile_dir is None:
            return []
        options.profile_dir.mkdir(parents=True, exist_ok=True)
        return ["--profile", str(options.profile_dir.resolve() / f"shoal-{role}.prof")]

    sender = placement.spawn(
        True,
        _python(
            "shoal_dev.bench.transfer_peer", "serve", *common, "--seed", str(options.seed),
            "--file", str(source), "--bind", f"{placement.sender_ip}:{SHOAL_PORT}",
            "--result", str(sender_result), *profile("sender"),
        ),
    )  # fmt: skip
    _wait_ready(sender, "shoal sender")
    receiver = placement.spawn(
        False,
        _python(
            "shoal_dev.bench.transfer_peer", "fetch", *common, "--seed", str(options.seed + 1),
            "--peer", f"{placement.sender_ip}:{SHOAL_PORT}",
            "--bind", f"{placement.receiver_ip}:0", "--out", str(output),
            "--window", str(options.window), "--timeout", str(options.timeout_seconds),
            "--result", str(receiver_result), *profile("receiver"),
            *(["--confidential", str(confidential)] if confidential else []),
        ),
    )  # fmt: skip
    _wait(receiver, options.timeout_seconds + 30, "shoal receiver")
    stop_processes([sender])
    receiving = _read_result(receiver_result, "shoal receiver")
    sending = _read_result(sender_result, "shoal sender")
    with contextlib.suppress(OSError):
        output.unlink()
    return {"sender": sending, "receiver": receiving}


def run_libtorrent(
    placement: Placement, options: TransferBenchOptions, source: Path, workdir: Path,
    manifest: Manifest,
) -> dict[str, Any]:  # fmt: skip
    """Move ``source`` with libtorrent over uTP; return both processes' results."""
    torrent = workdir / "package.torrent"
    subprocess.run(
        _python("shoal_dev.bench.utp_peer", "make-torrent", str(source), str(torrent)), check=True
    )
    download_dir = workdir / "utp-download"
    download_dir.mkdir()
    seeder_result = workdir / "utp-seeder.json"
    downloader_result = workdir / "utp-downloader.json"
    seeder_bind = f"{placement.sender_ip}:{UTP_PORT}"
    seeder = placement.spawn(
        True,
        _python(
            "shoal_dev.bench.utp_peer", "seed", "--torrent", str(torrent),
            "--data-dir", str(source.parent), "--bind", seeder_bind,
            "--result", str(seeder_result),
        ),
    )  # fmt: skip
    _wait_ready(seeder, "libtorrent seeder")
    downloader = placement.spawn(
        False,
        _python(
            "shoal_dev.bench.utp_peer", "download", "--torrent", str(torrent),
            "--out-dir", str(download_dir), "--bind", f"{placement.receiver_ip}:{UTP_PORT + 1}",
            "--seeder", seeder_bind, "--result", str(downloader_result),
            "--timeout", str(options.timeout_seconds),
        ),
    )  # fmt: skip
    _wait(downloader, options.timeout_seconds + 30, "libtorrent downloader")
    stop_processes([seeder])
    downloading = _read_result(downloader_result, "libtorrent downloader")
    seeding = _read_result(seeder_result, "libtorrent seeder")
    downloading["sha256_matches"] = downloading.get("sha256") == manifest.sha256.hex()
    shutil.rmtree(download_dir, ignore_errors=True)
    return {"sender": seeding, "receiver": downloading}


def seal_for_bench(
    source: Path, size: int, options: TransferBenchOptions, workdir: Path
) -> tuple[Path, Manifest, Path]:
    """Encrypt ``source`` as the console does and seal its key to a new device key.

    Returns the ciphertext file, its manifest and the fetcher's ``--confidential`` file.
    """
    content_key = new_content_key()
    cipher = ChunkCipher(content_key, options.chunk_size, size)
    sealed_path = workdir / "package.sealed"
    with open(source, "rb", buffering=0) as plaintext, open(sealed_path, "wb") as sink:
        package = pack_sealed_stream(plaintext, sink, cipher)
    device = DeviceKey.generate()
    settings = {
        "device_key": device.private_key.private_bytes_raw().hex(),
        "sealed_key": seal_content_key(
            content_key, device.public_raw, package.manifest.content_id.digest
        ).hex(),
        "plaintext_size": package.plaintext_size,
        "plaintext_sha256": package.plaintext_sha256.hex(),
    }
    settings_path = workdir / "confidential.json"
    settings_path.write_text(json.dumps(settings))
    return sealed_path, package.manifest, settings_path


def _per_gb(cpu_seconds: float, size: int) -> float:
    return cpu_seconds / (size / GB) if size else 0.0


def summarize(run: dict[str, Any], size: int, *, retransmitted: float | None) -> dict[str, Any]:
    """The figures of one run: throughput, CPU per GB on each side, RSS, retransmits."""
    sender, receiver = run["sender"], run["receiver"]
    seconds = receiver["cpu"]["wall_seconds"]
    staging = receiver.get("staging")
    figures: dict[str, Any] = {}
    if staging is not None:
        staged_seconds = seconds + staging["wall_seconds"]
        figures = {
            "staged_mb_per_s": size / MB / staged_seconds if staged_seconds > 0 else 0.0,
            "staging_cpu_seconds_per_gb": _per_gb(staging["cpu_seconds"], size),
        }
    return {
        "complete": bool(receiver.get("complete", receiver.get("finished"))),
        "sha256_matches": bool(receiver.get("sha256_matches")),
        "seconds": seconds,
        "payload_mb_per_s": size / MB / seconds if seconds > 0 else 0.0,
        "sender_cpu_seconds_per_gb": _per_gb(sender["cpu"]["cpu_seconds"], size),
        "receiver_cpu_seconds_per_gb": _per_gb(receiver["cpu"]["cpu_seconds"], size),
        "retransmitted_percent": retransmitted,
        "sender_peak_rss_mb": sender["peak_rss_bytes"] / MB,
        "receiver_peak_rss_mb": receiver["peak_rss_bytes"] / MB,
        **figures,
    }


def shoal_retransmitted_percent(run: dict[str, Any]) -> float:
    """Data packets the sender sent again, as a percentage of those sent once."""
    engine = run["sender"]["engine"]
    again = engine["data_packets_retransmitted"]
    first_time = engine["data_packets_sent"] - again
    return 100.0 * again / first_time if first_time else 0.0


def _shoal_figures(run: dict[str, Any], size: int) -> dict[str, Any]:
    figures = summarize(run, size, retransmitted=shoal_retransmitted_percent(run))
    figures["gso"] = run["sender"].get("gso")
    figures["gro"] = run["receiver"].get("gro")
    figures["dropped_by_loss_filter"] = (
        run["sender"]["dropped_by_loss_filter"] + run["receiver"]["dropped_by_loss_filter"]
    )
    if not (figures["complete"] and figures["sha256_matches"]):
        failure = run["receiver"].get("failure") or "incomplete or corrupt copy"
        raise BenchmarkFailed(f"shoal transfer failed: {failure}")
    return figures


def _spread(runs: list[dict[str, Any]]) -> dict[str, float]:
    rates = sorted(run["payload_mb_per_s"] for run in runs)
    return {"min": rates[0], "median": statistics.median(rates), "max": rates[-1]}


def run_transfer_bench(options: TransferBenchOptions, report: Report) -> dict[str, Any]:
    """Run the whole benchmark; return the JSON document (also printed by ``report``).

    With ``repeat`` > 1 the shoal and libtorrent runs alternate, so that load from
    other programs hits both alike; the best run of each is reported, with the spread.
    """
    size = options.size_mb * MB
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=options.workdir))
    try:
        source = workdir / "package.bin"
        report(f"writing {options.size_mb} MB of random data to {source}")
        write_random_file(source, size, options.seed)
        with open(source, "rb", buffering=0) as stream:
            manifest = pack_stream(stream, options.chunk_size)
        served, served_manifest, confidential = source, manifest, None
        if options.confidential:
            served, served_manifest, confidential = seal_for_bench(source, size, options, workdir)
            report(f"encrypted it as a confidential package: {served_manifest.size} bytes")
        manifest_file = workdir / "package.manifest"
        manifest_file.write_bytes(served_manifest.body())
        document: dict[str, Any] = {
            "size_mb": options.size_mb,
            "size_bytes": size,
            "chunk_size": options.chunk_size,
            "loss": options.loss,
            "gso_requested": options.gso,
            "window_chunks": options.window,
            "engine_settings": list(options.engine_settings),
            "rate_mbit": options.rate_mbit,
            "repeat": options.repeat,
            "confidential": options.confidential,
        }
        baseline = options.baseline and importlib.util.find_spec("libtorrent") is not None
        if not options.baseline:
            document["libtorrent_skipped"] = "--no-baseline"
        elif not baseline:
            document["libtorrent_skipped"] = (
                "the libtorrent module is not installed: pip install -e ./dev (shoal-dev)"
            )
        shoal_runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        utp_runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        with placed(options.namespaces, options.rate_mbit) as placement:
            document["link"] = placement.description
            report(f"link: {placement.description}")
            for number in range(1, options.repeat + 1):
                run_label = f" (run {number}/{options.repeat})" if options.repeat > 1 else ""
                report(f"shoal: transferring ...{run_label}")
                run = run_shoal(placement, options, served, manifest_file, workdir, confidential)
                shoal_runs.append((_shoal_figures(run, size), run))
                if baseline:
                    report(f"libtorrent uTP: transferring ...{run_label}")
                    run = run_libtorrent(placement, options, source, workdir, manifest)
                    utp_runs.append((summarize(run, size, retransmitted=None), run))
        best, best_processes = max(shoal_runs, key=lambda pair: pair[0]["payload_mb_per_s"])
        document["shoal"] = best
        document["shoal_processes"] = best_processes
        document["shoal_runs"] = [figures for figures, _ in shoal_runs]
        document["shoal_spread_mb_per_s"] = _spread(document["shoal_runs"])
        document["libtorrent"] = None
        if utp_runs:
            utp_best, utp_processes = max(utp_runs, key=lambda pair: pair[0]["payload_mb_per_s"])
            document["libtorrent"] = utp_best
            document["libtorrent_processes"] = utp_processes
            document["libtorrent_runs"] = [figures for figures, _ in utp_runs]
            document["libtorrent_spread_mb_per_s"] = _spread(document["libtorrent_runs"])
            if utp_best["payload_mb_per_s"]:
                document["ratio_shoal_to_libtorrent"] = (
                    best["payload_mb_per_s"] / utp_best["payload_mb_per_s"]
                )
        return document
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def format_table(document: dict[str, Any]) -> str:
    """The human-readable summary of a benchmark document."""
    columns = (
        ("payload MB/s", "payload_mb_per_s", "{:.1f}"),
        ("CPU s/GB send", "sender_cpu_seconds_per_gb", "{:.2f}"),
        ("CPU s/GB recv", "receiver_cpu_seconds_per_gb", "{:.2f}"),
        ("retrans %", "retransmitted_percent", "{:.2f}"),
        ("RSS send MB", "sender_peak_rss_mb", "{:.1f}"),
        ("RSS recv MB", "receiver_peak_rss_mb", "{:.1f}"),
        ("staged MB/s", "staged_mb_per_s", "{:.1f}"),
        ("stage CPU s/GB", "staging_cpu_seconds_per_gb", "{:.2f}"),
    )
    confidential = (
        ", confidential: ciphertext moved, decrypted when staged"
        if document.get("confidential")
        else ""
    )
    lines = [
        f"shoal bench transfer: {document['size_mb']} MB{confidential}, "
        f"loss {document['loss']:.1%}, {document['link']}",
    ]
    header = f"{'':<18}" + "".join(f"{title:>15}" for title, _, _ in columns)
    lines.append(header)
    shoal = document["shoal"]
    offload = "GSO/GRO" if shoal.get("gso") and shoal.get("gro") else "plain"
    rows = [(f"shoal ({offload})", shoal)]
    if document.get("libtorrent"):
        rows.append(("libtorrent uTP", document["libtorrent"]))
    for label, figures in rows:
        cells = []
        for _, key, pattern in columns:
            value = figures.get(key)
            cells.append(f"{'n/a' if value is None else pattern.format(value):>15}")
        lines.append(f"{label:<18}" + "".join(cells))
    if document.get("repeat", 1) > 1:
        lines.append(f"best of {document['repeat']} runs; payload MB/s min / median / max:")
        for label, key in (
            ("shoal", "shoal_spread_mb_per_s"),
            ("libtorrent uTP", "libtorrent_spread_mb_per_s"),
        ):
            if key in document:
                low, middle, high = (document[key][name] for name in ("min", "median", "max"))
                lines.append(f"  {label:<16}{low:.1f} / {middle:.1f} / {high:.1f}")
    if "ratio_shoal_to_libtorrent" in document:
        caveat = " (libtorrent ran without the loss filter)" if document["loss"] else ""
        lines.append(
            f"shoal / libtorrent uTP (best runs): {document['ratio_shoal_to_libtorrent']:.1f}x"
            + caveat
        )
    elif document.get("libtorrent_skipped"):
        lines.append(f"libtorrent baseline skipped: {document['libtorrent_skipped']}")
    downloader = document.get("libtorrent_processes", {}).get("receiver", {})
    if "udp_datagrams_in" in downloader:
        lines.append(
            f"libtorrent's downloader received {downloader['udp_datagrams_in']} UDP datagrams "
            f"and {downloader['tcp_segments_in']} TCP segments in its namespace (uTP only)"
        )
    if shoal.get("dropped_by_loss_filter"):
        lines.append(
            f"loss filter dropped {shoal['dropped_by_loss_filter']} received datagrams (shoal only)"
        )
    return "\n".join(lines)
