"""Reliable chunk transfer over UDP as a sans-I/O state machine (see ``engine``)."""

from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.congestion import DelayReno, Ledbat, RttEstimator
from shoal.protocol.transfer.engine import TransferCounters, TransferEngine
from shoal.protocol.transfer.events import (
    Address,
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    ChunkStarted,
    Event,
    PeerPortClosed,
    RequestCancelled,
    Role,
    TransferTimedOut,
    VersionRejected,
)
from shoal.protocol.transfer.states import LocalProtocolError, TooManyDownloads
from shoal.wire.messages import Mode, RefusalReason

__all__ = [
    "Address",
    "ChunkCorrupted",
    "ChunkDelivered",
    "ChunkReceived",
    "ChunkRefused",
    "ChunkRequested",
    "ChunkStarted",
    "DelayReno",
    "Event",
    "Ledbat",
    "LocalProtocolError",
    "Mode",
    "PeerPortClosed",
    "RefusalReason",
    "RequestCancelled",
    "Role",
    "RttEstimator",
    "TooManyDownloads",
    "TransferConfig",
    "TransferCounters",
    "TransferEngine",
    "TransferTimedOut",
    "VersionRejected",
]
