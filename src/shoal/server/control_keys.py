"""The control keys a P2P server shares with its devices, derived once per device.

A control key is X25519 of the server's certified key and the device's key, through
HKDF with the enrollment token (``shoal.core.identity.control_key``). The exchange costs
far more than checking a tag, so keys are cached (least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.core.identity import DeviceKey, control_key

DERIVED_KEYS = 4096
"""Keys kept: a registry of more devices derives the coldest again when they speak."""


class ControlKeys:
    """Control keys by device public key, bounded to ``DERIVED_KEYS``."""

    def __init__(self, identity: DeviceKey, enrollment_token: bytes) -> None:
        self.identity = identity
        self.enrollment_token = enrollment_token
        self._derived: OrderedDict[bytes, bytes] = OrderedDict()

    def key_for(self, public_key: bytes) -> bytes | None:
        """The control key shared with the holder of ``public_key`` (``None`` if it is
        not a usable X25519 key). Cached: the X25519 runs once per device, not per
        datagram."""
        key = self._derived.get(public_key)
        if key is not None:
            self._derived.move_to_end(public_key)
            return key
        try:
            key = control_key(
                self.identity.exchange(public_key),
                self.enrollment_token,
                public_key,
                self.identity.public_raw,
            )
        except ValueError:
            return None
        self._derived[public_key] = key
        if len(self._derived) > DERIVED_KEYS:
            self._derived.popitem(last=False)
        return key
