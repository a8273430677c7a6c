"""``DATA_DIR/status.json``: what the running agent writes every second, and the human
view ``shoal client status`` renders of it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from shoal.client.host import ClientSetupError, write_json
from shoal.client.metrics import SILENT_WARNING

STATUS_FILE = "status.json"


def write_status(data_dir: Path, status: dict[str, Any]) -> None:
    path = data_dir / STATUS_FILE
    write_json(path, status, indent=1, sort_keys=True)


def read_status(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClientSetupError(
            f"{path}: no status yet (is `shoal client run --data-dir {data_dir}` running?)"
        ) from None
    except ValueError as error:
        raise ClientSetupError(f"{path}: unreadable status ({error})") from None
    return status


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


def render_status(status: dict[str, Any], width: int = 24) -> str:
    """The human view of ``shoal client status``."""
    lines = []
    age = time.time() - float(status.get("wall_time", 0))
    running = not status.get("stopped") and age < 10
    state = "running" if running else f"NOT RUNNING (last status {age:.0f} s ago)"
    lines.append(f"shoal client {status['version']}  device {status['device_id']}  [{state}]")
    office = status.get("office") or "none"
    lines.append(f"P2P server {status['server']}   office {office} ({status['office_type']})")
    licence = status.get("licence")
    if licence:
        over = licence["seats_over"]
        text = licence["state"] + (f": {over} seats over the licence" if over else "")
        lines.append(f"licence {text}")
    refusal = status.get("refusal")
    if refusal:
        lines.append(f"REFUSED ({refusal['cause']}): {refusal['message']}")
    lines.append(f"note: {status['note']}")
    trust = status.get("trust") or {}
    if trust.get("console_key"):
        lines.append(
            f"console key {trust['console_key']}, newest assignment document "
            f"{trust['highest_sequence']}; refused {trust['documents_refused']}, "
            f"taken from the kept copy {trust.get('documents_kept', 0)}, "
            f"rotation statements ignored {trust['rotations_ignored']}"
        )
    if trust.get("document_note"):
        lines.append(f"assignment document: {trust['document_note']}")
    downloads = status.get("downloads", [])
    if not downloads:
        lines.append("no assignments yet")
    for download in downloads:
        chunks, done = download["chunks"], download["chunks_done"]
        fraction = done / chunks if chunks else (1.0 if download["state"] == "complete" else 0)
        bar = "#" * round(fraction * width) + "-" * (width - round(fraction * width))
        lines.append(
            f"{download['content_id'][:12]}  {download['state']:<20} [{bar}] "
            f"{fraction * 100:5.1f}%  {done}/{chunks} chunks"
        )
        peers = ", ".join(download["peers_used"]) or "none"
        lines.append(
            f"    from peers {_bytes(download['bytes_from_peers'])}, from server "
            f"{_bytes(download['bytes_from_server'])}; peers used: {peers}"
        )
        if download["note"]:
            lines.append(f"    {download['note']}")
        if download.get("plaintext"):
            lines.append(f"    plaintext (confidential): {download['plaintext']}")
    lines.extend(render_installs(status.get("installs", [])))
    served = status.get("served", {})
    lines.append(
        f"served to peers: {served.get('chunks', 0)} chunks, {_bytes(served.get('bytes', 0))}"
    )
    discovery = (status.get("counters") or {}).get("discovery")
    if discovery:
        lines.append(
            f"discovery: {discovery['queries_sent']} queries sent, "
            f"{discovery['answers_received']} answers, "
            f"{discovery['out_of_office_answers']} out-of-office answers"
        )
    if status.get("discovery_hint"):
        lines.append(f"  {status['discovery_hint']}")
    if status.get("server_silent_seconds", 0) >= SILENT_WARNING:
        lines.append(
            f"P2P server silent for {status['server_silent_seconds']:.0f} s "
            "(is it running? UDP blocked?)"
        )
    return "\n".join(lines)


def render_installs(installs: list[dict[str, Any]]) -> list[str]:
    """The install part of ``shoal client status``: one line per version, then the
    note and the last lines of the command's output for a failed one."""
    lines = []
    for install in installs:
        exit_code = install.get("exit_code")
        code = "" if exit_code is None else f", exit code {exit_code}"
        lines.append(
            f"install {install['content_id'][:12]}  {install['state']}  "
            f"(attempts {install['attempts']}{code})"
        )
        if install.get("note"):
            lines.append(f"    {install['note']}")
        if install["state"] in ("failed", "uninstall failed") and install.get("output_tail"):
            tail = install["output_tail"].rstrip().splitlines()[-5:]
            lines.extend(f"    | {line}" for line in tail)
    return lines
