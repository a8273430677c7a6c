"""Address tokens: proof that a client receives datagrams at the address it sends from.

A UDP source address can be forged. The server's answer to ``HELLO`` (its certificate)
carries a token, HMAC-SHA256 of the asker's IP under a secret that changes every
``EPOCH`` seconds; a ``REGISTER`` must echo a token of the current or the previous
epoch for its source IP, so only a host that received the answer there can register
a device at that address (the idea of QUIC's address validation, RFC 9000 §8.1). It
costs the server no state per client, and tokens live one to two epochs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

EPOCH = 60.0
TOKEN_SIZE = 16


class AddressTokens:
    """Issue and check address tokens; time is passed in."""

    def __init__(self, secret: bytes | None = None, epoch: float = EPOCH) -> None:
        self._secret = secret or os.urandom(32)
        self.epoch = epoch

    def _token(self, ip: str, epoch_number: int) -> bytes:
        message = epoch_number.to_bytes(8, "big", signed=True) + ip.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:TOKEN_SIZE]

    def issue(self, ip: str, now: float) -> bytes:
        return self._token(ip, int(now // self.epoch))

    def valid(self, ip: str, token: bytes, now: float) -> bool:
        current = int(now // self.epoch)
        return any(
            hmac.compare_digest(self._token(ip, number), token) for number in (current, current - 1)
        )
