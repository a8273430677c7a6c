"""The server's resumed chunks off the stripes (``shoal.server.resumes``): a device that
holds part of a chunk gets the rest, the office's other devices wait for it, and a
device asking with offsets cannot pull more than a few chunks out of the stripes' order."""

from __future__ import annotations

import hashlib

from shoal.core.ids import ContentId
from shoal.server.resumes import HOLD, MAX_CHUNKS, PER_DEVICE, Resumes

CONTENT = ContentId(hashlib.sha256(b"content").digest())


def test_a_resumed_chunk_is_held_back_from_the_others_until_delivered_or_hold() -> None:
    resumes = Resumes()
    assert resumes.admit("office", CONTENT, "a", 7, 0.0)
    assert resumes.held_for_other("office", CONTENT, "b", 7, 1.0)  # the stripe's new holder
    assert not resumes.held_for_other("office", CONTENT, "a", 7, 1.0)
    assert not resumes.held_for_other("other office", CONTENT, "b", 7, 1.0)
    assert not resumes.held_for_other("office", CONTENT, "b", 7, HOLD)  # it failed: serve
    resumes.delivered("office", CONTENT, 7)
    assert not resumes.held_for_other("office", CONTENT, "b", 7, 1.0)


def test_a_device_resumes_a_few_chunks_at_once_and_the_table_is_bounded() -> None:
    resumes = Resumes()
    admitted = [resumes.admit("office", CONTENT, "a", index, 0.0) for index in range(100)]
    assert sum(admitted) == PER_DEVICE
    assert resumes.admit("office", CONTENT, "a", 0, 1.0)  # asked again: still its own
    assert resumes.admit("office", CONTENT, "a", 50, HOLD + 0.1)  # the old ones lapsed
    for device in range(MAX_CHUNKS + 10):  # forged devices
        resumes.admit("office", CONTENT, f"d{device}", 1000 + device, 0.0)
    assert len(resumes._chunks) <= MAX_CHUNKS
