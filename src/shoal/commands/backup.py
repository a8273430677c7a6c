"""``backup`` and ``restore``: the same two commands under ``shoal console`` and ``shoal
server``, made once here for each (``add_backup_commands``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from shoal.commands.options import Role, data_dir_option, database_url_option

DATABASE_HELP = "PostgreSQL URL (pg_dump / pg_restore); SQLite in --data-dir without it."


@dataclass(frozen=True, slots=True)
class BackupTexts:
    """What differs between the roles' commands: their names for the role and help."""

    title: str  # "the console", "the P2P server"
    data_dir_help: str
    backup_help: str
    restore_help: str
    #: Said after a restore: how to start the restored role.
    start_hint: str


def add_backup_commands(group: click.Group, role: Role, texts: BackupTexts) -> None:
    """Add ``backup TARGET`` and ``restore SOURCE`` for ``role`` (``shoal.backup``) to
    ``group``."""

    def storage_options(command: Any) -> Any:
        command = database_url_option(role, DATABASE_HELP)(command)
        return data_dir_option(role, texts.data_dir_help)(command)

    @group.command("backup", help=texts.backup_help)
    @click.argument("target", type=click.Path(path_type=Path, file_okay=False))
    @storage_options
    def backup_command(target: Path, data_dir: Path, database_url: str | None) -> None:
        from shoal.backup import ROLES, backup

        manifest = backup(ROLES[role], data_dir, database_url, target)
        click.echo(
            f"backed up {texts.title} {manifest['version']} ({manifest['database']} database, "
            f"{len(manifest['files'])} files) into {target}"
        )

    @group.command("restore", help=texts.restore_help)
    @click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
    @storage_options
    def restore_command(source: Path, data_dir: Path, database_url: str | None) -> None:
        from shoal.backup import ROLES, restore

        manifest = restore(ROLES[role], source, data_dir, database_url)
        click.echo(
            f"restored the backup of {texts.title} of {manifest['created']} into {data_dir}; "
            f"start it with: {texts.start_hint.format(data_dir=data_dir)}"
        )
