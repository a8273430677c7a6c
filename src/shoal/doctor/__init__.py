"""``shoal doctor``: check a device or a P2P server, and say how to fix what fails.

Each check is a ``shoal.health.CheckResult`` (name, ok, what was seen, the fix). The
command prints them as a table (or ``--json``) and exits 1 when any failed, so it can
gate a deployment script. ``client.py`` and ``server.py`` hold each role's checks;
``probes.py`` the network probes they share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shoal.health import CheckResult


def render_table(checks: Sequence[CheckResult]) -> str:
    """Checks as a text table: status, name, what was seen; the fix under each failure."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        lines.append(f"{mark}  {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"      {'':<{width}}  fix: {check.fix}")
    failed = sum(1 for check in checks if not check.ok)
    lines.append(f"{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)


def render_json(checks: Sequence[CheckResult]) -> str:
    return json.dumps(
        {"ok": all(check.ok for check in checks), "checks": [c.as_dict() for c in checks]},
        sort_keys=True,
    )
