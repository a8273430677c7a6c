"""Login throttling: exponential backoff per user name and per source address.

Theory of operation
-------------------
Every login attempt is counted *before* its password is checked, against two keys: the
user name (case-folded) and the source address. Counting first means that attempts
sent in parallel cannot all slip through before the first failure is recorded. A key
with ``free_failures`` or more counted attempts is blocked for
``base_delay * 2 ** (count - free_failures)`` seconds (capped at ``max_delay``); an
attempt on a blocked key is answered 429 with ``Retry-After`` without checking the
password, and is not counted (so waiting the time out always works).

A successful login forgets the user name's failures and takes its own attempt back
from the source's count (an administrator who logs in from an address does not
clear the failures of others guessing from it). A key with no attempt for
``forget_after`` seconds is forgotten. At most ``max_keys`` keys are kept (the least
recently used go first), so a flood of made-up user names cannot exhaust memory.

The state is in memory, per console process: a restart forgets it, as it forgets
every block. Time is passed in (seconds), so tests use a fake clock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass(slots=True)
class _Attempts:
    count: int
    blocked_until: float
    last: float


class LoginThrottle:
    """Counts login attempts per key and says how long a key must wait."""

    def __init__(
        self,
        free_failures: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        forget_after: float = 3600.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._keys: OrderedDict[Key, _Attempts] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys_for(username: str, source: str) -> tuple[Key, Key]:
        return ("user", username.casefold()), ("source", source)

    def _current(self, key: Key, now: float) -> _Attempts | None:
        attempts = self._keys.get(key)
        if attempts is not None and now - attempts.last > self.forget_after:
            del self._keys[key]
            return None
        return attempts

    def attempt(self, keys: tuple[Key, ...], now: float) -> int:
        """Count an attempt on every key, or return the seconds to wait (then nothing
        is counted). 0 means: go on and check the password."""
        with self._lock:
            wait = 0.0
            for key in keys:
                attempts = self._current(key, now)
                if attempts is not None:
                    wait = max(wait, attempts.blocked_until - now)
            if wait > 0:
                return max(1, math.ceil(wait))
            for key in keys:
                attempts = self._current(key, now) or _Attempts(0, 0.0, now)
                attempts.count += 1
                attempts.last = now
                if attempts.count >= self.free_failures:
                    delay = self.base_delay * 2 ** min(attempts.count - self.free_failures, 30)
                    attempts.blocked_until = now + min(delay, self.max_delay)
                self._keys[key] = attempts
                self._keys.move_to_end(key)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
            return 0

    def succeeded(self, user_key: Key, source_key: Key) -> None:
        """The password was right: forget the user name's failures, and take this
        attempt back from the source's count."""
        with self._lock:
            self._keys.pop(user_key, None)
            attempts = self._keys.get(source_key)
            if attempts is not None:
                attempts.count -= 1
                if attempts.count < self.free_failures:
                    attempts.blocked_until = 0.0
                if attempts.count <= 0:
                    del self._keys[source_key]

    def failures(self, key: Key) -> int:
        """Attempts counted on ``key`` (for logs and tests)."""
        with self._lock:
            attempts = self._keys.get(key)
            return attempts.count if attempts else 0
