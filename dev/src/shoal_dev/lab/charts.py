"""PNG charts of a lab run: completion-time CDF per system (with the office's two lower
bounds, Kumar-Ross and T_lb1, when there is one office), WAN bytes per office.

matplotlib (the ``bench`` extra) draws them with its file-only Agg backend, so no
display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.core.errors import ShoalError

COLOURS = {"shoal": "#1f77b4", "http-direct": "#d62728", "libtorrent": "#2ca02c"}


class ChartsUnavailable(ShoalError):
    """matplotlib is not installed (pip install -e ./dev (shoal-dev))."""


def write_charts(document: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``SCENARIO-cdf.png`` and ``SCENARIO-wan.png`` into ``folder``; their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartsUnavailable(
            "charts need matplotlib: pip install -e ./dev (shoal-dev)"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    name = document["scenario"]
    size_mib = document["size_bytes"] / (1024 * 1024)
    rows = [row for row in document["systems"] if row["status"] != "skipped" and row["clients"]]
    bounds = {office["name"]: office["lower_bound_s"] for office in document["offices"]}

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for row in rows:
        crowd = [client for client in row["clients"] if not client.get("lying")]
        times = sorted(c["completion_s"] for c in crowd if c["completion_s"] is not None)
        total = len(crowd)
        if not times:
            continue
        fractions = [(index + 1) / total for index in range(len(times))]
        axes.step([0.0, *times], [0.0, *fractions], where="post", label=row["system"],
                  color=COLOURS.get(row["system"]), linewidth=2)  # fmt: skip
    if len(bounds) == 1:
        office = document["offices"][0]
        lines = [(office["lower_bound_s"], "Kumar-Ross bound", ":")]
        if "one_copy_bound_s" in office:
            label = f"T_lb1 ({office['binding']})"
            lines.append((office["one_copy_bound_s"], label, "--"))
        for bound, label, style in lines:
            axes.axvline(bound, color="grey", linestyle=style, linewidth=1)
            axes.annotate(label, (bound, 0.03), rotation=90, color="grey", fontsize=8,
                          xytext=(3, 0), textcoords="offset points")  # fmt: skip
    axes.set_xlabel("seconds since the flash crowd started")
    axes.set_ylabel("fraction of clients complete")
    axes.set_ylim(0, 1.02)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.set_title(f"{name}: completion time, {size_mib:.0f} MiB package")
    axes.legend(loc="lower right")
    figure.tight_layout()
    cdf = folder / f"{name}-cdf.png"
    figure.savefig(cdf)
    plt.close(figure)

    offices = [office["name"] for office in document["offices"]]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    width = 0.8 / max(len(rows), 1)
    for position, row in enumerate(rows):
        ratios = {o["name"]: o["wan_in_over_package"] for o in row["offices"]}
        xs = [index + (position - (len(rows) - 1) / 2) * width for index in range(len(offices))]
        bars = axes.bar(xs, [ratios.get(o, 0) for o in offices], width,
                        label=row["system"], color=COLOURS.get(row["system"]))  # fmt: skip
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    tallest = max((o["wan_in_over_package"] for row in rows for o in row["offices"]), default=1)
    axes.set_ylim(0, max(tallest, 1.0) * 1.3)  # room for the legend above the bars
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(offices)), offices)
    axes.set_ylabel("bytes into the office over its WAN link / package size")
    axes.set_title(f"{name}: WAN bytes per office")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(loc="upper left", ncols=len(rows))
    figure.tight_layout()
    wan = folder / f"{name}-wan.png"
    figure.savefig(wan)
    plt.close(figure)
    return [cdf, wan]
