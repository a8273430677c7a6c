"""Chunk scheduling: rarest first, per-peer pipelines, endgame, bans."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.chunkset import ChunkSet
from shoal.protocol.swarm import MAX_SEARCHING_ONLY, ChunkPicker


def test_rarest_chunks_are_asked_for_first() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(4), max_in_flight_per_peer=1)
    picker.peer_has("a", ChunkSet(4, [0, 1, 2, 3]))
    picker.peer_has("b", ChunkSet(4, [0, 1, 2]))
    picker.peer_has("c", ChunkSet(4, [0, 1]))
    requests = dict(picker.next_requests())
    assert requests["a"] == 3  # held by a alone
    assert requests["b"] == 2  # the rarest b can give
    assert requests["c"] in (0, 1)


def test_held_chunks_are_never_requested_and_pipelines_are_bounded() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(10, [0, 1, 2]), max_in_flight_per_peer=3)
    picker.peer_has("a", ChunkSet.full(10))
    requests = picker.next_requests()
    assert len(requests) == 3
    assert {chunk for _, chunk in requests}.isdisjoint({0, 1, 2})
    assert picker.next_requests() == []  # pipeline full


def test_endgame_duplicates_the_last_chunks_and_cancels_the_losers() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(2), max_in_flight_per_peer=1)
    picker.peer_has("slow", ChunkSet.full(2))
    picker.peer_has("fast", ChunkSet.full(2))
    first = picker.next_requests()
    assert sorted(chunk for _, chunk in first) == [0, 1]
    fast_chunk = dict(first)["fast"]
    picker.received(fast_chunk, "fast")
    ((peer, chunk),) = picker.next_requests()  # endgame: fast idles, so it duplicates slow's
    assert (peer, chunk) == ("fast", dict(first)["slow"])
    assert picker.received(chunk, "fast") == ["slow"]  # cancel the slow duplicate
    assert picker.complete


def test_with_measured_rates_only_a_late_request_is_duplicated() -> None:
    # Where uplinks bind, a duplicate of a request arriving on time takes an uplink from
    # a chunk someone else needs: the endgame waits until the request is late.
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(5), max_in_flight_per_peer=1, rate_horizon=0.5)
    for peer in ("a", "b", "c"):
        picker.peer_has(peer, ChunkSet.full(5))
    for peer, chunk_index in picker.next_requests(now=0.0):
        picker.received(chunk_index, peer, now=0.1)  # all measured: 10 chunks/s
    last_two = dict(picker.next_requests(now=0.1))
    (idle,) = {"a", "b", "c"} - set(last_two)
    assert picker.next_requests(now=0.1) == []  # both on time
    due = picker.next_wake()
    assert due == pytest.approx(0.1 + picker.endgame_after / 10)  # asked + endgame_after / rate
    assert picker.next_requests(now=due - 0.01) == []
    picker.wake(due)
    ((peer, chunk_index),) = picker.next_requests(now=due)  # late: duplicated
    assert peer == idle and chunk_index in last_two.values()
    assert picker.next_wake() is None  # no deadline fires again at the same instant
    picker.received(chunk_index, peer, now=due + 0.05)
    ((peer, chunk_index),) = picker.next_requests(now=due + 0.05)  # the last: at once
    assert peer != dict((c, p) for p, c in last_two.items())[chunk_index]


def test_a_peer_that_measured_one_slow_delivery_is_late_by_the_office_median() -> None:
    # A peer that died and came back measured one delivery of seconds: its next request
    # is late by what the office's peers usually take (0.1 s), not by that (4 s).
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(5), max_in_flight_per_peer=1, rate_horizon=0.5)
    picker.peer_has("a", ChunkSet(5, [0, 4]))
    picker.peer_has("b", ChunkSet(5, [1]))
    picker.peer_has("c", ChunkSet(5, [2, 3]))
    for peer, chunk_index in picker.next_requests(now=0.0):
        picker.received(chunk_index, peer, now=4.0 if peer == "c" else 0.1)
    assert picker.rate("c") == pytest.approx(0.25)
    last_two = dict(picker.next_requests(now=4.0))  # one from a, one from c
    picker.peer_has_chunk("b", last_two["c"])
    assert picker.next_requests(now=4.0) == []  # on time for now
    due = picker.next_wake()
    assert due == pytest.approx(4.0 + picker.endgame_after / 10)  # the median rate, not c's 0.25
    picker.wake(due)
    assert picker.next_requests(now=due) == [("b", last_two["c"])]


def test_the_first_duplicate_served_wins_and_a_served_request_is_late_from_its_start() -> None:
    # The copies of a duplicated chunk that wait in an uploader's line are cancelled as
    # soon as one is served (no byte of them sent), and a request being served is not
    # duplicated while it is on time from its first bytes: it ends sooner than a copy
    # that would wait in a line and share an uplink.
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(3), max_in_flight_per_peer=1, rate_horizon=0.5)
    for peer in ("a", "b", "c"):
        picker.peer_has(peer, ChunkSet.full(3))
    for peer, chunk_index in picker.next_requests(now=0.0):
        if chunk_index != 2:
            picker.received(chunk_index, peer, now=0.1)  # measured: 10 chunks/s
    first = dict(picker.next_requests(now=0.1))  # the last chunk: duplicated at once
    assert len(first) == 1 and list(first.values()) == [2]
    asked = {peer for peer in ("a", "b", "c") if picker.in_flight(peer)}
    assert len(asked) == 2
    winner, loser = sorted(asked)
    assert picker.started(2, winner, now=0.15) == [loser]  # its request to cancel
    assert picker.in_flight(loser) == 0 and picker.in_flight(winner) == 1
    assert picker.started(2, winner, now=0.16) == []  # once
    assert picker.next_requests(now=0.15) == []  # served: not the last chunk's eager copy
    due = picker.next_wake()
    assert due == pytest.approx(0.15 + picker.endgame_after / 10)  # from its start
    picker.wake(due)
    ((peer, chunk_index),) = picker.next_requests(now=due)  # stalled: duplicated
    assert chunk_index == 2 and peer != winner
    assert picker.started(2, peer, now=due + 0.01) == []  # both served: both run
    assert picker.received(2, peer, now=due + 0.05) == [winner]


def test_a_banned_peer_is_never_asked_again_and_its_requests_move_on() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(3), max_in_flight_per_peer=3)
    picker.peer_has("liar", ChunkSet.full(3))
    assert len(picker.next_requests()) == 3
    assert sorted(picker.ban("liar")) == [0, 1, 2]
    picker.peer_has("liar", ChunkSet.full(3))  # its later announcements are ignored
    picker.peer_has("honest", ChunkSet.full(3))
    assert {peer for peer, _ in picker.next_requests()} == {"honest"}


def test_a_failed_request_is_retried() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(1))
    picker.peer_has("a", ChunkSet.full(1))
    assert picker.next_requests() == [("a", 0)]
    picker.failed(0, "a")
    assert picker.next_requests() == [("a", 0)]


@settings(max_examples=200)
@given(
    chunk_count=st.integers(min_value=1, max_value=40),
    steps=st.lists(
        st.tuples(
            st.sampled_from(
                ["have", "request", "receive", "fail", "ban", "gone", "search", "busy", "turn"]
            ),
            st.integers(0, 5),
            st.integers(0, 39),
        ),
        max_size=80,
    ),
    seed=st.integers(0, 1000),
    fanout_limit=st.booleans(),
    rates=st.booleans(),
)
def test_scheduling_invariants_hold_under_any_sequence(
    chunk_count: int,
    steps: list[tuple[str, int, int]],
    seed: int,
    fanout_limit: bool,
    rates: bool,
) -> None:
    rng = random.Random(seed)
    picker: ChunkPicker[int] = ChunkPicker(
        ChunkSet(chunk_count),
        max_in_flight_per_peer=2,
        endgame_duplicates=2,
        rng=rng,
        me=99 if fanout_limit else None,
        rate_horizon=0.5 if rates else None,
    )
    now = 0.0
    outstanding: dict[int, set[int]] = {}
    banned: set[int] = set()
    one_turn: dict[int, float] = {}
    for action, peer, raw_chunk in steps:
        chunk = raw_chunk % chunk_count
        if action == "have":
            picker.peer_has_chunk(peer, chunk)
        elif action == "search":
            picker.peer_searching(peer, now)
        elif action == "busy":
            picker.busy(peer, now + 0.1 * (1 + chunk % 3))
        elif action == "turn":
            picker.one_turn(peer, now + 0.2 * (1 + chunk % 3))
            if peer in picker.peers:  # a refusal comes from a peer we asked: known
                one_turn[peer] = now + 0.2 * (1 + chunk % 3)
        elif action == "request":
            now += 0.2
            # Time always moves: once woken at ``now``, no deadline at or before it.
            picker.wake(now)
            wake = picker.next_wake()
            assert wake is None or wake > now
            loads = {peer: picker.in_flight(peer) for peer in range(6)}
            for asked, index in picker.next_requests(now=now):
                if rates and one_turn.get(asked, now) > now and asked in picker.peers:
                    # A contended peer is asked one chunk at a time.
                    assert loads[asked] == 0
                    loads[asked] = 1
                assert asked not in banned
                assert index not in picker.have
                assert asked not in outstanding.setdefault(index, set())
                outstanding[index].add(asked)
                assert len(outstanding[index]) <= 2
                assert picker.in_flight(asked) <= 2
        elif action == "receive" and outstanding.get(chunk):
            winner = min(outstanding[chunk])
            picker.received(chunk, winner, now)
            outstanding.pop(chunk)
        elif action == "fail" and peer in outstanding.get(chunk, set()):
            picker.failed(chunk, peer)
            outstanding[chunk].discard(peer)
        elif action in ("ban", "gone"):
            (picker.ban if action == "ban" else picker.peer_gone)(peer)
            banned |= {peer} if action == "ban" else set()
            one_turn.pop(peer, None)  # forgotten with the peer (``BusyPeers.forget``)
            for peers in outstanding.values():
                peers.discard(peer)


def test_the_origin_is_asked_only_for_chunks_no_peer_holds() -> None:
    server = "server"
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(6), max_in_flight_per_peer=6)
    picker.peer_has(server, ChunkSet.full(6), origin=True)
    picker.peer_has("neighbour", ChunkSet(6, [0, 1, 2]))
    requests = picker.next_requests()
    assert sorted(chunk for peer, chunk in requests if peer == server) == [3, 4, 5]
    assert sorted(chunk for peer, chunk in requests if peer == "neighbour") == [0, 1, 2]
    # Endgame never duplicates onto the WAN; a neighbour that goes away hands its
    # chunks to the origin.
    picker.received(3, server)
    assert picker.next_requests() == []
    assert sorted(picker.peer_gone("neighbour")) == [0, 1, 2]
    assert sorted(chunk for _, chunk in picker.next_requests()) == [0, 1, 2]


def test_one_downloader_fetches_a_new_chunk_from_its_source_and_the_others_wait() -> None:
    downloaders = ["10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5"]
    pickers = {}
    for me in downloaders:
        picker: ChunkPicker[str] = ChunkPicker(ChunkSet(8), me=me, key=str, fanout=1)
        for other in downloaders:
            if other != me:
                picker.peer_has(other, ChunkSet(8))  # known, holding nothing yet
        picker.peer_has("rendezvous", ChunkSet(8, [5]))  # its newest chunk
        pickers[me] = picker
    asked = {me: picker.next_requests(now=0.0) for me, picker in pickers.items()}
    fetchers = [me for me, requests in asked.items() if requests]
    assert len(fetchers) == 1, asked  # every downloader reached the same choice
    assert asked[fetchers[0]] == [("rendezvous", 5)]
    # The others take it from the fetcher once it has it, not from the source.
    waiting = next(p for me, p in pickers.items() if me != fetchers[0])
    waiting.peer_has_chunk(fetchers[0], 5)
    assert waiting.next_requests(now=0.1) == [(fetchers[0], 5)]
    # A fetcher that never gets it holds nobody up beyond the grace time.
    late = [p for me, p in pickers.items() if me != fetchers[0]][-1]
    assert late.next_requests(now=0.1) == []
    assert late.next_wake() == 0.5
    assert late.next_requests(now=0.5) == [("rendezvous", 5)]


def test_a_new_chunk_waits_for_a_fast_source_three_of_its_chunk_times_not_the_grace() -> None:
    """The hold-back spares a slow uplink; a source that delivers a chunk in 100 ms is
    not held back 0.5 s behind a chosen downloader (the tail of a fast office)."""

    def waiting_downloader(source_seconds: float | None) -> ChunkPicker[str]:
        for me in ("10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5"):
            held = ChunkSet(8, [] if source_seconds is not None else [0])
            picker: ChunkPicker[str] = ChunkPicker(held, me=me, key=str, fanout=1, rate_horizon=0.5)
            picker.peer_has("source", ChunkSet(8, [0]))
            if source_seconds is not None:  # one chunk from it already, measured
                assert picker.next_requests(now=0.0) == [("source", 0)]
                picker.received(0, "source", now=source_seconds)
            for other in ("10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5"):
                if other != me:
                    picker.peer_has(other, ChunkSet(8, [0]))
            picker.peer_has_chunk("source", 5)  # its newest chunk, from the WAN
            if picker.next_requests(now=1.0) == []:
                return picker  # not designated: it waits
        raise AssertionError("every downloader was designated")

    fast = waiting_downloader(0.1)
    assert fast.next_wake() == pytest.approx(1.3)
    assert fast.next_requests(now=1.3) == [("source", 5)]
    slow = waiting_downloader(0.4)  # 3 x 0.4 s is over the grace: the grace holds
    assert slow.next_wake() == pytest.approx(1.5)
    unmeasured = waiting_downloader(None)
    assert unmeasured.next_wake() == pytest.approx(1.5)


def test_a_fast_source_is_asked_at_once_by_the_downloaders_it_serves_within_the_grace() -> None:
    """A source that delivers a chunk in 40 ms serves four downloaders one hold-back
    (three of its chunk times) after another within the 0.5 s grace: four ask it for
    its newest chunk at once, not one while its uplink idles. One that takes 0.4 s is
    asked by one: the others wait for that copy."""
    downloaders = [f"10.2.0.{host}" for host in range(2, 10)]

    def first_askers(source_seconds: float) -> int:
        askers = 0
        for me in downloaders:
            picker: ChunkPicker[str] = ChunkPicker(
                ChunkSet(8), me=me, key=str, fanout=1, rate_horizon=0.5
            )
            picker.peer_has("source", ChunkSet(8, [0]))
            assert picker.next_requests(now=0.0) == [("source", 0)]
            picker.received(0, "source", now=source_seconds)
            for other in downloaders:
                if other != me:
                    picker.peer_has(other, ChunkSet(8, [0]))
            picker.peer_has_chunk("source", 5)  # its newest chunk, from the WAN
            if picker.next_requests(now=1.0) == [("source", 5)]:
                askers += 1
        return askers

    assert first_askers(0.04) == 4
    assert first_askers(0.4) == 1


def test_measured_rates_send_more_requests_to_the_faster_peer() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(40), max_in_flight_per_peer=8, rate_horizon=0.5)
    picker.peer_has("slow", ChunkSet.full(40))
    picker.peer_has("fast", ChunkSet.full(40))
    first = picker.next_requests(now=0.0)
    assert sorted(peer for peer, _ in first) == ["fast", "fast", "slow", "slow"]  # unmeasured
    for peer, chunk_index in first:
        picker.received(chunk_index, peer, now=0.05 if peer == "fast" else 1.0)
    assert picker.rate("fast") > 10 * picker.rate("slow")  # type: ignore[operator]
    again = picker.next_requests(now=1.0)
    asked = [peer for peer, _ in again]
    # 1 + what each delivers in 0.5 s: the slow peer (~1-2 chunks/s) gets one or two
    # requests, the fast one (20 chunks/s) its full pipeline.
    assert asked.count("fast") == 8
    assert 1 <= asked.count("slow") <= 2
    assert asked[0] == "fast"  # filled first: its next request arrives soonest


def test_a_busy_peer_waits_and_its_chunks_go_to_others() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(4), max_in_flight_per_peer=4, rate_horizon=0.5)
    picker.peer_has("busy", ChunkSet.full(4))
    picker.peer_has("free", ChunkSet(4, [0, 1]))
    first = picker.next_requests(now=0.0)
    for peer, chunk_index in first:
        if peer == "busy":
            picker.failed(chunk_index, peer)
            picker.busy(peer, until=0.2)
    assert all(peer != "busy" for peer, _ in picker.next_requests(now=0.1))
    assert picker.next_wake() == 0.2
    picker.wake(0.2)
    assert picker.next_wake() is None  # time moves: the wait is over
    assert any(peer == "busy" for peer, _ in picker.next_requests(now=0.2))


def test_a_contended_peer_is_asked_one_chunk_at_a_time_for_a_while() -> None:
    """A peer that refused BUSY while it held a request of ours gives each downloader
    one turn: it is asked one chunk at a time, not refused again for a second one."""
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(8), max_in_flight_per_peer=4, rate_horizon=0.5)
    picker.peer_has("holder", ChunkSet.full(8))
    first = picker.next_requests(now=0.0)
    assert len(first) == 2  # unmeasured: two
    picker.failed(first[1][1], "holder")  # refused BUSY: the first is its turn
    picker.one_turn("holder", until=2.0)
    assert picker.next_requests(now=0.1) == []  # not asked a second chunk
    picker.received(first[0][1], "holder", now=0.2)
    assert len(picker.next_requests(now=0.2)) == 1  # its turn over: the next one
    assert picker.next_wake() == 2.0
    picker.wake(2.0)
    assert picker.next_wake() is None  # time moves: the rule is over
    assert len(picker.next_requests(now=2.0)) >= 1  # a pipeline again
    assert picker.in_flight("holder") >= 2


def test_a_full_peer_is_asked_later_each_time_until_it_delivers() -> None:
    """A peer whose slots and queue are full is polled less and less often (doubled
    waits, at most the cap), and as before once it has delivered us a chunk."""
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(8), max_in_flight_per_peer=4, rate_horizon=0.5)
    picker.peer_has("full", ChunkSet.full(8))
    waits = []
    now = 0.0
    for _ in range(6):
        ((peer, chunk_index), *_rest) = picker.next_requests(now=now)
        for other_peer, other in [(peer, chunk_index), *_rest]:
            picker.failed(other, other_peer)
        wait = picker.busy_peers.backoff("full", 0.1, 1.0)
        waits.append(wait)
        picker.busy("full", now + wait)
        now += wait
        picker.wake(now)
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    asked = picker.next_requests(now=now)
    picker.received(asked[0][1], "full", now + 0.1)
    assert picker.busy_peers.backoff("full", 0.1, 1.0) == 0.1


def test_an_empty_handed_downloader_fetches_a_new_chunk_whatever_its_hash() -> None:
    """The fan-out designation ranks the downloaders that hold nothing first: the
    source's uplink gives the office a new uploader, whichever key the hash prefers.
    The holder the hash designates still fetches too (the empty-handed one may be gone)."""
    fetchers = set()
    for chunk in range(1, 9):  # the hash picks the holder for some chunks
        holder: ChunkPicker[str] = ChunkPicker(ChunkSet(9, [0]), me="holder", key=str)
        empty: ChunkPicker[str] = ChunkPicker(ChunkSet(9), me="empty", key=str)
        holder.peer_searching("empty", now=0.0)
        holder.peer_has("other holder", ChunkSet(9, [0]))
        empty.peer_has("holder", ChunkSet(9, [0]))
        empty.peer_has("other holder", ChunkSet(9, [0]))
        for picker in (holder, empty):
            picker.peer_has("source", ChunkSet(9, [chunk]))
        assert ("source", chunk) in empty.next_requests(now=0.0)
        holder_asks = holder.next_requests(now=0.0)
        if holder_asks:
            assert holder_asks == [("source", chunk)]
            fetchers.add(chunk)
    assert 0 < len(fetchers) < 8  # the hash chose each of them for some chunks


def test_forged_searchers_cannot_grow_the_picker_and_silent_ones_make_room() -> None:
    """A query's source is not proven: a LAN host forging queries from many addresses
    fills a bounded table, and a real downloader that searches once the forged ones fall
    silent is heard again."""
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(4, [0]), me="me", key=str)
    for n in range(10 * MAX_SEARCHING_ONLY):
        picker.peer_searching(f"forged-{n}", now=0.0)
    assert len(picker._availability) == MAX_SEARCHING_ONLY
    picker.peer_searching("real", now=1.0)
    assert "real" not in picker._availability  # full, and every forged one is fresh
    picker.peer_searching("real", now=picker.searching_horizon + 0.5)
    assert "real" in picker._availability
    assert len(picker._availability) == 1  # the silent ones were forgotten


def test_a_have_of_a_chunk_asked_elsewhere_is_asked_again_in_the_endgame_only() -> None:
    picker: ChunkPicker[str] = ChunkPicker(ChunkSet(3))
    picker.peer_has("a", ChunkSet(3, [0, 1]))
    picker.peer_has("b", ChunkSet(3))
    assert picker.next_requests(now=0.0) == [("a", 0), ("a", 1)]
    picker.peer_has("b", ChunkSet(3, [0]))  # chunk 2 is asked of nobody: no endgame
    assert picker.next_requests(now=0.1) == []
    picker.peer_has("c", ChunkSet(3, [2]))
    assert picker.next_requests(now=0.2) == [("c", 2), ("b", 0)]  # endgame: duplicates
    picker.peer_has("a", ChunkSet(3, [0, 1, 2]))
    assert picker.next_requests(now=0.3) == [("a", 2)]


@pytest.mark.parametrize("seed", range(6))
def test_asks_are_the_same_whether_the_rarest_first_order_is_kept_or_rebuilt(seed: int) -> None:
    """The picker keeps its rarest-first order across chunks received and holdings
    announced (issue 10: it was rebuilt after each); a twin that rebuilds it before
    every ask must ask the same peers (the origin of last resort too) for the same
    chunks, endgame included."""
    rng = random.Random(seed)
    count, peers = 24, [f"p{n}" for n in range(6)]
    kept: ChunkPicker[str] = ChunkPicker(ChunkSet(count), me="me", rate_horizon=0.5)
    rebuilt: ChunkPicker[str] = ChunkPicker(ChunkSet(count), me="me", rate_horizon=0.5)
    for picker in (kept, rebuilt):  # asked only what no other peer holds
        picker.peer_has("origin", ChunkSet.full(count), origin=True)
    asked: list[tuple[str, int]] = []
    now = 0.0
    for _ in range(400):
        now += rng.uniform(0.0, 0.05)
        action = rng.random()
        if action < 0.05:
            peer = rng.choice(peers)
            holding = ChunkSet(count, rng.sample(range(count), rng.randrange(count)))
            for picker in (kept, rebuilt):
                picker.peer_has(peer, holding)
        elif action < 0.35:
            peer, chunk_index = rng.choice(peers), rng.randrange(count)
            for picker in (kept, rebuilt):
                picker.peer_has_chunk(peer, chunk_index)
        elif action < 0.7 and asked:
            peer, chunk_index = asked.pop(rng.randrange(len(asked)))
            arrived = rng.random() < 0.8
            for picker in (kept, rebuilt):
                if arrived:
                    picker.received(chunk_index, peer, now)
                else:
                    picker.failed(chunk_index, peer)
        else:
            rebuilt._order = None  # rebuilt from the holder counts and what we hold
            requests = kept.next_requests(None, now)
            assert requests == rebuilt.next_requests(None, now)
            asked.extend(requests)
    assert kept.have.to_bytes() == rebuilt.have.to_bytes()
    assert len(kept.have) >= count // 2  # the asks went on into the download's tail
