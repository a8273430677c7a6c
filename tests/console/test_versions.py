"""The version compatibility policy says who must upgrade, and to what."""

from __future__ import annotations

import pytest

from shoal.versions import IncompatibleVersion, InvalidVersion, Role, check_compatible


def test_same_or_newer_minor_is_accepted():
    check_compatible(Role.CONSOLE, Role.SERVER, "0.1.0", receiver_version="0.1.0")
    check_compatible(Role.CONSOLE, Role.SERVER, "0.3.2", receiver_version="0.1.0")


def test_too_old_sender_is_told_to_upgrade():
    with pytest.raises(IncompatibleVersion) as caught:
        check_compatible(Role.CONSOLE, Role.SERVER, "0.0.9", receiver_version="0.1.0")
    assert str(caught.value) == (
        "P2P server 0.0.9 is too old for console 0.1.0: upgrade the P2P server to 0.1.0 or later"
    )
    assert caught.value.upgrade is Role.SERVER


def test_newer_major_tells_the_receiver_to_upgrade():
    with pytest.raises(IncompatibleVersion) as caught:
        check_compatible(Role.SERVER, Role.CLIENT, "1.0.0", receiver_version="0.1.0")
    assert "upgrade the P2P server to 1.x" in str(caught.value)
    assert caught.value.upgrade is Role.SERVER


def test_older_major_must_reach_the_receivers_major():
    with pytest.raises(IncompatibleVersion, match=r"upgrade the client to 1\.0\.0 or later"):
        check_compatible(Role.SERVER, Role.CLIENT, "0.9.0", receiver_version="1.2.0")


def test_garbage_version_is_named():
    with pytest.raises(InvalidVersion, match="not a version: 'banana'"):
        check_compatible(Role.CONSOLE, Role.SERVER, "banana")
