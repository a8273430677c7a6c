"""A peer of the office refused one of our chunk requests ``BUSY``: what the picker does.

The holder's upload slots (``shoal.protocol.serving.UploadSlots``) refuse for one of two
reasons, told apart by what we still have asked there (``shoal.protocol.busy_peers``):
it holds a request of ours (contended, one turn per downloader: asked one chunk at a
time for ``one_turn_seconds``), or none (slots and queue full: asked nothing for a
``busy_backoff`` draw, doubled for each refusal in a row since it last delivered us a
chunk, at most ``busy_backoff_max``).
"""

from __future__ import annotations

import random

from shoal.client.config import AgentConfig
from shoal.protocol.swarm import ChunkPicker
from shoal.protocol.transfer import Address


def peer_refused_busy(
    picker: ChunkPicker[Address], peer: Address, now: float, config: AgentConfig, rng: random.Random
) -> None:
    """``peer`` refused a request of ours BUSY (``picker.failed`` already called)."""
    if picker.in_flight(peer):
        picker.one_turn(peer, now + config.one_turn_seconds)
        return
    draw = rng.uniform(*config.busy_backoff)
    picker.busy(peer, now + picker.busy_peers.backoff(peer, draw, config.busy_backoff_max))
