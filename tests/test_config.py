"""Settings files of the roles: flags > environment > file, secrets from files, and
``shoal client enroll`` leaving a file that ``shoal client run`` needs nothing else with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal import config
from shoal.commands.settings import settings_of


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def data_dir_with_status(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "status.json").write_text(json.dumps({"marker": name}))
    return directory


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    from_file = data_dir_with_status(tmp_path, "file")
    from_env = data_dir_with_status(tmp_path, "env")
    from_flag = data_dir_with_status(tmp_path, "flag")
    settings = tmp_path / "client.toml"
    settings.write_text(f'data_dir = "{from_file}"\n')

    def shown(*args: str, env: dict[str, str] | None = None) -> str:
        result = shoal("client", "status", "--json", "--config", str(settings), *args, env=env)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["marker"])

    assert shown() == "file"
    assert shown(env={"SHOAL_CLIENT_DATA_DIR": str(from_env)}) == "env"
    flag = ("--data-dir", str(from_flag))
    assert shown(*flag, env={"SHOAL_CLIENT_DATA_DIR": str(from_env)}) == "flag"


def test_the_default_file_is_found_and_a_named_missing_file_is_an_error(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "client.toml").write_text(f'data_dir = "{data_dir_with_status(tmp_path, "d")}"\n')
    found = shoal("client", "status", "--json", env={"SHOAL_CONFIG_DIR": str(etc)})
    assert found.returncode == 0 and json.loads(found.stdout)["marker"] == "d"
    missing = shoal("client", "status", env={"SHOAL_CLIENT_CONFIG": str(tmp_path / "none.toml")})
    assert missing.returncode != 0
    assert missing.stderr.strip().endswith("none.toml: no such configuration file")


def test_an_unknown_or_malformed_setting_is_one_line_naming_the_file(tmp_path: Path) -> None:
    settings = tmp_path / "client.toml"
    settings.write_text("data_port = 4000\ncache_sise = '2G'\n")
    result = shoal("client", "run", "--config", str(settings))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "unknown setting 'cache_sise' (did you mean cache_size?)" in result.stderr
    settings.write_text("data_port = \n")
    result = shoal("client", "run", "--config", str(settings))
    assert result.returncode != 0 and "not TOML" in result.stderr


def test_the_server_reads_its_key_from_a_file_that_only_it_may_read(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("k" * 40 + "\n")
    key.chmod(0o644)
    settings = tmp_path / "server.toml"
    settings.write_text(
        f'console_url = "https://127.0.0.1:9"\naddress = "127.0.0.1"\nserver_key_file = "{key}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
    )
    result = shoal("server", "run", "--config", str(settings))
    assert result.returncode != 0
    assert "readable by every user" in result.stderr
    key.chmod(0o600)
    settings.write_text(settings.read_text().replace(f'server_key_file = "{key}"', ""))
    missing = shoal("server", "run", "--config", str(settings))
    assert missing.returncode != 0
    assert "authentication key is missing: set server_key_file" in missing.stderr


def test_settings_round_trip_through_render() -> None:
    import tomllib

    text = config.render({"data_dir": 'C:\\shoal "data"', "data_port": 4000, "bind_ip": True})
    assert tomllib.loads(text) == {
        "data_dir": 'C:\\shoal "data"',
        "data_port": 4000,
        "bind_ip": True,
    }


@pytest.mark.parametrize("role", config.ROLES)
def test_every_setting_is_documented_in_deploy_md(role: str) -> None:
    from shoal.cli import load_all_commands

    load_all_commands()  # every command's options, so every setting

    text = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    section = text.split(f"## {role}.toml")[1].split("\n## ")[0]
    missing = [key for key in settings_of(role) if f"`{key}`" not in section]
    assert not missing, f"docs/deploy.md ({role}.toml) lacks {missing}"
