"""docs/grafana-shoal.json queries only metrics that shoal exports and documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_metric_of_the_dashboard_is_exported_and_documented() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-shoal.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {name for expr in expressions for name in re.findall(r"\bshoal_\w+", expr)}
    assert len(names) >= 10
    sources = (ROOT / "src/shoal/console/metrics.py").read_text() + (
        ROOT / "src/shoal/server/metrics.py"
    ).read_text()
    documentation = (ROOT / "docs" / "operations.md").read_text()
    for name in names:
        family = name.removesuffix("_total")
        exported = f'"{family}"' in sources or (
            family.startswith("shoal_server_transfer_") and "shoal_server_transfer_" in sources
        )
        assert exported, f"{name} is not exported"
        assert family in documentation, f"{name} is not in docs/operations.md"
