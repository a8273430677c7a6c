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


# --- stripes: the office's one WAN copy split over several holders ---------------------


def test_each_client_of_the_office_gets_its_own_stripe_and_the_rest_are_redirected() -> None:
    table = RendezvousTable(lease_seconds=10)
    answers = [table.request("b", CONTENT, f"dev-{n}", now=0, stripes=3) for n in range(4)]
    assert [(a.decision, a.stripes, a.mask) for a in answers[:3]] == [
        (Decision.GRANTED, 3, 0b001),
        (Decision.GRANTED, 3, 0b010),
        (Decision.GRANTED, 3, 0b100),
    ]
    assert (answers[3].decision, answers[3].holder) == (Decision.REDIRECTED, "dev-0")
    # A renewal keeps the same stripe (and the stripe count the group started with).
    renewed = table.request("b", CONTENT, "dev-1", now=2, stripes=7)
    assert (renewed.stripes, renewed.mask) == (3, 0b010)
    assert table.holders("b", CONTENT, now=2) == ["dev-0", "dev-1", "dev-2"]


def test_the_server_serves_a_holder_the_chunks_of_its_own_stripes_only() -> None:
    table = RendezvousTable(lease_seconds=10)
    table.request("b", CONTENT, "dev-a", now=0, stripes=2)
    table.request("b", CONTENT, "dev-b", now=0, stripes=2)
    assert [table.may_fetch("b", CONTENT, "dev-a", i, now=1) for i in range(4)] == [
        True,
        False,
        True,
        False,
    ]
    assert table.may_fetch("b", CONTENT, "dev-b", 3, now=1)
    assert not table.may_fetch("b", CONTENT, "dev-c", 3, now=1)
    assert not table.may_fetch("b", CONTENT, "dev-a", 0, now=10)  # lapsed


def test_the_stripe_of_a_holder_that_died_moves_to_a_live_holder() -> None:
    """Every client holds a stripe: the dead one's goes to the next holder that renews."""
    table = RendezvousTable(lease_seconds=10)
    for device in ("dev-a", "dev-b", "dev-c"):
        table.request("b", CONTENT, device, now=0, stripes=3)
    for second in range(1, 12):  # dev-b dies at 0; the others keep fetching
        table.progress("b", CONTENT, "dev-a", now=second)
        table.progress("b", CONTENT, "dev-c", now=second)
    assert table.holders("b", CONTENT, now=11) == ["dev-a", "dev-c"]
    moved = table.request("b", CONTENT, "dev-c", now=11)
    assert (moved.decision, moved.mask) == (Decision.GRANTED, 0b110)
    assert table.takeovers == 1
    assert table.may_fetch("b", CONTENT, "dev-c", 1, now=11)
    # The one that came back asks again: every stripe is held, it fetches from peers.
    assert table.request("b", CONTENT, "dev-b", now=12).decision is Decision.REDIRECTED


def test_a_stripe_nobody_claimed_waits_for_a_client_without_one_first() -> None:
    table = RendezvousTable(lease_seconds=10)
    table.request("b", CONTENT, "dev-a", now=0, stripes=2)
    assert table.request("b", CONTENT, "dev-a", now=3).mask == 0b01  # left for others
    assert table.request("b", CONTENT, "dev-a", now=10).mask == 0b11  # nobody came
    assert table.takeovers == 0


def test_a_released_stripe_is_free_at_once_and_a_stalled_holder_loses_every_stripe() -> None:
    table = RendezvousTable(lease_seconds=10, stall_seconds=30)
    table.request("b", CONTENT, "dev-a", now=0, stripes=2)
    table.request("b", CONTENT, "dev-b", now=0, stripes=2)
    table.release("b", CONTENT, "dev-b")  # complete: every chunk of its stripe is held
    assert table.request("b", CONTENT, "dev-c", now=1).mask == 0b10
    for second in range(2, 31):  # dev-a renews and never fetches; dev-c fetches
        table.request("b", CONTENT, "dev-a", now=second)
        table.progress("b", CONTENT, "dev-c", now=second)
    assert table.request("b", CONTENT, "dev-a", now=31).decision is Decision.REDIRECTED
    assert table.stalls == 1
    assert table.request("b", CONTENT, "dev-c", now=31).mask == 0b11
