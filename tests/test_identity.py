"""A device's key pair and ID, and the client's persisted trust state."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shoal.client.trust import TrustState, TrustStateError
from shoal.core.errors import KeyFileError
from shoal.core.identity import DeviceKey, device_id_of
from shoal.core.signing import SigningKey


def test_device_key_is_created_once_private_and_names_its_device(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    first = DeviceKey.load_or_create(path)
    again = DeviceKey.load_or_create(path)
    assert again.public_raw == first.public_raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.device_id == device_id_of(first.public_raw)
    assert DeviceKey.generate().device_id != first.device_id


def test_a_truncated_device_key_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="32 bytes"):
        DeviceKey.load_or_create(path)


def test_both_sides_of_an_exchange_derive_the_same_secret() -> None:
    device, server = DeviceKey.generate(), DeviceKey.generate()
    assert device.exchange(server.public_raw) == server.exchange(device.public_raw)


def test_trust_state_survives_a_restart_and_never_lowers_its_sequence(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    console_key = SigningKey.generate().verify_key
    state = TrustState((console_key.raw,)).with_sequence(7).with_sequence(3)
    state.save(path)
    loaded = TrustState.load(path)
    assert loaded.highest_sequence == 7
    assert loaded.console_key.raw == console_key.raw


def test_a_device_without_trust_state_is_told_to_enrol(tmp_path: Path) -> None:
    with pytest.raises(TrustStateError, match="not enrolled"):
        TrustState.load(tmp_path / "trust.json")
    (tmp_path / "trust.json").write_text('{"format": "shoal-trust-1", "console_keys": []}')
    with pytest.raises(TrustStateError, match="malformed"):
        TrustState.load(tmp_path / "trust.json")
