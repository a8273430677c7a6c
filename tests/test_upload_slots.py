"""Upload slots: a slow uplink serves few downloaders at once, a fast one many."""

from __future__ import annotations

from shoal.protocol.serving import Admission, UploadSlots


def test_requests_beyond_the_slots_wait_then_are_refused() -> None:
    slots: UploadSlots[int, str] = UploadSlots(initial=1)
    assert slots.offer(1, "one", 0.0) is Admission.START
    assert slots.offer(2, "two", 0.0) is Admission.WAIT  # as many wait as run
    assert slots.offer(3, "three", 0.0) is Admission.REFUSE
    assert slots.finished(1, 0.4, delivered=True) == ["two"]  # its slot goes on at once
    assert (slots.active, slots.waiting, slots.refused) == (1, 0, 1)


CHUNK = 128 * 1024


def test_a_slow_uplink_keeps_one_slot_and_a_fast_one_grows() -> None:
    slow: UploadSlots[int, int] = UploadSlots(target_rate=256 * 1024, initial=2)
    slow.offer(1, 1, 0.0, CHUNK)
    slow.offer(2, 2, 0.0, CHUNK)
    slow.offer(3, 3, 0.0, CHUNK)  # contended
    slow.finished(1, 0.9, delivered=True)  # two at once: 0.9 s a chunk, 146 KB/s
    assert slow.slots == 1
    assert grown(UploadSlots(target_rate=256 * 1024, initial=1), CHUNK, 0.05) > 4


def grown(slots: UploadSlots[int, int], length: int, seconds: float) -> int:
    """The slots after 20 rounds of more requests than slots, each upload delivered
    ``seconds`` after it started."""
    now, key, running = 0.0, 0, []
    for _ in range(20):
        for _ in range(slots.slots + 2):
            key += 1
            if slots.offer(key, key, now, length) is Admission.START:
                running.append(key)
        now += seconds
        for done in running:
            running = running[1:] + slots.finished(done, now, delivered=True)
    return slots.slots


def test_big_chunks_on_a_slow_uplink_still_grow_slots() -> None:
    """1 MiB chunks on a 30 Mbit/s uplink take 0.28 s each alone: the upload's rate, not
    its time, decides. (A 0.5 s time target never grew a second slot there, and the
    uplink idled whenever a downloader's own link held its one upload back.)"""
    assert grown(UploadSlots(initial=1), 1 << 20, 0.28) > 1
    assert grown(UploadSlots(initial=1), 1 << 20, 8.0) == 1  # 128 KiB/s a slot: one


def test_a_cancelled_request_frees_its_slot_without_a_rate_sample() -> None:
    slots: UploadSlots[int, str] = UploadSlots(initial=2)
    slots.offer(1, "a", 0.0)
    slots.offer(2, "b", 0.0)
    slots.offer(3, "c", 0.0)
    slots.finished(3, 0.1, delivered=False)  # a waiting one cancelled: nothing starts
    assert (slots.active, slots.waiting) == (2, 0)
    assert slots.finished(1, 5.0, delivered=False) == []
    assert slots.slots == 2  # not counted as a slow delivery


def test_running_uploads_stay_within_their_memory_budget() -> None:
    chunk = 1 << 20
    slots: UploadSlots[int, str] = UploadSlots(initial=8, max_bytes=3 * chunk)
    admissions = [slots.offer(key, f"r{key}", 0.0, chunk) for key in range(1, 6)]
    # Eight slots, but only three chunks fit in memory: the others wait for one to end.
    assert admissions == [Admission.START] * 3 + [Admission.WAIT] * 2
    assert slots.bytes_active == 3 * chunk
    assert slots.finished(2, 0.1, delivered=False) == ["r4"]
    assert slots.bytes_active == 3 * chunk
    # One upload always runs, whatever its size.
    big: UploadSlots[int, str] = UploadSlots(max_bytes=chunk)
    assert big.offer(1, "huge", 0.0, 16 * chunk) is Admission.START


def test_under_contention_a_peer_gets_one_turn_at_a_time() -> None:
    slots: UploadSlots[int, str] = UploadSlots(initial=1)
    assert slots.offer(1, "a1", 0.0, peer="A") is Admission.START
    assert slots.offer(2, "a2", 0.0, peer="A") is Admission.REFUSE  # A has its turn
    assert slots.offer(3, "b1", 0.0, peer="B") is Admission.WAIT
    assert slots.finished(1, 0.3, delivered=True) == ["b1"]  # still one slot
    assert slots.offer(4, "a3", 0.3, peer="A") is Admission.WAIT  # A's turn again, after B
    assert slots.refused_unfair == 1
    # Uncontended, a peer may hold two slots, no more: its uploads share one flow.
    wide: UploadSlots[int, str] = UploadSlots(initial=3)
    admissions = [wide.offer(key, "x", 0.0, peer="A") for key in (1, 2, 3)]
    assert admissions == [Admission.START, Admission.START, Admission.REFUSE]
    assert wide.offer(4, "y", 0.0, peer="B") is Admission.START


def test_a_peer_that_stalls_an_upload_sits_out_a_growing_penalty() -> None:
    slots: UploadSlots[int, str] = UploadSlots(initial=1, penalty_seconds=10.0)
    slots.offer(1, "a", 0.0, peer="A")
    assert slots.offer(2, "b", 0.0, peer="B") is Admission.WAIT
    # A never acknowledged: its upload ends by the idle timeout, B's starts at once.
    assert slots.finished(1, 5.0, delivered=False, silent=True) == ["b"]
    assert slots.offer(3, "a", 6.0, peer="A") is Admission.REFUSE
    assert slots.offer(4, "a", 14.9, peer="A") is Admission.REFUSE
    slots.finished(2, 15.0, delivered=True)
    assert slots.offer(5, "a", 15.0, peer="A") is Admission.START  # served its 10 s
    slots.finished(5, 20.0, delivered=False, silent=True)  # stalls again: 20 s now
    assert slots.offer(6, "a", 39.9, peer="A") is Admission.REFUSE
    assert slots.offer(7, "a", 40.0, peer="A") is Admission.START
    # A cancel (the peer got the chunk elsewhere) is no fault.
    slots.offer(8, "c", 40.0, peer="C")
    slots.finished(8, 40.1, delivered=False)
    assert not slots.penalised("C", 40.2)


def test_delivered_chunks_earn_back_trust_and_the_penalty_table_is_bounded() -> None:
    slots: UploadSlots[int, str] = UploadSlots(initial=8, penalty_seconds=10.0, max_penalised=3)
    slots.offer(1, "a", 0.0, peer="A")
    slots.finished(1, 5.0, delivered=False, silent=True)  # next silent end: 20 s
    slots.offer(2, "a", 15.0, peer="A")
    slots.finished(2, 15.1, delivered=True)  # back to 10 s
    slots.offer(3, "a", 15.2, peer="A")
    slots.finished(3, 20.0, delivered=False, silent=True)
    assert slots.penalised("A", 29.9) and not slots.penalised("A", 30.0)
    for key, peer in enumerate(("B", "C", "D", "E"), start=10):
        slots.offer(key, peer, 30.0, peer=peer)
        slots.finished(key, 35.0, delivered=False, silent=True)
    assert not slots.penalised("B", 36.0)  # the oldest entry went first
    assert all(slots.penalised(peer, 36.0) for peer in ("C", "D", "E"))


def test_requests_wait_as_long_as_the_queue_starts_them_within_the_hold() -> None:
    """A slow uplink's queue holds the requests it starts within ``hold_seconds`` at
    the measured chunk time instead of refusing them (a refused requester asks again
    and again), and never more than ``max_waiting``, whatever asks."""
    slots: UploadSlots[int, str] = UploadSlots(initial=1, hold_seconds=1.0, max_waiting=6)
    assert slots.offer(0, "p0", 0.0, peer="P0") is Admission.START
    assert slots.offer(1, "p1", 0.0, peer="P1") is Admission.WAIT
    assert slots.offer(2, "p2", 0.0, peer="P2") is Admission.REFUSE  # nothing measured yet
    assert slots.finished(0, 0.25, delivered=True) == ["p1"]  # 0.25 s a chunk
    admissions = [slots.offer(key, f"p{key}", 0.3, peer=f"P{key}") for key in range(3, 9)]
    # Four chunk times fit in the second it holds a request: four wait, the rest refused.
    assert admissions == [Admission.WAIT] * 4 + [Admission.REFUSE] * 2
    assert slots.offer(9, "p1 again", 0.3, peer="P1") is Admission.REFUSE  # one turn each
    slots.chunk_seconds = 0.001  # a fast chunk time: bounded all the same
    flood = [slots.offer(key, "x", 0.4, peer=f"F{key}") for key in range(10, 100)]
    assert flood.count(Admission.WAIT) == 2 and slots.waiting == 6
