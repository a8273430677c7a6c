"""The penalty box: misbehaving peers sit out a time that doubles with each offence."""

from __future__ import annotations

from shoal.protocol.penalty import PenaltyBox


def test_penalties_double_per_offence_halve_per_good_deed_and_stay_bounded() -> None:
    box: PenaltyBox[str] = PenaltyBox(first_seconds=10.0, max_seconds=40.0, capacity=2)
    assert box.penalise("A", 0.0) == 10.0
    assert box.penalised("A", 9.9) and not box.penalised("A", 10.0)
    assert box.penalise("A", 10.0) == 30.0  # 20 s now
    assert box.penalise("A", 30.0) == 70.0  # 40 s
    assert box.penalise("A", 70.0) == 110.0  # capped at 40 s
    box.forgive("A")
    box.forgive("A")
    assert box.penalise("A", 110.0) == 120.0  # back to 10 s after two good deeds
    box.forgive("A")  # back to the first penalty: forgotten
    assert len(box) == 0
    for peer in ("B", "C", "D"):
        box.penalise(peer, 0.0)
    assert len(box) == 2 and not box.penalised("B", 1.0)  # the oldest went first


def test_one_silence_is_one_offence_and_only_the_first_is_pardoned_by_speaking_again() -> None:
    box: PenaltyBox[str] = PenaltyBox(first_seconds=10.0, max_seconds=300.0)
    assert box.penalise("A", 0.0) == 10.0
    assert box.penalise("A", 0.0) == 10.0  # its other requests of the same silence
    assert box.pardon_first("A", 1.0) and not box.penalised("A", 1.0)  # back, announcing
    assert box.penalise("A", 6.0) == 26.0  # a second silence: 20 s
    assert not box.pardon_first("A", 7.0) and box.penalised("A", 7.0)
    assert not box.pardon_first("B", 7.0)  # nobody to pardon
