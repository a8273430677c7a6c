"""``shoal lab``: the emulated enterprise network, its scenarios and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shoal.commands.common import atomic_write
from shoal_dev.lab.netns import terminate_on_signals

DEFAULT_PREFIX = "shl-"
DEFAULT_BASE = "10.236"


@click.group()
def lab() -> None:
    """Emulated enterprise networks (network namespaces, root only): run a scenario
    against shoal and its baselines, measure, clean up."""


@lab.command("run")
@click.argument("scenario")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Write the results (one row per system) here.")  # fmt: skip
@click.option("--png", "png_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the charts (completion-time CDF, WAN bytes) here.")  # fmt: skip
@click.option("--size-mb", type=click.IntRange(min=1),
              help="Package size in MiB instead of the scenario's.")  # fmt: skip
@click.option("--clients", type=click.IntRange(min=1),
              help="Clients per office instead of the scenario's.")  # fmt: skip
@click.option("--ci", is_flag=True, help="Use the scenario's [ci] sizes (small and quick).")
@click.option("--chunk-kib", type=int,
              help="shoal's chunk size in KiB (a power of two, 64 to 16384) instead of "
              "the console's choice for the package size.")  # fmt: skip
@click.option("--system", "systems", multiple=True,
              type=click.Choice(["shoal", "http-direct", "libtorrent"]),
              help="Run only these systems (default: the scenario's).")  # fmt: skip
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep logs, caches and copies here (default: removed).")  # fmt: skip
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="Name prefix of the lab's namespaces and links.")  # fmt: skip
@click.option("--base", default=DEFAULT_BASE, show_default=True,
              help="First two octets of the lab's central subnet (runs at the same "
              "time need different prefixes and bases).")  # fmt: skip
def run(
    scenario: str,
    json_out: Path,
    png_dir: Path | None,
    size_mb: int | None,
    clients: int | None,
    ci: bool,
    chunk_kib: int | None,
    systems: tuple[str, ...],
    workdir: Path | None,
    prefix: str,
    base: str,
) -> None:
    """Run SCENARIO (a shipped name: branch-flash, multi-office, churn, corrupt-peer,
    slow-uplinks; or a .toml file) for shoal, http-direct and libtorrent on the same
    emulated network and file; print the table, write the JSON (and charts with --png).

    Everything the run creates is removed when it ends, also on an error or Ctrl-C.
    """
    import dataclasses
    import shutil
    import tempfile

    from shoal_dev.lab.netns import LabError, lab_available
    from shoal_dev.lab.runner import format_results, run_scenario
    from shoal_dev.lab.scenario import load_scenario

    available, why = lab_available()
    if not available:
        raise LabError(f"shoal lab needs network namespaces: {why}")
    loaded = load_scenario(scenario)
    if ci:
        loaded = loaded.for_ci()
    loaded = loaded.resized(size_mb, clients)
    if chunk_kib is not None:
        loaded = loaded.with_chunk_kib(chunk_kib)
    if systems:
        loaded = dataclasses.replace(loaded, systems=systems)
    work = workdir or Path(tempfile.mkdtemp(prefix="shoal-lab-"))
    try:
        with terminate_on_signals():
            document = run_scenario(
                loaded,
                work.resolve(),
                say=lambda line: click.echo(line, err=True),
                prefix=prefix,
                base=base,
            )
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(format_results(document))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(json_out, (json.dumps(document, indent=1) + "\n").encode())
    click.echo(f"results: {json_out}")
    if png_dir is not None:
        from shoal_dev.lab.charts import write_charts

        for path in write_charts(document, png_dir):
            click.echo(f"chart: {path}")


@lab.command("sweep")
@click.argument("grid")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Write the results (one row per cell) here.")  # fmt: skip
@click.option("--png", "png_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the heatmap (both systems against T_lb1, shoal/libtorrent, "
              "WAN/F) here.")  # fmt: skip
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              help="Run the cells here and keep each cell's logs and status files in "
              "DIR/cell-N (the package's copies are deleted; default: a temporary "
              "folder, removed).")  # fmt: skip
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="Name prefix of the lab's namespaces and links.")  # fmt: skip
@click.option("--base", default=DEFAULT_BASE, show_default=True,
              help="First two octets of the lab's central subnet.")  # fmt: skip
def sweep(
    grid: str, json_out: Path, png_dir: Path | None, workdir: Path | None, prefix: str, base: str
) -> None:
    """Run shoal and libtorrent over GRID (a shipped grid: default, 20-30 minutes on a
    quiet machine, an hour or more on a loaded one; ci, 1-2 minutes; or a .toml file):
    one emulated office per cell. Prints the worst cell for shoal first (by T_last/T_lb1
    and by shoal/libtorrent), then every cell; writes the JSON (and a heatmap with
    --png). The JSON is written again after each cell, so a sweep stopped midway keeps
    the cells it finished."""
    import shutil
    import tempfile

    from shoal_dev.lab.netns import LabError, lab_available
    from shoal_dev.lab.sweep import format_sweep, run_grid, write_heatmap
    from shoal_dev.sweep import load_grid

    available, why = lab_available()
    if not available:
        raise LabError(f"shoal lab needs network namespaces: {why}")
    loaded = load_grid(grid, "shoal_dev.lab")
    json_out.parent.mkdir(parents=True, exist_ok=True)

    def write(document: dict[str, object]) -> None:
        atomic_write(json_out, (json.dumps(document, indent=1) + "\n").encode())

    work = workdir or Path(tempfile.mkdtemp(prefix="shoal-lab-sweep-"))
    try:
        with terminate_on_signals():
            document = run_grid(loaded, work.resolve(),
                                say=lambda line: click.echo(line, err=True),
                                prefix=prefix, base=base, keep=workdir is not None,
                                on_cell=write)  # fmt: skip
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(format_sweep(document))
    write(document)
    click.echo(f"results: {json_out}")
    if png_dir is not None:
        click.echo(f"heatmap: {write_heatmap(document, png_dir)}")


@lab.command("clean")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="Remove the namespaces and links whose names start with this.")  # fmt: skip
def clean(prefix: str) -> None:
    """Remove what a killed `shoal lab run` left behind (namespaces, links, processes)."""
    from shoal_dev.lab.netns import cleanup_prefix

    removed = cleanup_prefix(prefix)
    for item in removed:
        click.echo(f"removed {item}")
    click.echo(f"{len(removed)} leftovers removed")


COMMANDS = (lab,)
