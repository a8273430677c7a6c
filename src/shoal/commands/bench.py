"""Benchmark commands: ``shoal bench transfer`` (and more benchmarks in this group)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shoal.lab.netns import terminate_on_signals


@click.group()
def bench() -> None:
    """Benchmarks that print figures (throughput, CPU, memory)."""


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
) -> None:
    """Move a random file between two network namespaces with shoal, then with
    libtorrent over uTP, and print MB/s, CPU s/GB, retransmits and peak RSS.

    As root the two processes run in namespaces joined by a veth pair (names start
    with shn-); otherwise on loopback. Everything is removed when the run ends.
    """
    from shoal.bench.transfer import TransferBenchOptions, format_table, run_transfer_bench

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
    )
    with terminate_on_signals():
        document = run_transfer_bench(options, lambda line: click.echo(line, err=True))
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    click.echo(format_table(document))


COMMANDS = (bench,)
