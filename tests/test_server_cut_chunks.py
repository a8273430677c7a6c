"""A chunk cut on its way to a holder is held for it when its stripe passes on
(``shoal.server.cut_chunks``): the stripe's new holder is given it last, the holder it
was cut from gets the rest with an offset, and a holder that never asks delays it by
the hold only."""

from __future__ import annotations

import hashlib

from shoal.core.ids import ContentId
from shoal.server.core import ServerCore
from shoal.server.cut_chunks import BACK_GRACE, MAX_CHUNKS, PER_DEVICE, SENDING, CutChunks
from shoal.wire.control import LeaseDecision
from test_server_core import register
from test_server_deliveries import CONTENT, lease, make_server

HOLD = 10.0  # the server's lease period: the ledger's hold, and this one's


def holder_1_was_cut_mid_chunk() -> ServerCore:
    """Holders 1 and 2 hold one stripe each (chunks 0, 2 and 1, 3); the server began
    sending chunk 0 to holder 1 at t=1, which then fell silent (its WAN went down): its
    lease lapsed and holder 2 took its stripe over at t=12."""
    server = make_server()
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert lease(server, 1, 0) == (LeaseDecision.GRANTED, 0b01)
    assert lease(server, 2, 0) == (LeaseDecision.GRANTED, 0b10)
    assert server.may_serve_content("10.1.0.1", CONTENT, 1, chunk_index=0)
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 1, chunk_index=0)
    assert lease(server, 2, now=6) == (LeaseDecision.GRANTED, 0b10)  # renewed
    assert lease(server, 2, now=12) == (LeaseDecision.GRANTED, 0b11)  # took stripe 0
    return server


def test_the_new_holder_is_given_a_cut_chunk_last_and_its_holder_gets_the_rest() -> None:
    server = holder_1_was_cut_mid_chunk()
    # The new holder's other chunks are served; the cut one is refused (held for holder 1).
    assert server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=2)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=0)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 14, chunk_index=0)
    # Holder 1 is back and asks the rest (an offset): served, off its old stripe.
    assert server.may_serve_content("10.1.0.1", CONTENT, 15, chunk_index=0, resumed=True)
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 15, chunk_index=0)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 16, chunk_index=0)
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 0, now=16)
    # In the office now: the new holder takes it from holder 1 (the delivery ledger).
    assert not server.may_serve_content("10.1.0.2", CONTENT, 17, chunk_index=0)
    assert server.wan_copy.cut_chunks.refused == 2
    assert len(server.wan_copy.cut_chunks) == 0


def test_a_holder_that_never_asks_delays_its_cut_chunk_by_the_hold_only() -> None:
    server = holder_1_was_cut_mid_chunk()
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=0)
    assert lease(server, 2, now=20) == (LeaseDecision.GRANTED, 0b11)  # renewed
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12 + HOLD - 0.1, chunk_index=0)
    assert server.may_serve_content("10.1.0.2", CONTENT, 12 + HOLD, chunk_index=0)


def test_a_holder_that_asks_whole_or_left_holds_nothing_back() -> None:
    server = holder_1_was_cut_mid_chunk()
    # Holder 1 asks chunk 0 whole (a new process: no prefix): the hold ends at once.
    assert not server.may_serve_content("10.1.0.1", CONTENT, 13, chunk_index=0)  # not its stripe
    assert server.may_serve_content("10.1.0.2", CONTENT, 13, chunk_index=0)

    server = holder_1_was_cut_mid_chunk()
    # Holder 1 was last seen at 0: two check-in periods (120 s) later it has left.
    assert lease(server, 2, now=121)[0] is LeaseDecision.GRANTED
    assert server.may_serve_content("10.1.0.2", CONTENT, 121, chunk_index=0)


def test_what_was_cut_survives_a_server_restart() -> None:
    """The server itself may die with the uploads (no process hears them end): what was
    begun and not delivered is saved with the leases."""
    server = make_server()
    for number in (1, 2):
        register(server, number, f"10.1.0.{number}")
    assert lease(server, 1, 0) == (LeaseDecision.GRANTED, 0b01)
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 1, chunk_index=0)
    saved = server.wan_copy.lease_state(now=2)
    restarted = make_server()
    restarted.wan_copy.restore_lease_state(saved, now=100, elapsed=1)
    for number in (1, 2):
        register(restarted, number, f"10.1.0.{number}", now=100)
    # Holder 1 lapsed (never back to renew): a new group, stripe 0 to holder 2.
    assert lease(restarted, 2, now=111) == (LeaseDecision.GRANTED, 0b01)
    assert not restarted.may_serve_content("10.1.0.2", CONTENT, 111, chunk_index=0)
    assert restarted.may_serve_content("10.1.0.2", CONTENT, 111, chunk_index=2)
    assert restarted.may_serve_content("10.1.0.1", CONTENT, 112, chunk_index=0, resumed=True)


def test_a_device_makes_a_few_chunks_held_and_the_table_is_bounded() -> None:
    cuts = CutChunks(hold_seconds=HOLD)
    content = ContentId(hashlib.sha256(b"content").digest())
    for chunk_index in range(100):
        cuts.served("office", content, "a", chunk_index, 0.0)
    held = [
        index
        for index in range(100)
        if cuts.held_for_other("office", content, "b", index, 1.0, lambda _device: True)
    ]
    # The last PER_DEVICE it was sent are remembered; the oldest SENDING of them, those
    # that may have reached it in part, are held.
    assert held == list(range(100 - PER_DEVICE, 100 - PER_DEVICE + SENDING))
    for device in range(MAX_CHUNKS + 10):  # forged devices
        cuts.served("office", content, f"d{device}", 1000 + device, 0.0)
    assert len(cuts) <= MAX_CHUNKS
    cuts.expire(cuts.keep_seconds + 1)
    assert len(cuts) == 0


def test_only_the_chunks_being_sent_are_held_and_a_resume_or_a_dead_process_ends_it() -> None:
    """Of the chunks begun for holder 1 and not delivered, the oldest two may have
    reached it in part: held. One queued behind them is not. Holder 1 resuming one shows
    it is back: nothing else is held for it."""
    server = holder_1_was_cut_mid_chunk()  # chunk 0 begun at t=1
    for chunk_index in (2, 3):  # then 2 and 3, queued behind it
        server.wan_copy.chunk_served("10.1.0.1", CONTENT, 1.1, chunk_index=chunk_index)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=0)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=2)
    assert server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=3)  # not sent yet
    server.wan_copy.chunk_delivered("10.1.0.1", CONTENT, 2, now=1.3)  # 3 was on its way
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=3)

    server = holder_1_was_cut_mid_chunk()
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 1.1, chunk_index=2)
    assert server.may_serve_content("10.1.0.1", CONTENT, 13, chunk_index=0, resumed=True)
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 13, chunk_index=0, resumed=True)
    assert server.may_serve_content("10.1.0.2", CONTENT, 13, chunk_index=2)


def test_a_dead_process_keeps_its_holds_until_just_after_its_restart_leases() -> None:
    """A closed port (its process died) no longer ends the hold: the prefix is on disk,
    and the restarted process asks its rest when its lease is answered. What it has not
    asked ``BACK_GRACE`` after that lease, it holds no prefix of: the hold ends."""
    server = holder_1_was_cut_mid_chunk()
    server.wan_copy.process_gone("10.1.0.1")
    assert not server.may_serve_content("10.1.0.2", CONTENT, 12, chunk_index=0)
    assert lease(server, 1, now=12.5)[0] is LeaseDecision.REDIRECTED  # back, restarted
    assert not server.may_serve_content(
        "10.1.0.2", CONTENT, 12.5 + BACK_GRACE - 0.01, chunk_index=0
    )
    assert server.may_serve_content("10.1.0.2", CONTENT, 12.5 + BACK_GRACE, chunk_index=0)
    # A chunk begun for it after it came back is held as any other, not by that grace.
    server.wan_copy.chunk_served("10.1.0.1", CONTENT, 14, chunk_index=2)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 15, chunk_index=2)

    server = holder_1_was_cut_mid_chunk()  # back, and asks the rest in time: served
    server.wan_copy.process_gone("10.1.0.1")
    assert lease(server, 1, now=12.5)[0] is LeaseDecision.REDIRECTED
    assert server.may_serve_content("10.1.0.1", CONTENT, 12.7, chunk_index=0, resumed=True)
    assert not server.may_serve_content("10.1.0.2", CONTENT, 14, chunk_index=0)
