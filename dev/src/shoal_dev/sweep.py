"""Sweep grids: many single-office networks, so that no single scenario can be tuned to.

``shoal lab sweep`` (``lab/sweep.py``, real processes in network namespaces) and
``shoal sim sweep`` (``sim/sweep.py``, the real agents on the simulator's virtual clock)
read the same grid files and share this module: the cells, their bounds, the worst-first
order of a report, and the heatmap. A grid file (shipped in ``shoal_dev/lab/grids/`` and
``shoal_dev/sim/grids/``, or any path) reads::

    name = "default"
    description = "What the grid is for"
    timeout_s = 300          # per cell: wall seconds in the lab, virtual in the simulator

    [base]                   # the office every cell starts from
    clients = 16
    client_up_mbit = 20      # each client's uplink
    client_down_mbit = 100   # and downlink (asymmetric links: different figures)
    wan_mbit = 100
    size_mb = 32             # the package, MiB
    churn = 0.0              # fraction of the clients killed at 30% of T_lb1, back 3 s later
    rtt_ms = 20              # simulator only: round trip over the office's WAN
    buffer_ms = 250          # simulator only: queue depth of every link of the office
    chunk_kib = 0            # simulator only: the package's chunk size (0: the
                             # product's default, ``chunk_size_for``, as the lab's)
    disk_ms = 0              # simulator only: each client's disk time per batch of
                             # chunk writes (0: none; ``shoal_dev.sim.disk``)
    loss_pct = 0             # simulator only: random loss on every link of the office,
                             # percent of datagrams (a noisy WiFi or DSL line)

    [axes]                   # each value of one axis, the others at [base]
    client_up_mbit = [10, 20, 100, 1000]
    wan_mbit = [10, 50, 500]

    [[cell]]                 # and cells that change several things at once
    clients = 24
    client_up_mbit = 10

The cells are the base, then each axis's values in order, then the ``[[cell]]`` tables,
without repeats. The lab refuses grids that set the simulator-only fields away from
their defaults: its links have no propagation delay and fixed queues.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from shoal.core.bounds import Bound, Outage, churn_bound, kumar_ross_bound, one_copy_bound
from shoal.core.chunking import chunk_size_for
from shoal.core.errors import ShoalError

MIB = 1024 * 1024
CHURN_AT_BOUND = 0.3
"""Churned clients are killed at this fraction of the office's T_lb1 (issue 9's case)."""
CHURN_DOWN_S = 3.0
SIM_ONLY = ("rtt_ms", "buffer_ms", "chunk_kib", "disk_ms", "loss_pct")


class GridInvalid(ShoalError):
    """A grid file is missing, not TOML, or describes a cell that cannot be built."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One office of a sweep: its clients and links, the package, churn."""

    clients: int = 16
    client_up_mbit: float = 20.0
    client_down_mbit: float = 100.0
    wan_mbit: float = 100.0
    size_mb: int = 32
    churn: float = 0.0
    rtt_ms: float = 20.0
    buffer_ms: float = 250.0
    chunk_kib: int = 0
    """The package's chunk size in KiB; 0: the product's default for its size
    (``shoal.core.chunking.chunk_size_for``, what the console gives an upload)."""
    disk_ms: float = 0.0
    """Each client's disk time per batch of chunk writes, ms (0: stored at once)."""
    loss_pct: float = 0.0
    """Random loss on every link of the office (WAN and clients' links), percent of
    datagrams, independent of the queue (a noisy WiFi or DSL line)."""
    axis: str = "base"
    """Which axis of the grid this cell varies ("base", an axis name, or "cell")."""

    @property
    def name(self) -> str:
        """A short label: the office, and the simulator-only fields that are not the
        defaults (a lab cell never has them)."""
        default = Cell()
        label = (
            f"N{self.clients} up{self.client_up_mbit:g}/down{self.client_down_mbit:g} "
            f"wan{self.wan_mbit:g} {self.size_mb}MiB churn{self.churn:.0%}"
        )
        if self.rtt_ms != default.rtt_ms:
            label += f" rtt{self.rtt_ms:g}ms"
        if self.buffer_ms != default.buffer_ms:
            label += f" buf{self.buffer_ms:g}ms"
        if self.chunk_kib != default.chunk_kib:
            label += f" chunk{self.chunk_kib}KiB"
        if self.disk_ms != default.disk_ms:
            label += f" disk{self.disk_ms:g}ms"
        if self.loss_pct != default.loss_pct:
            label += f" loss{self.loss_pct:g}%"
        return label

    @property
    def size_bytes(self) -> int:
        return self.size_mb * MIB

    @property
    def chunk_bytes(self) -> int:
        """The package's chunk size: the cell's, or the product's default."""
        return self.chunk_kib * 1024 if self.chunk_kib else chunk_size_for(self.size_bytes)

    @property
    def churn_clients(self) -> int:
        """How many clients churn (at least one when the fraction is not zero)."""
        if self.churn <= 0:
            return 0
        return max(1, round(self.churn * self.clients))

    def _rates(self) -> tuple[float, list[float], float]:
        up = [self.client_up_mbit * 1e6] * self.clients
        return self.wan_mbit * 1e6, up, self.client_down_mbit * 1e6

    def one_copy_bound(self) -> Bound:
        """T_lb1 of the cell's office."""
        wan, up, down = self._rates()
        return one_copy_bound(self.size_bytes, wan, up, down)

    def churn_bound(self, outages: list[tuple[float, float]] | None = None) -> Bound:
        """T_lb1 with the churned clients' outages (``shoal.core.bounds.churn_bound``):
        ``(down_at, back_at)`` in seconds from the office's start, one per churned
        client; by default the grid's plan (``churn_clients`` down at ``CHURN_AT_BOUND``
        x T_lb1 for ``CHURN_DOWN_S``). Without churn, T_lb1."""
        wan, up, down = self._rates()
        if outages is None:
            at = CHURN_AT_BOUND * self.one_copy_bound().seconds
            outages = [(at, at + CHURN_DOWN_S)] * self.churn_clients
        lost = [Outage(at, back, up[0], down) for at, back in outages]
        return churn_bound(self.size_bytes, wan, up, down, lost)

    def kumar_ross_bound(self) -> Bound:
        """Kumar-Ross's bound for the cell's office."""
        wan, up, down = self._rates()
        return kumar_ross_bound(self.size_bytes, wan, up, down)

    def parameters(self) -> dict[str, Any]:
        """The cell's fields, for a JSON row."""
        return asdict(self)

    def _check(self, origin: str) -> None:
        positive = ("clients", "client_up_mbit", "client_down_mbit", "wan_mbit", "size_mb")
        for name in positive:
            if not getattr(self, name) > 0:
                raise GridInvalid(f"{origin}: {name} must be positive in {self.name}")
        if not 0 <= self.churn <= 0.5:
            raise GridInvalid(f"{origin}: churn must be between 0 and 0.5 in {self.name}")
        if not 0 <= self.loss_pct < 50:
            raise GridInvalid(f"{origin}: loss_pct must be in [0, 50) in {self.name}")
        if (
            self.rtt_ms < 0
            or self.buffer_ms <= 0
            or not (self.chunk_kib == 0 or self.chunk_kib >= 64)
            or self.disk_ms < 0
        ):
            raise GridInvalid(
                f"{origin}: rtt_ms, buffer_ms, chunk_kib or disk_ms wrong in {self.name}"
            )


@dataclass(frozen=True, slots=True)
class Grid:
    name: str
    description: str
    cells: tuple[Cell, ...]
    timeout_s: float = 300.0

    def sim_only_fields(self) -> list[str]:
        """Fields some cell sets away from the default that only the simulator has."""
        default = Cell()
        return sorted(
            {
                name
                for cell in self.cells
                for name in SIM_ONLY
                if getattr(cell, name) != getattr(default, name)
            }
        )


FIELD_TYPES = {field.name: field.type for field in fields(Cell) if field.name != "axis"}


def _overrides(table: dict[str, Any], origin: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in FIELD_TYPES:
            known = ", ".join(FIELD_TYPES)
            raise GridInvalid(f"{origin}: unknown field {key!r}; known: {known}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GridInvalid(f"{origin}: {key} must be a number, not {value!r}")
        number = int(value) if FIELD_TYPES[key] == "int" else float(value)
        if FIELD_TYPES[key] == "int" and number != value:
            raise GridInvalid(f"{origin}: {key} must be a whole number, not {value!r}")
        values[key] = number
    return values


def parse_grid(text: str, origin: str) -> Grid:
    """Parse and check a grid's TOML."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise GridInvalid(f"{origin}: not valid TOML ({error})") from None
    base = Cell(**_overrides(document.get("base", {}), origin))
    cells = [base]
    for axis, values in document.get("axes", {}).items():
        if not isinstance(values, list) or not values:
            raise GridInvalid(f"{origin}: axis {axis} needs a list of values")
        for value in values:
            cells.append(replace(base, **_overrides({axis: value}, origin), axis=axis))
    for table in document.get("cell", []):
        cells.append(replace(base, **_overrides(table, origin), axis="cell"))
    unique: list[Cell] = []
    for cell in cells:
        cell._check(origin)
        if all(replace(cell, axis="") != replace(seen, axis="") for seen in unique):
            unique.append(cell)
    timeout = document.get("timeout_s", 300.0)
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise GridInvalid(f"{origin}: timeout_s must be a positive number")
    return Grid(
        name=str(document.get("name", Path(origin).stem)),
        description=str(document.get("description", "")),
        cells=tuple(unique),
        timeout_s=float(timeout),
    )


def load_grid(name_or_path: str, package: str) -> Grid:
    """A grid shipped in ``package``'s ``grids/`` folder by name, or a grid file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return parse_grid(path.read_text(), str(path))
        except OSError as error:
            raise GridInvalid(f"{path}: {error.strerror}") from None
    folder = resources.files(package) / "grids"
    resource = folder / f"{name_or_path}.toml"
    if not resource.is_file():
        known = sorted(
            entry.name.removesuffix(".toml")
            for entry in folder.iterdir()
            if entry.name.endswith(".toml")
        )
        raise GridInvalid(f"no grid {name_or_path!r} (shipped: {', '.join(known)}; or a path)")
    return parse_grid(resource.read_text(), name_or_path)


def worst_first(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows by ``row[key]`` from the largest (worst) down; a row without it (the cell
    failed) counts as worst of all."""

    def badness(row: dict[str, Any]) -> float:
        value = row.get(key)
        return math.inf if value is None else float(value)

    return sorted(rows, key=badness, reverse=True)


def write_heatmap(
    rows: list[dict[str, Any]],
    metrics: list[tuple[str, str, float, float]],
    path: Path,
    title: str,
) -> Path:
    """One panel per metric (``(key, label, green, red)``): a row per axis of the grid,
    its values across, each square coloured by ``row[key]`` from green (at ``green`` and
    below) to red (at ``red`` and above); a failed cell (``status`` not "ok") grey.

    Each row of ``rows`` has ``index`` (its cell's number in the grid), ``cell``
    (``Cell.parameters()``) and the metrics' keys; a square shows the axis's value (or,
    for the grid's ``[[cell]]`` tables, ``#index``) and the metric.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        raise GridInvalid(
            "the heatmap needs matplotlib: pip install -e ./dev (shoal-dev)"
        ) from None
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["cell"]["axis"], []).append(row)
    names = list(groups)
    width = max(len(group) for group in groups.values())
    height = 0.9 + 0.75 * len(names) * len(metrics)
    figure, panels = plt.subplots(
        len(metrics), 1, figsize=(2.0 + 1.9 * width, height), dpi=100, squeeze=False
    )
    for (key, label, green, red), axes in zip(metrics, panels[:, 0], strict=True):
        matrix = [[math.nan] * width for _ in names]
        for y, name in enumerate(names):
            for x, row in enumerate(groups[name]):
                value = row.get(key)
                failed = row.get("status", "ok") != "ok"
                matrix[y][x] = math.nan if value is None or failed else float(value)
                text = "-" if value is None else f"{value:.2f}"
                if failed:
                    text = f"failed\n{text}"
                    axes.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, color="#c8c8c8"))
                axis = row["cell"]["axis"]
                caption = f"{row['cell'][axis]:g}" if axis in row["cell"] else f"#{row['index']}"
                axes.text(x, y, f"{caption}\n{text}", ha="center", va="center", fontsize=7)
        image = axes.imshow(matrix, cmap="RdYlGn_r", vmin=green, vmax=red, aspect="auto")
        axes.set_yticks(range(len(names)), names, fontsize=8)
        axes.set_xticks([])
        axes.set_title(label, fontsize=9)
        figure.colorbar(image, ax=axes, fraction=0.03)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / height))  # the title's own strip
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
