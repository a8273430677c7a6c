"""``shoal sim``: the deterministic simulator (virtual clock, real agents and server)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shoal.commands.common import atomic_write


@click.group()
def sim() -> None:
    """The simulator: shoal's real machines on an in-memory network with a virtual
    clock (no root, no sockets; deterministic)."""


@sim.command("sweep")
@click.argument("grid")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Write the results (one row per cell) here.")  # fmt: skip
@click.option("--png", "png_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the heatmap (T_last/T_lb1 and WAN/F per cell) here.")  # fmt: skip
@click.option("--wall-s", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Give up a cell after this many seconds of this machine's time.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True,
              help="The simulator's seed (a run is a pure function of it).")  # fmt: skip
def sweep(grid: str, json_out: Path, png_dir: Path | None, wall_s: float, seed: int) -> None:
    """Run GRID (a shipped grid: default, ci; or a .toml file) in the simulator: one
    office per cell, the package assigned to every client at once. Prints the worst
    cell first (T_last / T_lb1), then every cell with WAN bytes / package size."""
    from shoal_dev.sim.sweep import format_sweep, run_grid, write_heatmap
    from shoal_dev.sweep import load_grid

    loaded = load_grid(grid, "shoal_dev.sim")
    click.echo(f"sim sweep {loaded.name}: {len(loaded.cells)} cells", err=True)
    document = run_grid(loaded, say=lambda line: click.echo(line, err=True), wall_s=wall_s,
                        seed=seed)  # fmt: skip
    click.echo(format_sweep(document))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(json_out, (json.dumps(document, indent=1) + "\n").encode())
    click.echo(f"results: {json_out}")
    if png_dir is not None:
        click.echo(f"heatmap: {write_heatmap(document, png_dir)}")


@sim.command("run")
@click.argument("scenario")
@click.option("--mode", type=click.Choice(["flow", "packet"]), default="flow", show_default=True,
              help="Chunks as max-min fair flows, or datagram by datagram.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True,
              help="A run is a pure function of it (layout and faults too).")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Write the report here.")  # fmt: skip
@click.option("--png", "png_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write per-office T_last against T_lb1, and completions over time.")  # fmt: skip
@click.option("--ci", is_flag=True, help="The scenario's short [ci] version.")
@click.option("--twice", is_flag=True,
              help="Run it again: the same report? (the determinism invariant)")  # fmt: skip
def run(scenario: str, mode: str, seed: int, json_out: Path, png_dir: Path | None, ci: bool,
        twice: bool) -> None:  # fmt: skip
    """Run SCENARIO (shipped: estate-10k, estate-faults; or a .toml file): every device is
    assigned one package at once; report per office T_last against T_lb1, WAN bytes,
    bytes by source and the P2P server's load, and check the invariants. Exits 1 when an
    invariant was violated."""
    import tempfile

    from shoal_dev.sim.estate import (
        format_report,
        load_scenario,
        run_scenario,
        seed_pure,
        write_pngs,
    )

    loaded = load_scenario(scenario, ci=ci)
    runs = []
    for _ in range(2 if twice else 1):
        with tempfile.TemporaryDirectory(prefix="shoal-sim-") as root:
            runs.append(run_scenario(loaded, mode=mode, seed=seed, root=Path(root),
                                     say=lambda line: click.echo(line, err=True)))  # fmt: skip
    document = runs[0]
    if twice:
        same = seed_pure(runs[0]) == seed_pure(runs[1])
        document["invariants"]["a_run_is_a_pure_function_of_its_seed"] = {
            "held": same, "violations": [] if same else ["two runs gave different reports"],
        }  # fmt: skip
    click.echo(format_report(document))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(json_out, (json.dumps(document, indent=1) + "\n").encode())
    click.echo(f"report: {json_out}")
    if png_dir is not None:
        for path in write_pngs(document, png_dir):
            click.echo(f"figure: {path}")
    if not all(outcome["held"] for outcome in document["invariants"].values()):
        raise SystemExit(1)


COMMANDS = (sim,)
