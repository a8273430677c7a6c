"""A record of every congestion-controller input in one process, for diagnosis.

``install()`` wraps the controllers' methods (``Ledbat`` and ``DelayReno``: ``on_ack``,
``on_congestion``, ``on_timeout``) in this process only, and returns the list each call
appends a row to, after the call, with the state it left:

    ack:        [t, "ack", newly_acked, in_flight, one_way_delay_us, queuing_delay_us,
                 base_delay_us, cwnd, ssthresh, aim_us, share, srtt, in_recovery]
    congestion: [t, "congestion", cwnd, ssthresh]   (a loss episode taken as congestion)
    timeout:    [None, "timeout", cwnd, ssthresh]   (persistent congestion, RFC 9002 §7.6)

``aim_us`` and ``share`` are LEDBAT's (``Ledbat.aim_us``, ``DeliveryShare.share``);
the foreground's target and 1.0 for ``DelayReno``. The pacing rate is ``gain x cwnd /
srtt`` (``Pacer``), the ACK spacing the difference of consecutive ``t``. A development
tool: the product never imports it (``shoal bench share --trace``, the simulator's
``shoal_dev.sim.share`` runs).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from shoal.protocol.transfer.congestion import DelayReno, Ledbat

Row = list[Any]


def install() -> list[Row]:
    """Wrap the controllers' methods; return the list their calls are recorded in."""
    rows: list[Row] = []
    for kind in (Ledbat, DelayReno):
        _wrap(kind, rows)
    return rows


def _aim(controller: Ledbat | DelayReno) -> tuple[float, float]:
    if isinstance(controller, Ledbat):
        return controller.aim_us, controller.share.share
    return controller.target_us, 1.0


def _wrap(kind: type[Ledbat] | type[DelayReno], rows: list[Row]) -> None:
    on_ack = kind.on_ack
    on_congestion = kind.on_congestion
    on_timeout = kind.on_timeout
    if getattr(on_ack, "traced", False):
        return

    @functools.wraps(on_ack)
    def traced_ack(
        self: Any, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int | None,
        in_recovery: bool = False, srtt: float = 0.0,
    ) -> None:  # fmt: skip
        on_ack(self, newly_acked, in_flight, now, one_way_delay_us, in_recovery, srtt)
        delay = self.delay
        aim, share = _aim(self)
        rows.append([
            now, "ack", newly_acked, in_flight, one_way_delay_us, delay.queuing_delay_us,
            delay.base_delay_us, round(self.cwnd, 2), round(min(self.ssthresh, 1e9), 2),
            round(aim), round(share, 3), round(srtt, 6), in_recovery,
        ])  # fmt: skip

    @functools.wraps(on_congestion)
    def traced_congestion(self: Any, now: float) -> None:
        on_congestion(self, now)
        rows.append([now, "congestion", round(self.cwnd, 2), round(min(self.ssthresh, 1e9), 2)])

    @functools.wraps(on_timeout)
    def traced_timeout(self: Any) -> None:
        on_timeout(self)
        rows.append([None, "timeout", round(self.cwnd, 2), round(min(self.ssthresh, 1e9), 2)])

    traced_ack.traced = True  # type: ignore[attr-defined]
    kind.on_ack = traced_ack  # type: ignore[method-assign]
    kind.on_congestion = traced_congestion  # type: ignore[method-assign]
    kind.on_timeout = traced_timeout  # type: ignore[method-assign]


def write(rows: list[Row], path: Path) -> None:
    """One JSON row per line."""
    with open(path, "w") as stream:
        for row in rows:
            stream.write(json.dumps(row) + "\n")
