"""The store and start-up: migrations match the models on both databases; TLS options."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shoal.console import db
from shoal.console.security import create_self_signed_certificate
from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, open_console

from .vendor import vendor_public_key_file


def test_shipped_migrations_build_exactly_the_models_schema(
    database_url: str | None, tmp_path: Path
) -> None:
    engine = db.make_engine(db.database_url(database_url, tmp_path))
    db.migrate(engine)
    db.migrate(engine)  # applying again at the next start changes nothing
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.Base.metadata)
    engine.dispose()
    assert differences == [], "models changed without a migration: add one in migrations/versions"


def test_a_given_certificate_is_used_and_none_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, "x" * 12)
    cert, key = tmp_path / "given.pem", tmp_path / "given.key"
    create_self_signed_certificate(cert, key, datetime.now(UTC), extra_names=("console.example",))
    vendor = vendor_public_key_file(tmp_path)
    config = ConsoleConfig(
        data_dir=tmp_path / "data", tls_cert=cert, tls_key=key, vendor_public_key=vendor
    )
    state = open_console(config)
    assert (state.cert_path, state.key_path) == (cert, key)
    assert not (tmp_path / "data" / "tls").exists()
    state.close()
    with pytest.raises(ValueError, match="both"):
        open_console(
            ConsoleConfig(data_dir=tmp_path / "data", tls_cert=cert, vendor_public_key=vendor)
        )
