"""Lower bounds on the time to deliver a package to every client of an office.

Both bounds look at one office: its WAN link (capacity ``C_wan``, the server's side of
the office), its ``N`` clients' downlinks (the slowest is ``d_min``) and uplinks (their
sum is ``sum_u``), and a package of ``F`` bits.

- **Kumar-Ross** (R. Kumar, K. W. Ross, "Peer-assisted file distribution: the minimum
  distribution time", 2006): ``max(F / C_wan, F / d_min, N F / (C_wan + sum_u))``. It lets
  the WAN carry as many copies as it likes, so it is reached only by a system that
  spends WAN bytes to save time.
- **One WAN copy** (``T_lb1``, issue 9): shoal promises that a package crosses an
  office's WAN about once. Then the office's clients must pass ``N - 1`` copies among
  themselves, all of it through their uplinks:
  ``max(F / C_wan, F / d_min, (N - 1) F / sum_u)``. A VPN office does not share, so
  each client's copy crosses the WAN: ``max(N F / C_wan, F / d_min)``.

Each bound says which term binds (``"wan"``, ``"downlink"``, ``"uplinks"``, or for
Kumar-Ross's third term ``"aggregate"``), so a result can say what limited the office.
Units: bytes for the package, bits per second for rates; an unshaped (unknown) link is
``math.inf``. Pure functions, standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WAN = "wan"
DOWNLINK = "downlink"
UPLINKS = "uplinks"
AGGREGATE = "aggregate"


@dataclass(frozen=True, slots=True)
class Bound:
    """A lower bound in seconds and the term that gives it."""

    seconds: float
    binding: str


def _largest(terms: Sequence[tuple[float, str]]) -> Bound:
    """The largest term; on a tie, the first one listed (the WAN before the LAN)."""
    seconds, binding = terms[0]
    for value, name in terms[1:]:
        if value > seconds:
            seconds, binding = value, name
    return Bound(seconds, binding)


def _check(package_bytes: int, wan_bps: float, uplinks_bps: Sequence[float]) -> None:
    if package_bytes < 0:
        raise ValueError(f"package size {package_bytes} is negative")
    if not wan_bps > 0:
        raise ValueError(f"WAN rate {wan_bps} bit/s is not positive")
    if not uplinks_bps:
        raise ValueError("an office needs at least one client")
    if any(not rate >= 0 for rate in uplinks_bps):
        raise ValueError(f"an uplink rate is negative: {list(uplinks_bps)}")


def _downlink_seconds(bits: float, min_downlink_bps: float) -> float:
    if not min_downlink_bps > 0:
        raise ValueError(f"downlink rate {min_downlink_bps} bit/s is not positive")
    return bits / min_downlink_bps


def kumar_ross_bound(
    package_bytes: int,
    wan_bps: float,
    uplinks_bps: Sequence[float],
    min_downlink_bps: float = math.inf,
    *,
    shares: bool = True,
) -> Bound:
    """Kumar-Ross minimum distribution time for one office, in seconds.

    ``uplinks_bps`` holds one rate per client (so ``N = len(uplinks_bps)``); a VPN office
    (``shares=False``) gets no help from its clients' uplinks.
    """
    _check(package_bytes, wan_bps, uplinks_bps)
    bits = package_bytes * 8
    clients = len(uplinks_bps)
    uplinks = sum(uplinks_bps) if shares else 0.0
    return _largest(
        [
            (bits / wan_bps, WAN),
            (_downlink_seconds(bits, min_downlink_bps), DOWNLINK),
            (clients * bits / (wan_bps + uplinks), AGGREGATE),
        ]
    )


def one_copy_bound(
    package_bytes: int,
    wan_bps: float,
    uplinks_bps: Sequence[float],
    min_downlink_bps: float = math.inf,
    *,
    shares: bool = True,
) -> Bound:
    """``T_lb1``: the minimum time when the package crosses the office's WAN once.

    ``max(F / C_wan, F / d_min, (N - 1) F / sum_u)``; for an office that does not share
    (VPN, ``shares=False``) every copy crosses the WAN: ``max(N F / C_wan, F / d_min)``.
    """
    _check(package_bytes, wan_bps, uplinks_bps)
    bits = package_bytes * 8
    clients = len(uplinks_bps)
    downlink = (_downlink_seconds(bits, min_downlink_bps), DOWNLINK)
    if not shares:
        return _largest([(clients * bits / wan_bps, WAN), downlink])
    uplinks = sum(uplinks_bps)
    if clients == 1:
        passed = 0.0  # nobody to pass a copy to
    elif uplinks == 0:
        passed = math.inf
    else:
        passed = (clients - 1) * bits / uplinks
    return _largest([(bits / wan_bps, WAN), downlink, (passed, UPLINKS)])
