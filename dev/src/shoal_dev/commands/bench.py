"""Benchmarks that print figures: ``shoal bench pack``, ``transfer`` and ``share``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from shoal.commands.common import parse_chunk_size
from shoal.core.chunking import DEFAULT_CHUNK_SIZE, MIB
from shoal_dev.lab.netns import terminate_on_signals


@click.group()
def bench() -> None:
    """Benchmarks that print figures (throughput, CPU, memory); targets in the README."""


@bench.command()
@click.option("--size-mb", type=click.IntRange(min=1), default=256, show_default=True,
              help="Size of the random file to move, in MB (10^6 bytes).")  # fmt: skip
@click.option("--loss", type=click.FloatRange(0.0, 0.9), default=0.0, show_default=True,
              help="Fraction of received datagrams each shoal process drops (seeded; "
              "stands in for netem, which this lab lacks).")  # fmt: skip
@click.option("--no-gso", is_flag=True, help="Use plain sendto/recvfrom, no UDP GSO/GRO.")
@click.option("--window", type=click.IntRange(min=1), default=8, show_default=True,
              help="Chunk requests the receiver keeps in flight.")  # fmt: skip
@click.option("--no-baseline", is_flag=True, help="Skip the libtorrent uTP baseline.")
@click.option("--loopback", is_flag=True,
              help="Run both ends on 127.0.0.1 even as root (no namespaces).")  # fmt: skip
@click.option("--rate-mbit", type=click.FloatRange(min=1.0),
              help="Shape the veth pair to this rate with tc HTB (namespaces only).")  # fmt: skip
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run each transfer N times; report the best and the spread.")  # fmt: skip
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Give up on a transfer after this many seconds.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the random file and of the loss filter.")  # fmt: skip
@click.option("--engine", "engine_settings", multiple=True, metavar="NAME=VALUE",
              help="Override a TransferConfig field in both shoal processes.")  # fmt: skip
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Where the file and its copies go (default: the system temp dir).")  # fmt: skip
@click.option("--profile", "profile_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Run the shoal processes under cProfile; write their stats here.")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the full results (both processes of each run) to this file.")  # fmt: skip
@click.option("--confidential", is_flag=True,
              help="Move a confidential package: the ciphertext, verified like any package, "
              "then decrypted as a client's installer stages it (timed apart).")  # fmt: skip
def transfer(
    size_mb: int,
    loss: float,
    no_gso: bool,
    window: int,
    no_baseline: bool,
    loopback: bool,
    rate_mbit: float | None,
    repeat: int,
    timeout: float,
    seed: int,
    engine_settings: tuple[str, ...],
    workdir: Path | None,
    profile_dir: Path | None,
    json_out: Path | None,
    confidential: bool,
) -> None:
    """Move a random file between two network namespaces with shoal, then with
    libtorrent over uTP, and print MB/s, CPU s/GB, retransmits and peak RSS.

    As root the two processes run in namespaces joined by a veth pair (names start
    with shn-); otherwise on loopback. Everything is removed when the run ends.
    """
    from shoal_dev.bench.transfer import TransferBenchOptions, format_table, run_transfer_bench

    options = TransferBenchOptions(
        size_mb=size_mb,
        loss=loss,
        gso=not no_gso,
        window=window,
        baseline=not no_baseline,
        namespaces=not loopback,
        timeout_seconds=timeout,
        seed=seed,
        profile_dir=profile_dir,
        engine_settings=engine_settings,
        rate_mbit=rate_mbit,
        repeat=repeat,
        workdir=workdir,
        confidential=confidential,
    )
    with terminate_on_signals():
        document = run_transfer_bench(options, lambda line: click.echo(line, err=True))
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    click.echo(format_table(document))


@bench.command()
@click.option(
    "--rate-mbit",
    type=click.FloatRange(min=1.0),
    default=50.0,
    show_default=True,
    help="Rate of the shared link (HTB in the lab, the bottleneck in --sim).",
)
@click.option(
    "--mode",
    type=click.Choice(["foreground", "background"]),
    default="foreground",
    show_default=True,
    help="The shoal transfer's mode.",
)
@click.option(
    "--sim", is_flag=True, help="Run in the simulator (virtual time) at each --rtt, not in the lab."
)
@click.option(
    "--rtt",
    "rtts",
    type=click.FloatRange(min=0.0),
    multiple=True,
    help="Round-trip propagation delay in ms (--sim; default 10 50 100 200).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs of every scenario (lab: alternating; sim: seeds); medians reported.",
)
@click.option(
    "--buffer-packets",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Depth of the link's drop-tail queue, in 1500-byte packets.",
)
@click.option(
    "--late-start",
    type=click.FloatRange(min=1.0),
    default=10.0,
    show_default=True,
    help="Seconds before the late TCP flow starts (the first flow is at rate).",
)
@click.option(
    "--together",
    type=click.FloatRange(min=5.0),
    default=30.0,
    show_default=True,
    help="Seconds both flows run; rates are averaged from 5 s into it.",
)
@click.option(
    "--queue-at",
    type=click.Choice(["router", "sender"]),
    default="router",
    show_default=True,
    help="Lab: shape the router's link (a WAN) or the senders' own interface.",
)
@click.option(
    "--tcp-congestion",
    default="cubic",
    show_default=True,
    help="Lab: the TCP flows' congestion control (TCP_CONGESTION; the simulator's is CUBIC).",
)
@click.option(
    "--namespace-prefix",
    default="shs-",
    show_default=True,
    help="Lab: start of the namespaces' names (the bench's process id follows).",
)
@click.option(
    "--address-base",
    default="10.79",
    show_default=True,
    help="Lab: first two octets of the lab's addresses (BASE.1.0/24, BASE.2.0/24).",
)
@click.option(
    "--engine",
    "engine_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a TransferConfig field in the shoal processes (lab).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write every run (rates over time, verdicts) to this file.",
)
@click.option(
    "--png",
    "png_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write each flow's rate over time as PNG charts into this folder.",
)
@click.option(
    "--trace",
    "trace_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Lab: keep every controller input of the shoal sender, and both shoal "
    "processes' counters, in this folder (shoal_dev.bench.cc_trace).",
)
def share(
    rate_mbit: float, mode: str, sim: bool, rtts: tuple[float, ...], repeat: int,
    buffer_packets: int, late_start: float, together: float, queue_at: str,
    tcp_congestion: str, namespace_prefix: str, address_base: str,
    engine_settings: tuple[str, ...], json_out: Path | None, png_dir: Path | None,
    trace_dir: Path | None,
) -> None:  # fmt: skip
    """A shoal transfer and a TCP flow through one link, against issue 9's targets.

    Foreground: the late TCP flow beside shoal must keep >= 80% of what it keeps beside
    another TCP flow. Background: TCP beside shoal keeps >= 90% of its rate alone, and
    shoal alone takes >= 90% of the link. The lab (root) joins three namespaces
    (names start with --namespace-prefix) through a router whose shaped link is the bottleneck;
    everything is removed when the run ends.
    """
    from shoal.protocol.transfer import Mode
    from shoal_dev.bench.share import (
        ShareOptions,
        format_table,
        run_lab_share,
        run_sim_share,
        write_charts,
    )

    options = ShareOptions(
        rate_mbit=rate_mbit, mode=Mode[mode.upper()], repeat=repeat, late_start=late_start,
        together=together, buffer_packets=buffer_packets, queue_at=queue_at, sim=sim,
        rtts_ms=rtts or (10.0, 50.0, 100.0, 200.0), engine_settings=engine_settings,
        tcp_congestion=tcp_congestion, namespace_prefix=namespace_prefix,
        address_base=address_base, trace_dir=trace_dir,
    )  # fmt: skip
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    with terminate_on_signals():
        document = run_sim_share(options, report) if sim else run_lab_share(options, report)
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=1) + "\n")
    if png_dir is not None:
        for path in write_charts(document, png_dir):
            click.echo(f"wrote {path}", err=True)
    click.echo(format_table(document))


@dataclass(frozen=True, slots=True)
class TimedRun:
    """Wall time and peak RSS of one child process."""

    seconds: float
    peak_rss_mb: float


def run_timed(command: list[str]) -> TimedRun:
    """Run ``command`` to completion; measure wall time and the child's peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        error = child.stderr.read().decode() if child.stderr else ""
        raise click.ClickException(f"{command[0]} failed ({child.returncode}): {error.strip()}")
    if child.stderr:
        child.stderr.close()
    return TimedRun(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024)  # Linux: KiB


def write_random_file(path: Path, size: int) -> None:
    """Fill ``path`` with ``size`` random bytes, 4 MiB at a time."""
    block = 4 * MIB
    with open(path, "wb") as output:
        remaining = size
        while remaining:
            count = min(block, remaining)
            output.write(os.urandom(count))
            remaining -= count


@bench.command("pack")
@click.option("--size-mb", default=1024, show_default=True, help="Size of the test file in MiB.")
@click.option(
    "--chunk-size",
    default=str(DEFAULT_CHUNK_SIZE),
    show_default="1M",
    callback=parse_chunk_size,
    help="Chunk size for shoal pack.",
)
@click.option("--rounds", default=3, show_default=True, help="Runs of each tool; best is kept.")
@click.option("--dir", "work_dir", type=click.Path(path_type=Path), help="Where to put the file.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write JSON here.")
def bench_pack(
    size_mb: int, chunk_size: int, rounds: int, work_dir: Path | None, json_out: Path | None
) -> None:
    """``shoal pack`` against ``sha256sum`` on the same file in the same run.

    Prints the throughput ratio (target >= 0.9: SHA-256 is the physical limit) and the
    peak RSS of ``shoal pack`` (target <= 64 MB). Both read the file from the page
    cache; each runs ROUNDS times, alternating, and the best time counts.
    """
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        raise click.ClickException("sha256sum (coreutils) is needed for the comparison")
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="shoal-bench-pack-") as scratch:
        package = Path(scratch) / "package.bin"
        click.echo(f"writing {size_mb} MiB of random data to {package} ...", err=True)
        write_random_file(package, size_mb * MIB)
        shoal_command = [
            sys.executable,
            "-m",
            "shoal",
            "pack",
            str(package),
            "--chunk-size",
            str(chunk_size),
            "--out",
            scratch,
        ]
        baseline_runs, pack_runs = [], []
        for _ in range(rounds):
            baseline_runs.append(run_timed([sha256sum, str(package)]))
            pack_runs.append(run_timed(shoal_command))
    baseline = min(run.seconds for run in baseline_runs)
    packing = min(run.seconds for run in pack_runs)
    size = size_mb * MIB
    result = {
        "size_mb": size_mb,
        "chunk_size": chunk_size,
        "sha256sum_mb_s": round(size / MIB / baseline, 1),
        "shoal_pack_mb_s": round(size / MIB / packing, 1),
        "throughput_ratio": round(baseline / packing, 3),
        "shoal_pack_peak_rss_mb": round(max(run.peak_rss_mb for run in pack_runs), 1),
        "runs": {
            "sha256sum": [asdict(r) for r in baseline_runs],
            "shoal_pack": [asdict(r) for r in pack_runs],
        },
    }
    click.echo(f"sha256sum      {result['sha256sum_mb_s']:>8} MB/s")
    click.echo(f"shoal pack     {result['shoal_pack_mb_s']:>8} MB/s")
    click.echo(f"ratio          {result['throughput_ratio']:>8}   (target >= 0.9)")
    click.echo(f"peak RSS       {result['shoal_pack_peak_rss_mb']:>8} MB (target <= 64)")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


COMMANDS = (bench,)
