"""The agent's counters, for ``shoal client status --json`` and a node-exporter textfile.

Read from the machines' own counters (discovery, control, transfer engines, agent) at
each status write; the agent code is not touched. Discovery's counters are the ones that
tell "broadcast is blocked" from "no peer has it": queries sent with no answer at all
versus answers that say the peers lack the content, and answers from outside the office
(``out_of_office_answers``: another subnet heard our broadcast, or a misplaced peer).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

SILENT_WARNING = 3.0
"""Seconds without an answer from the P2P server before the agent says so (its
requests give up only after 15 s)."""


def _fields(counters: Any) -> dict[str, int]:
    return {
        field.name: int(getattr(counters, field.name)) for field in dataclasses.fields(counters)
    }


def agent_counters(agent: Any) -> dict[str, Any]:
    """Every counter of the agent's machines, grouped by machine (plain ints)."""
    discovery = _fields(agent.discovery.counters)
    # The names an operator looks for, beside the machine's own.
    discovery["out_of_office_answers"] = discovery["out_of_scope"]
    transfers = {
        mode.name.lower(): _fields(engine.counters) for mode, engine in agent.engines.items()
    }
    return {
        "discovery": discovery,
        "control": _fields(agent.control.counters),
        "transfer": transfers,
        "agent": _fields(agent.counters),
    }


def discovery_hint(counters: dict[str, Any]) -> str | None:
    """What the discovery counters say when downloads find no peer, or None."""
    discovery = counters.get("discovery", {})
    sent, answers = discovery.get("queries_sent", 0), discovery.get("answers_received", 0)
    if sent >= 3 and answers == 0 and discovery.get("out_of_scope", 0) == 0:
        return (
            f"{sent} discovery queries sent, no answer: no peer in the office holds the "
            "content yet, or broadcast is blocked on this subnet (`shoal doctor` tells which)"
        )
    return None


def textfile(counters: dict[str, Any], device_id: str) -> str:
    """The counters in Prometheus text format, for node-exporter's textfile collector."""
    lines = []
    for group, values in counters.items():
        if group == "transfer":
            for mode, engine in values.items():
                for name, value in engine.items():
                    metric = f"shoal_client_transfer_{name}_total"
                    lines.append(f'{metric}{{device_id="{device_id}",mode="{mode}"}} {value}')
            continue
        for name, value in values.items():
            lines.append(f'shoal_client_{group}_{name}_total{{device_id="{device_id}"}} {value}')
    return "\n".join(sorted(lines)) + "\n"


def write_textfile(path: Path, counters: dict[str, Any], device_id: str) -> None:
    """Write atomically (node-exporter must never read half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(textfile(counters, device_id))
    os.replace(temporary, path)
