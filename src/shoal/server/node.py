"""The P2P server as sans-I/O machines: control, data planes, origin store.

``ServerNode`` is to the server what ``AgentCore`` is to the client: it owns the
control machine and two transfer engines (foreground and background data ports) and,
after any input, ``poll(now)`` answers chunk requests:

* a request whose content ID is the SHA-256 of a blob the server holds (the signed
  assignment document, a manifest file) is served to any registered client;
* a content chunk is served from the origin store only when ``ServerCore`` allows it
  (the client holds its office's rendezvous lease, or is served directly), else it is
  refused ``BUSY``: the WAN budget is enforced on the data plane too;
* anything else is refused ``NOT_FOUND``.

None of this is reached by a forged source address: the transfer engines answer a
request without the requester's address-validation token with a 16-byte RETRY only
(RFC 9000 §8.1.2), so a blob or chunk is sent only to an address that proved it
receives there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal import ports
from shoal.protocol.serving import serve_from
from shoal.protocol.transfer import (
    ChunkDelivered,
    ChunkRequested,
    Mode,
    PeerPortClosed,
    RefusalReason,
    TransferConfig,
    TransferEngine,
)
from shoal.server.control import ServerControl
from shoal.server.core import ServerCore
from shoal.store.content_store import ContentStore


@dataclass(slots=True)
class OriginCounters:
    blobs_served: int = 0
    chunks_served: int = 0
    bytes_served: int = 0
    refused_busy: int = 0
    refused_not_found: int = 0
    refused_banned: int = 0
    """Chunks queued or under way to a peer when its office banned it, refused."""


class ServerNode:
    """Sans-I/O P2P server: bindings for the shell or the simulator, and ``poll``."""

    def __init__(
        self,
        core: ServerCore,
        origin: ContentStore,
        now: float,
        *,
        control_port: int = ports.CONTROL,
        transfer_config: TransferConfig | None = None,
        counter_base: int = 0,
    ) -> None:
        self.core = core
        self.origin = origin
        self.control = ServerControl(core, counter_base)
        self.control_port = control_port
        self.counters = OriginCounters()
        self.engines = {
            Mode.FOREGROUND: TransferEngine(config=transfer_config, now=now),
            Mode.BACKGROUND: TransferEngine(config=transfer_config, now=now),
        }

    def bindings(self) -> dict[int, Any]:
        settings = self.core.settings
        return {
            self.control_port: self.control,
            settings.data_port: self.engines[Mode.FOREGROUND],
            settings.background_port: self.engines[Mode.BACKGROUND],
        }

    def poll(self, now: float) -> None:
        banned = self.core.banned_to_stop
        while banned:
            # What a liar is sent before its ban is lost to its office, and so is what is
            # still queued for it after: without this, a banned holder's queue kept
            # draining over the WAN (a 100-chunk simulated office: 4 of the 5 chunks
            # the liar was sent left after its ban).
            peer_ip = banned.pop()
            for engine in self.engines.values():
                self.counters.refused_banned += engine.refuse_uploads_to(
                    peer_ip, self.origin, RefusalReason.BUSY, now
                )
        for engine in self.engines.values():
            while (event := engine.next_event()) is not None:
                if isinstance(event, ChunkRequested):
                    self._serve(engine, event, now)
                elif isinstance(event, ChunkDelivered):
                    self.counters.chunks_served += 1
                    share = self.core.wan_copy.chunk_delivered(
                        event.peer[0], event.content_id, event.chunk_index, now
                    )
                    if share is not None:  # a stripe closed: the others take its WAN
                        engine.raise_path_rate(*share)
                elif isinstance(event, PeerPortClosed):
                    self.core.wan_copy.process_gone(event.peer[0])

    def _serve(self, engine: TransferEngine, event: ChunkRequested, now: float) -> None:
        blob = self.core.blob(event.content_id.digest)
        if (
            blob is not None
            and event.chunk_index == 0
            and event.chunk_length == len(blob)
            and self.core.client_at(event.peer[0]) is not None
        ):
            self.counters.blobs_served += 1
            engine.send_chunk(event.peer, event.request_id, memoryview(blob)[event.offset :], now)
            return
        if event.content_id in self.origin and not self.core.may_serve_content(
            event.peer[0], event.content_id, now, event.chunk_index, bool(event.offset)
        ):
            self.counters.refused_busy += 1  # the WAN budget: not this office's turn
            engine.refuse_chunk(event.peer, event.request_id, RefusalReason.BUSY, now)
            return
        rate = self.core.wan_copy.holder_rate(event.peer[0], event.content_id, now)
        sent = serve_from(self.origin, engine, event, now, rate)
        self.counters.bytes_served += sent
        if sent:
            self.core.wan_copy.chunk_served(
                event.peer[0], event.content_id, now, event.chunk_index, bool(event.offset)
            )
        if not sent:
            self.counters.refused_not_found += 1

    def handle_timer(self, now: float) -> None:
        pass

    def has_events(self) -> bool:
        """``poll`` reads the engines' events and the bans to enforce; no timer of its own."""
        return bool(self.core.banned_to_stop) or any(
            engine.has_events() for engine in self.engines.values()
        )

    def get_timer(self) -> float | None:
        return None
