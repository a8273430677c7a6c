"""Address validation and per-source limits: what keeps a shoal port from being a reflector.

Theory of operation
-------------------
A UDP source address can be forged. Anything that answers a datagram with more bytes
than it received can be turned against the forged address, the victim (a reflection
attack); QUIC's rule (RFC 9000 §8.1) is the one shoal follows: *until an address has
proven that it receives at that address, send it at most three times the bytes received
from it.*

The proof is a *token*: a keyed hash of the address and of the current epoch, sent only
to that address. An endpoint that echoes it receives there. The key never leaves this
object and the hash is recomputed on every check, so validating an address costs no
state at all (the SYN-cookie idea; RFC 9000 §8.1.4 asks that tokens cannot be forged or
moved to another address). Tokens of the current and the previous epoch are accepted,
so a token lives between one and two ``lifetime`` (RFC 9000 §8.1.3: a token SHOULD
expire).

``SourceLimiter`` is a token bucket per source IP, in a bounded table (least recently
seen forgotten first): a flood from one host is held to a rate, and a flood from forged
random sources costs a bounded table, never memory that grows with the flood. Time is
always passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from shoal.core.address import Address
from shoal.protocol.ratelimit import TokenBucket
from shoal.wire.messages import NO_TOKEN, TOKEN_SIZE

#: Seconds an epoch lasts: a token is accepted for one to two of them.
DEFAULT_TOKEN_LIFETIME = 600.0


class AddressValidator:
    """Makes and checks the address-validation tokens of one endpoint."""

    __slots__ = ("_key", "lifetime")

    def __init__(self, key: bytes | None = None, lifetime: float = DEFAULT_TOKEN_LIFETIME) -> None:
        if lifetime <= 0:
            raise ValueError("token lifetime must be positive")
        # A fresh secret per endpoint: a restarted process invalidates old tokens, and the
        # peer simply gets a new one (one more round trip).
        self._key = key if key is not None else secrets.token_bytes(16)
        self.lifetime = lifetime

    def _token(self, addr: Address, epoch: int) -> bytes:
        material = f"{addr[0]}|{addr[1]}|{epoch}".encode()
        token = hashlib.blake2s(material, key=self._key, digest_size=TOKEN_SIZE).digest()
        return token if token != NO_TOKEN else b"\x01" + token[1:]

    def token(self, addr: Address, now: float) -> bytes:
        """The token that proves ``addr`` received what we sent it (this epoch's)."""
        return self._token(addr, int(now // self.lifetime))

    def is_valid(self, token: bytes, addr: Address, now: float) -> bool:
        """Did ``addr`` echo a token we gave it (this epoch or the previous one)?"""
        if token == NO_TOKEN:
            return False
        epoch = int(now // self.lifetime)
        return hmac.compare_digest(token, self._token(addr, epoch)) or hmac.compare_digest(
            token, self._token(addr, epoch - 1)
        )


class SourceLimiter:
    """At most ``rate`` inputs per second per source IP (bursts of ``burst``)."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, source: str, now: float) -> bool:
        """Take one input from ``source`` if its bucket allows it."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(1, now)

    def __len__(self) -> int:
        return len(self._buckets)
