"""``shoal server backup`` / ``restore``: the same server (id, key, state) again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from shoal.cli import cli
from shoal.server.service import ServerConfig, ServerService
from test_server_metrics import _service


def test_a_restored_server_keeps_its_id_key_and_state(tmp_path: Path) -> None:
    original = _service(tmp_path, 1)
    original.state.put({"cursor": "42"})
    server_id, public_key = original.server_id, original.identity.public_raw
    original.link.close()
    runner = CliRunner()
    backup = runner.invoke(
        cli, ["server", "backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "server")]
    )
    assert backup.exit_code == 0, backup.output
    restore = runner.invoke(
        cli, ["server", "restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "again")]
    )
    assert restore.exit_code == 0, restore.output
    config: ServerConfig = original.config
    again = ServerService(replace(config, data_dir=tmp_path / "again"))
    assert again.server_id == server_id
    assert again.identity.public_raw == public_key  # clients' pinned certificate still holds
    assert again.state.get("cursor") == "42"
    again.link.close()
