"""Two builds' sweeps over several seeds, cell by cell: median [min-max] of T_last/T_lb1
and of WAN/F, and the ratio of T_last per cell-run (the second build's over the first's).

Each build's sweeps are JSON files written by ``shoal sim sweep GRID --seed S --json
OUT`` (or ``shoal lab sweep``); a pattern names them with ``{s}`` for the seed:

    .venv/bin/python benchmarks/sweep_seeds.py \\
        'bench/results/lossy/loss-cells-s{s}-main.json' \\
        'bench/results/lossy/loss-cells-s{s}.json' --seeds 1-12

Figures, not assertions (the figures of docs/network.md, "A lossy office").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def seeds_of(text: str) -> list[int]:
    """``1-12`` or ``1,3,5``."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def cells(pattern: str, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(Path(pattern.format(s=seed)).read_text())["cells"]
    return rows


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the first build's sweeps, {s} for the seed")
    parser.add_argument("after", help="the second build's sweeps, {s} for the seed")
    parser.add_argument("--seeds", default="1-5", help="1-12 or 1,3,5 (default 1-5)")
    args = parser.parse_args()
    seeds = seeds_of(args.seeds)
    per_cell: dict[int, dict[str, Any]] = {}
    ratios: list[float] = []
    for seed in seeds:
        for before, after in zip(cells(args.before, seed), cells(args.after, seed), strict=True):
            cell = per_cell.setdefault(
                before["index"], {"label": before["label"], "t": ([], []), "wan": ([], [])}
            )
            for side, row in enumerate((before, after)):
                cell["t"][side].append(row["t_over_one_copy_bound"])
                cell["wan"][side].append(row["wan_over_package"])
            ratios.append(after["t_last_s"] / before["t_last_s"])
    print(f"seeds {args.seeds}: T_last/T_lb1 and WAN/F, median [min-max], before -> after")
    for index, cell in sorted(per_cell.items()):
        (t_before, t_after), (w_before, w_after) = cell["t"], cell["wan"]
        print(
            f"{index:>3} {cell['label'][:58]:<58} {spread(t_before)} -> {spread(t_after)}"
            f"  WAN {spread(w_before)} -> {spread(w_after)}"
        )
    quartiles = statistics.quantiles(ratios, n=4)
    sooner = sum(1 for ratio in ratios if ratio < 0.999)
    later = sum(1 for ratio in ratios if ratio > 1.001)
    print(
        f"T_last after/before per cell-run: median {statistics.median(ratios):.3f} "
        f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}), {sooner} sooner, {later} later "
        f"of {len(ratios)}"
    )


if __name__ == "__main__":
    main()
