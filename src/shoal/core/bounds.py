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

- **One WAN copy under churn** (``churn_bound``): T_lb1 assumes every client is there
  all along. A client killed at ``t_k`` (seconds from the office's start) and back at
  ``t_b`` on its store as it was can receive nothing in between, and its uplink sends
  nothing. Three more terms, each a lower bound on its own (derivation in
  ``churn_bound``): the client's own (``t_b + max(0, F - d t_k) / d``), the churned
  clients' together (what they cannot have received by ``t_k`` must come in after the
  first of them is back), and the office's uplinks less what the down clients' could
  not send (``((N - 1) F + sum of u (t_b - t_k)) / sum_u``). Without churn it is T_lb1.

Each bound says which term binds (``"wan"``, ``"downlink"``, ``"uplinks"``, for
Kumar-Ross's third term ``"aggregate"``, and under churn ``"rejoin"`` or ``"outage"``),
so a result can say what limited the office.
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
REJOIN = "rejoin"
"""A churned client's time: back from its outage, then what it still misses."""
OUTAGE = "outage"
"""The office's uplinks, less what the churned clients' uplinks could not send."""


@dataclass(frozen=True, slots=True)
class Outage:
    """A client of the office that was down during the download: killed ``down_at``
    and back ``back_at`` seconds after the office's start (on its store as it was), and
    its links in bit/s."""

    down_at: float
    back_at: float
    uplink_bps: float
    downlink_bps: float


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


def _sent(most: float, rate_bps: float, seconds: float) -> float:
    """Bits a link of ``rate_bps`` carries in ``seconds``, at most ``most``."""
    return 0.0 if seconds <= 0 else min(most, rate_bps * seconds)


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


def churn_bound(
    package_bytes: int,
    wan_bps: float,
    uplinks_bps: Sequence[float],
    min_downlink_bps: float = math.inf,
    outages: Sequence[Outage] = (),
    *,
    shares: bool = True,
) -> Bound:
    """T_lb1 when some clients were down for a while (``outages``, at most one per
    client, times from the office's start); T_lb1 itself without outages.

    With ``F`` the package in bits, ``k`` churned clients, each down from ``t_k`` to
    ``t_b`` with uplink ``u`` and downlink ``d``; every client must finish, so the last
    one ends no sooner than any of these (each a lower bound on its own, the largest
    binds):

    - T_lb1's terms (the outages take capacity away, never add it);
    - ``rejoin``, each churned client alone: it receives at most ``d`` per second, and
      nothing while down, so by ``t_k`` it holds at most ``min(F, d t_k)`` and the rest
      comes after ``t_b``: ``t_b + (F - min(F, d t_k)) / d``;
    - ``rejoin``, the churned clients together: by the last ``t_k`` they hold at most
      ``min(sum of min(F, d t_k), min(F, C_wan t_k) + sum_u t_k)`` (their downlinks; or
      one WAN copy plus everything every uplink could have sent, for a sharing office;
      the WAN alone for one that does not share), so ``k F`` less that comes in after the
      first of them is back, at most at ``min(sum of their d, C_wan + sum_u)`` (the WAN
      alone where the office does not share);
    - ``outage``, the office's uplinks (sharing offices): the ``N - 1`` copies that do not
      cross the WAN cross the uplinks, which by time ``T >= t_b`` (every churned client
      must be back to finish) could carry ``sum_u T`` less ``u (t_b - t_k)`` per churned
      client: ``((N - 1) F + sum of u (t_b - t_k)) / sum_u``.

    Not counted, so the bound stays below what any system can do: that a churned client
    was unfinished when killed (the scenarios kill unfinished clients only), a restarted
    process's own start-up, and whatever a partly received chunk was worth.
    """
    one_copy = one_copy_bound(package_bytes, wan_bps, uplinks_bps, min_downlink_bps, shares=shares)
    if not outages:
        return one_copy
    if len(outages) > len(uplinks_bps):
        raise ValueError(f"{len(outages)} outages in an office of {len(uplinks_bps)} clients")
    for outage in outages:
        if not 0 <= outage.down_at <= outage.back_at:
            raise ValueError(f"an outage ends before it begins: {outage}")
        if not outage.downlink_bps > 0 or not outage.uplink_bps >= 0:
            raise ValueError(f"an outage's link rates are wrong: {outage}")
    bits = package_bytes * 8
    terms = [(one_copy.seconds, one_copy.binding)]
    for outage in outages:
        held = _sent(bits, outage.downlink_bps, outage.down_at)
        terms.append((outage.back_at + (bits - held) / outage.downlink_bps, REJOIN))
    last_down = max(outage.down_at for outage in outages)
    uplinks = sum(uplinks_bps) if shares else 0.0
    supply = _sent(bits if shares else math.inf, wan_bps, last_down)
    supply += _sent(math.inf, uplinks, last_down)
    held = min(sum(_sent(bits, o.downlink_bps, o.down_at) for o in outages), supply)
    missing = len(outages) * bits - held
    rate = min(sum(outage.downlink_bps for outage in outages), wan_bps + uplinks)
    if missing > 0:
        terms.append((min(o.back_at for o in outages) + missing / rate, REJOIN))
    if shares and len(uplinks_bps) > 1 and 0 < uplinks < math.inf:
        lost = sum(outage.uplink_bps * (outage.back_at - outage.down_at) for outage in outages)
        terms.append((((len(uplinks_bps) - 1) * bits + lost) / uplinks, OUTAGE))
    return _largest(terms)
