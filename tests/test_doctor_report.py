"""``shoal doctor``'s table and JSON: the fix under each failure, the exit code."""

from __future__ import annotations

import json

import pytest

from shoal.commands.doctor import _report
from shoal.doctor import render_json, render_table
from shoal.health import CheckResult

CHECKS = [
    CheckResult("server reachable", True, "10.0.0.5:41441 answers"),
    CheckResult("broadcast", False, "no peer answered", "allow UDP broadcast to port 41440"),
]


def test_the_table_shows_the_fix_under_each_failure_only() -> None:
    lines = render_table(CHECKS).splitlines()
    assert lines[0].startswith("ok  ") and "fix:" not in lines[0]
    assert lines[1].startswith("FAIL  broadcast")
    assert lines[2].strip() == "fix: allow UDP broadcast to port 41440"
    assert lines[-1] == "1 passed, 1 failed"


def test_json_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(render_json(CHECKS))["ok"] is False
    with pytest.raises(SystemExit) as failed:
        _report(CHECKS, as_json=True)
    assert failed.value.code == 1
    with pytest.raises(SystemExit) as passed:
        _report(CHECKS[:1], as_json=False)
    assert passed.value.code == 0
    capsys.readouterr()
