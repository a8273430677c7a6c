"""The lower bounds of ``shoal.core.bounds``, against figures worked out by hand."""

from __future__ import annotations

import math

import pytest

from shoal.core.bounds import Bound, Outage, churn_bound, kumar_ross_bound, one_copy_bound
from shoal_dev.lab.scenario import OfficeScenario
from shoal_dev.sweep import Cell

MIB = 1024 * 1024
MBIT = 1e6


def test_slow_uplinks_bind_the_one_copy_bound_but_not_kumar_ross() -> None:
    # Issue 9's slow-uplinks office: 16 clients, 20 Mbit/s up, 100 down, WAN 100 Mbit/s,
    # 32 MiB. F = 268,435,456 bits.
    #   F / C_wan            = 2.684 s
    #   F / d_min            = 2.684 s
    #   (N-1) F / sum_u      = 15 * 268,435,456 / 320e6 = 12.583 s    <- binds T_lb1
    #   N F / (C_wan + sum_u) = 16 * 268,435,456 / 420e6 = 10.226 s   <- binds Kumar-Ross
    uplinks = [20 * MBIT] * 16
    one_copy = one_copy_bound(32 * MIB, 100 * MBIT, uplinks, 100 * MBIT)
    assert one_copy.binding == "uplinks"
    assert one_copy.seconds == pytest.approx(12.583, abs=1e-3)
    kumar_ross = kumar_ross_bound(32 * MIB, 100 * MBIT, uplinks, 100 * MBIT)
    assert kumar_ross.binding == "aggregate"
    assert kumar_ross.seconds == pytest.approx(10.226, abs=1e-3)


def test_a_slow_wan_binds_both() -> None:
    # branch-flash: 12 clients on 1 Gbit/s, WAN 50 Mbit/s, 64 MiB: F / C_wan = 10.737 s;
    # the uplinks would pass 11 copies in 11 * 536,870,912 / 12e9 = 0.492 s.
    uplinks = [1000 * MBIT] * 12
    expected = Bound(pytest.approx(10.737, abs=1e-3), "wan")
    assert one_copy_bound(64 * MIB, 50 * MBIT, uplinks, 1000 * MBIT) == expected
    assert kumar_ross_bound(64 * MIB, 50 * MBIT, uplinks, 1000 * MBIT) == expected


def test_a_slow_downlink_binds() -> None:
    # 4 clients, 100 Mbit/s up, 10 down, WAN 500 Mbit/s, 16 MiB: F / d_min = 13.422 s;
    # WAN 0.268 s, uplinks 3 * 134,217,728 / 400e6 = 1.007 s.
    bound = one_copy_bound(16 * MIB, 500 * MBIT, [100 * MBIT] * 4, 10 * MBIT)
    assert bound.binding == "downlink"
    assert bound.seconds == pytest.approx(13.422, abs=1e-3)


def test_the_uplinks_term_counts_each_client_once_even_when_they_differ() -> None:
    # 3 clients with 10, 20 and 30 Mbit/s up: 2 copies of 8 MiB (67,108,864 bits) over
    # 60 Mbit/s = 2.237 s; WAN 1 Gbit/s 0.067 s.
    bound = one_copy_bound(8 * MIB, 1000 * MBIT, [10 * MBIT, 20 * MBIT, 30 * MBIT])
    assert bound == Bound(pytest.approx(2.237, abs=1e-3), "uplinks")


def test_a_vpn_office_pulls_every_copy_over_the_wan() -> None:
    # 6 clients, WAN 50 Mbit/s, 64 MiB: 6 * 536,870,912 / 50e6 = 64.425 s, whatever the
    # uplinks; Kumar-Ross gives the same (no uplinks to add).
    uplinks = [1000 * MBIT] * 6
    vpn = one_copy_bound(64 * MIB, 50 * MBIT, uplinks, shares=False)
    assert vpn == Bound(pytest.approx(64.425, abs=1e-3), "wan")
    assert kumar_ross_bound(64 * MIB, 50 * MBIT, uplinks, shares=False).seconds == (
        pytest.approx(64.425, abs=1e-3)
    )


def test_one_client_alone_and_unshaped_links() -> None:
    # One client: nobody to pass a copy to, the WAN binds (8 MiB at 10 Mbit/s = 6.711 s).
    alone = one_copy_bound(8 * MIB, 10 * MBIT, [0.0])
    assert alone == Bound(pytest.approx(6.711, abs=1e-3), "wan")
    # Unshaped (infinite) uplinks and downlinks leave only the WAN.
    unshaped = one_copy_bound(8 * MIB, 10 * MBIT, [math.inf] * 5)
    assert unshaped.binding == "wan"
    # Clients that cannot upload never finish when there is more than one of them.
    assert one_copy_bound(8 * MIB, 10 * MBIT, [0.0, 0.0]).seconds == math.inf


def test_the_one_copy_bound_is_never_below_kumar_ross() -> None:
    for clients in (1, 2, 4, 16, 24):
        for up in (10, 20, 100, 1000):
            for wan in (10, 50, 500):
                uplinks = [up * MBIT] * clients
                one_copy = one_copy_bound(32 * MIB, wan * MBIT, uplinks, 100 * MBIT)
                kumar_ross = kumar_ross_bound(32 * MIB, wan * MBIT, uplinks, 100 * MBIT)
                assert one_copy.seconds >= kumar_ross.seconds * (1 - 1e-12)


@pytest.mark.parametrize(
    ("size", "wan", "uplinks", "downlink"),
    [
        (-1, 1.0, [1.0], 1.0),
        (1, 0.0, [1.0], 1.0),
        (1, 1.0, [], 1.0),
        (1, 1.0, [-1.0], 1.0),
        (1, 1.0, [1.0], 0.0),
    ],
)
def test_impossible_offices_are_refused(
    size: int, wan: float, uplinks: list[float], downlink: float
) -> None:
    with pytest.raises(ValueError):
        one_copy_bound(size, wan, uplinks, downlink)
    with pytest.raises(ValueError):
        kumar_ross_bound(size, wan, uplinks, downlink)


def test_a_lab_office_reports_both_bounds() -> None:
    office = OfficeScenario("branch", "Default", 16, wan_mbit=100, client_up_mbit=20,
                            client_down_mbit=100)  # fmt: skip
    assert office.one_copy(32 * MIB) == one_copy_bound(
        32 * MIB, 100 * MBIT, [20 * MBIT] * 16, 100 * MBIT
    )
    assert office.lower_bound_seconds(32 * MIB) == pytest.approx(10.226, abs=1e-3)
    vpn = OfficeScenario("home", "VPN", 3, wan_mbit=10)
    assert vpn.one_copy(MIB).seconds == pytest.approx(3 * MIB * 8 / 10e6)


def test_a_churned_client_cannot_finish_before_it_is_back_and_has_received_the_rest() -> None:
    # The default sim grid's cell 20: 8 clients on 20/20 Mbit/s links, WAN 100, 4 MiB
    # (F = 33,554,432 bits); T_lb1 = F / d = 1.678 s. Four clients down from
    # 0.3 x T_lb1 = 0.503 s to 3.503 s: each held at most d x 0.503 s = 10.07 Mbit, so the
    # other 23.49 Mbit come after 3.503 s at 20 Mbit/s: 3.503 + 1.174 = 4.678 s.
    one_copy = one_copy_bound(4 * MIB, 100 * MBIT, [20 * MBIT] * 8, 20 * MBIT)
    at = 0.3 * one_copy.seconds
    outages = [Outage(at, at + 3.0, 20 * MBIT, 20 * MBIT)] * 4
    bound = churn_bound(4 * MIB, 100 * MBIT, [20 * MBIT] * 8, 20 * MBIT, outages)
    assert bound == Bound(pytest.approx(4.678, abs=1e-3), "rejoin")
    assert Cell(8, 20, 20, 100, 4, churn=0.5).churn_bound() == bound


def test_churned_clients_together_miss_what_the_office_could_not_yet_pass_them() -> None:
    # Cell 12: 8 clients, 20 up / 100 down, WAN 100, 4 MiB, four down from 0.440 s to
    # 3.440 s. Alone each could hold all of F by then (100 Mbit/s x 0.44 s > F), but
    # together they held at most one WAN copy plus every uplink's 0.44 s:
    # 33.55 + 160 x 0.4404 = 104.02 Mbit of the 134.22 they need; the other 30.20 Mbit
    # come after 3.440 s at most at C_wan + sum_u = 260 Mbit/s: 3.440 + 0.116 = 3.557 s.
    bound = Cell(8, 20, 100, 100, 4, churn=0.5).churn_bound()
    assert bound == Bound(pytest.approx(3.557, abs=1e-3), "rejoin")
    # A quarter of the office (cell 11): nothing missing together; back at 3.440 s binds.
    assert Cell(8, 20, 100, 100, 4, churn=0.25).churn_bound() == Bound(
        pytest.approx(3.440, abs=1e-3), "rejoin"
    )


def test_the_uplinks_a_churned_client_lost_count_against_the_office() -> None:
    # 4 clients on 10 Mbit/s up, 1000 down, 8 MiB (67,108,864 bits): T_lb1 = 3F / 40e6 =
    # 5.033 s. One client down from 1 s to 4 s sends nothing for 3 s: the uplinks carry
    # 3F + 10e6 x 3 = 231.33 Mbit at 40 Mbit/s = 5.783 s (back at 4 s: 4.000 s).
    uplinks = [10 * MBIT] * 4
    bound = churn_bound(8 * MIB, 1000 * MBIT, uplinks, 1000 * MBIT,
                        [Outage(1.0, 4.0, 10 * MBIT, 1000 * MBIT)])  # fmt: skip
    assert bound == Bound(pytest.approx(5.783, abs=1e-3), "outage")


def test_the_churn_bound_is_t_lb1_without_churn_and_never_below_it() -> None:
    uplinks = [20 * MBIT] * 8
    assert churn_bound(4 * MIB, 100 * MBIT, uplinks, 100 * MBIT) == one_copy_bound(
        4 * MIB, 100 * MBIT, uplinks, 100 * MBIT
    )
    for shares in (True, False):
        one_copy = one_copy_bound(4 * MIB, 100 * MBIT, uplinks, 100 * MBIT, shares=shares)
        previous = 0.0
        for down_s in (0.0, 0.5, 1.0, 3.0):
            outages = [Outage(0.2, 0.2 + down_s, 20 * MBIT, 100 * MBIT)] * 2
            bound = churn_bound(4 * MIB, 100 * MBIT, uplinks, 100 * MBIT, outages,
                                shares=shares)  # fmt: skip
            assert bound.seconds >= max(one_copy.seconds, 0.2 + down_s, previous)
            previous = bound.seconds
    with pytest.raises(ValueError):
        churn_bound(MIB, MBIT, [MBIT], MBIT, [Outage(2.0, 1.0, MBIT, MBIT)])
