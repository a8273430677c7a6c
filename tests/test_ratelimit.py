import pytest

from shoal.protocol.ratelimit import TokenBucket


def test_the_average_rate_stays_under_the_cap() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0, now=0.0)
    now, taken = 0.0, 0
    while now < 100.0:
        if bucket.take(100, now):
            taken += 100
        now += 0.01
    assert 100_000 <= taken <= 100_000 + 500 + 100


def test_ready_at_says_when_a_chunk_may_go() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1000.0, now=0.0)
    assert bucket.take(1000, 0.0)
    assert not bucket.take(500, 0.1)
    assert bucket.ready_at(500, 0.1) == pytest.approx(0.5)
    assert bucket.take(500, 0.5)


def test_a_chunk_larger_than_the_burst_still_passes_from_a_full_bucket() -> None:
    bucket = TokenBucket(rate=10.0, burst=100.0, now=0.0)
    assert bucket.take(1000, 0.0)
    assert not bucket.take(1, 1.0)  # in debt by 890 bytes: 89.1 s of refill first
    assert bucket.ready_at(1, 1.0) == pytest.approx(90.1)
