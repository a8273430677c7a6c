from shoal.core.ids import ContentId
from shoal.server.rendezvous import Decision, RendezvousTable

CONTENT = ContentId(bytes(range(32)))
OTHER = ContentId(bytes(32))


def test_one_wan_download_per_office_and_content() -> None:
    table = RendezvousTable(lease_seconds=10)
    assert table.request("branch-1", CONTENT, "dev-a", now=0).decision is Decision.GRANTED
    second = table.request("branch-1", CONTENT, "dev-b", now=1)
    assert (second.decision, second.holder) == (Decision.REDIRECTED, "dev-a")
    # Another office, or another content, is independent.
    assert table.request("branch-2", CONTENT, "dev-c", now=1).decision is Decision.GRANTED
    assert table.request("branch-1", OTHER, "dev-b", now=1).decision is Decision.GRANTED


def test_the_holder_renews_and_a_dead_holder_is_taken_over() -> None:
    table = RendezvousTable(lease_seconds=10)
    table.request("b", CONTENT, "dev-a", now=0)
    table.request("b", CONTENT, "dev-a", now=8)  # renews
    assert table.request("b", CONTENT, "dev-b", now=15).decision is Decision.REDIRECTED
    assert table.request("b", CONTENT, "dev-b", now=18).decision is Decision.GRANTED
    assert table.takeovers == 1
    assert table.holder("b", CONTENT, now=18) == "dev-b"


def test_release_hands_over_at_once_and_expire_bounds_memory() -> None:
    table = RendezvousTable(lease_seconds=10)
    table.request("b", CONTENT, "dev-a", now=0)
    table.release("b", CONTENT, "dev-b")  # not the holder: ignored
    assert table.holder("b", CONTENT, now=1) == "dev-a"
    table.release("b", CONTENT, "dev-a")
    assert table.request("b", CONTENT, "dev-b", now=1).decision is Decision.GRANTED
    table.expire(now=100)
    assert table.holder("b", CONTENT, now=100) is None


def test_a_holder_that_keeps_fetching_keeps_its_lease_when_renewals_are_lost() -> None:
    """Renewals lost in a congested uplink's queue: the chunks it fetches prove it alive."""
    table = RendezvousTable(lease_seconds=10)
    table.request("b", CONTENT, "dev-a", now=0)
    for second in range(1, 30):
        table.progress("b", CONTENT, "dev-a", now=second)  # no renewal got through
    answer = table.request("b", CONTENT, "dev-b", now=29.5)
    assert (answer.decision, answer.holder) == (Decision.REDIRECTED, "dev-a")
    assert answer.expires_at == 39  # ask again when it would lapse
    assert table.takeovers == 0
    # Silent in both ways for lease_seconds: taken over.
    assert table.request("b", CONTENT, "dev-b", now=39).decision is Decision.GRANTED
    assert table.takeovers == 1
