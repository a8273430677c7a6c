"""Who a client is, where its server is, and what the agent needs of its cache.

Shared by the agent's machines (``registration``, ``assignments``, ``downloads``,
``serving``); ``shoal.client.agent`` re-exports both names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shoal import __version__, ports
from shoal.client.trust import TrustState
from shoal.core.chunkset import ChunkSet
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.protocol.transfer import Address
from shoal.store.content_store import EntryInfo


class ContentStoreLike(Protocol):
    """What the agent needs of ``shoal.store.ContentStore``."""

    def __contains__(self, content_id: object) -> bool: ...
    def add(self, manifest_file: bytes, *, pinned: bool = False) -> EntryInfo: ...
    def manifest(self, content_id: ContentId) -> Manifest: ...
    def verified(self, content_id: ContentId) -> ChunkSet: ...
    def verified_count(self, content_id: ContentId) -> int: ...
    def info(self, content_id: ContentId) -> EntryInfo: ...
    def entries(self) -> list[EntryInfo]: ...
    def write_chunk(self, content_id: ContentId, chunk_index: int, data: bytes) -> bool: ...
    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes | bytearray]]
    ) -> bool: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...
    def pin(self, content_id: ContentId) -> None: ...
    def unpin(self, content_id: ContentId) -> None: ...
    def write_partial(
        self, content_id: ContentId, chunk_index: int, offset: int, data: bytes | memoryview
    ) -> bool: ...
    def read_partials(self, content_id: ContentId) -> dict[int, bytes]: ...
    def drop_partial(self, content_id: ContentId, chunk_index: int) -> None: ...


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Who this client is and where its server is; ports as installed."""

    device_key: DeviceKey
    """This device's X25519 key: its device ID, and its control key with the server."""
    hostname: str
    ip: str
    subnet_prefix: int
    server: Address
    enrollment_token: bytes
    """From the enrollment bundle: mixed into the control key (never logged)."""
    trust: TrustState
    """The console key(s) pinned at enrollment, and the newest document sequence."""
    control_port: int = ports.CONTROL
    discovery_port: int = ports.DISCOVERY
    data_port: int = ports.FOREGROUND_DATA
    background_port: int = ports.BACKGROUND_DATA
    extra_broadcast_ports: tuple[int, ...] = ()
    """Discovery ports of peers on the other port set (main or alternative)."""
    version: str = __version__
    max_in_flight: int = 16
    write_backlog_bytes: int = 4 << 20
    """No new chunk is asked for while this many received bytes wait for the disk."""
    upload_budget_bytes: int = 8 << 20
    """Chunk bytes held for peers at once; more requests wait (``UploadSlots``)."""
    per_peer_in_flight: int = 4
    swarm_fanout: int = 1
    """Downloaders that fetch a new chunk from its first holder (``ChunkPicker``)."""
    rate_horizon: float = 0.5
    """Requests to one peer: what its measured rate delivers in this many seconds, plus
    one (``ChunkPicker``)."""
    upload_target_rate: float = 256 * 1024
    """Bytes per second each upload keeps at least (``UploadSlots``): a slow uplink
    serves few downloaders at once, each at its full rate."""
    busy_backoff: tuple[float, float] = (0.05, 0.25)
    """Seconds (random in this range) before asking again a peer that refused BUSY,
    doubled for each refusal in a row since it last delivered us a chunk."""
    busy_backoff_max: float = 1.0
    """At most this long (a full holder's queue frees a place every chunk time)."""
    one_turn_seconds: float = 2.0
    """A peer that refused BUSY while it held a request of ours is asked one chunk at a
    time for this long (``ChunkPicker.one_turn``)."""
    peer_failure_limit: int = 3
    lease_renew_fraction: float = 0.3
    register_retry_seconds: float = 30.0
    checkin_jitter: float = 0.2
    counter_start: int | None = None
    """First control counter (the shell: wall clock in microseconds; default: ``now``)."""
    wall_offset: float | None = None
    """Wall clock minus the agent's clock, to check the expiry of certificates and signed
    documents (None: unchecked)."""

    @property
    def device_id(self) -> bytes:
        return self.device_key.device_id

    @property
    def device_hex(self) -> str:
        return self.device_id.hex()

    @property
    def subnet(self) -> str:
        return str(ipaddress.ip_network(f"{self.ip}/{self.subnet_prefix}", strict=False))

    @property
    def broadcast_address(self) -> str:
        network = ipaddress.ip_network(self.subnet)
        return str(network.broadcast_address)
