"""Which discovery peers proved their address, and what may still be sent to each
(RFC 9000 §8.1): the bookkeeping behind every datagram ``DiscoveryMachine`` sends.

Two budgets. A *reply* to a datagram (an answer, an echo, a query back, a version
error) and whatever else that datagram makes us send at once total at most three times
its size, to a proven address too: the source of a datagram can be forged, a proven
peer's as well as any other, so nothing is reflected beyond 3x whoever is named as its
source. And an address that has not proven it receives there (it echoed no token of
ours yet) gets at most three times the bytes received from it, in all (its *credit*):
replies and pushes alike. A proven address gets pushes and periodic queries freely.
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.core.address import Address
from shoal.wire.messages import AMPLIFICATION_FACTOR

#: Addresses whose credit or validation is remembered (least recently seen forgotten).
MAX_TRACKED_ADDRESSES = 4096
#: Credit never grows beyond this many bytes (four full datagrams' worth of answers):
#: an address cannot save up for a burst.
MAX_CREDIT = AMPLIFICATION_FACTOR * 1400 * 4


class AddressCredit:
    """Proven addresses (for ``lifetime`` seconds each), the credit of the others, and
    what the last datagram received may still draw in reply."""

    __slots__ = ("_credit", "_reply_budget", "_validated", "lifetime")

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        #: Address -> when it last proved it receives there (a valid echoed token).
        self._validated: OrderedDict[Address, float] = OrderedDict()
        #: Address (unproven) -> bytes we may still send it (RFC 9000 §8.1).
        self._credit: OrderedDict[Address, int] = OrderedDict()
        #: Bytes the datagram being handled may still draw in reply, to any address.
        self._reply_budget = 0

    def earn(self, addr: Address, size: int) -> None:
        """``addr`` sent us ``size`` bytes: the replies to them, and (while it is
        unproven) all we send it, may be three times as many."""
        self._reply_budget = AMPLIFICATION_FACTOR * size
        credit = self._credit.get(addr, 0) + AMPLIFICATION_FACTOR * size
        self._credit[addr] = min(credit, MAX_CREDIT)
        self._credit.move_to_end(addr)
        if len(self._credit) > MAX_TRACKED_ADDRESSES:
            self._credit.popitem(last=False)

    def prove(self, addr: Address, now: float) -> None:
        """``addr`` echoed our token: it receives there."""
        self._validated[addr] = now
        self._validated.move_to_end(addr)
        if len(self._validated) > MAX_TRACKED_ADDRESSES:
            self._validated.popitem(last=False)
        self._credit.pop(addr, None)

    def is_validated(self, addr: Address, now: float) -> bool:
        proven = self._validated.get(addr)
        if proven is None:
            return False
        if now - proven > self.lifetime:
            del self._validated[addr]  # prove it again: our next HAVE carries a token
            return False
        return True

    def fits(self, addr: Address, size: int, now: float, *, reply: bool) -> bool:
        """Could ``size`` bytes go to ``addr`` now (would ``spend`` allow them)?"""
        if reply and size > self._reply_budget:
            return False
        return self.is_validated(addr, now) or size <= self._credit.get(addr, 0)

    def spend(self, addr: Address, size: int, now: float, *, reply: bool) -> bool:
        """Send ``size`` bytes to ``addr``, a ``reply`` to the datagram being handled or
        of our own accord? False if it exceeds a budget (nothing is spent then)."""
        if not self.fits(addr, size, now, reply=reply):
            return False
        if reply:
            self._reply_budget -= size
        if not self.is_validated(addr, now):
            self._credit[addr] -= size
        return True
