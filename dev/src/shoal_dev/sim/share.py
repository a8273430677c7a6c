"""How a shoal transfer shares one bottleneck with a TCP flow, in virtual time.

Theory of operation
-------------------
Two offices: the senders sit in "core", the receivers in "branch", and the branch's
WAN downlink is the bottleneck (``rate_mbit``, a drop-tail queue of ``buffer_packets``
full-size packets, as the lab's HTB queue). Every other link is fast. The round-trip
propagation delay ``rtt`` is split over the four WAN hops.

A *flow* is either a shoal transfer (a ``TransferEngine`` pair: the receiver keeps
``window`` chunk requests outstanding, the sender serves one random chunk for every
index) or a bulk TCP flow (``shoal_dev.sim.tcp``). The first flow starts at 0; a late one
at ``late_start``. Each flow's received payload bytes are sampled every ``bin_seconds``,
which gives its rate over time (``FlowSeries``).

``share_scenarios`` runs what issue 9's targets compare: in the foreground, shoal then
a late TCP flow, against the reference of TCP then a late TCP flow; in the background,
shoal then a late TCP flow, TCP alone, and shoal alone.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkRequested,
    Mode,
    TooManyDownloads,
    TransferConfig,
    TransferEngine,
)
from shoal_dev.sim.network import Host, Machine, SimNetwork
from shoal_dev.sim.stalls import StallingMachine
from shoal_dev.sim.tcp import TcpReceiver, TcpSender

FlowKind = Literal["shoal", "tcp"]
_PORT = 7000
_CONTENT_ID = ContentId(hashlib.sha256(b"share").digest())
#: Bytes of one IP packet at the bottleneck (what ``buffer_packets`` counts).
PACKET_BYTES = 1500


@dataclass(frozen=True, slots=True)
class ShareSetup:
    """The bottleneck and the timeline of one run."""

    rate_mbit: float = 20.0
    rtt: float = 0.1
    buffer_packets: int = 1000
    #: When the late flow starts (the first one has reached its rate by then).
    late_start: float = 8.0
    #: How long both run together; rates are averaged over its second half... see
    #: ``measure_from``.
    together: float = 30.0
    #: Seconds after the late flow's start that the averages leave out (its start-up).
    settle: float = 5.0
    bin_seconds: float = 0.5
    seed: int = 1

    @property
    def rate_bytes(self) -> float:
        return self.rate_mbit * 1e6 / 8

    @property
    def end(self) -> float:
        return self.late_start + self.together

    @property
    def measure_from(self) -> float:
        return self.late_start + self.settle


@dataclass(slots=True)
class FlowSeries:
    """One flow's received payload over time."""

    name: str
    kind: FlowKind
    start: float
    times: list[float] = field(default_factory=list)
    mbit: list[float] = field(default_factory=list)

    def mean_mbit(self, begin: float, end: float) -> float:
        """Mean rate over the bins inside [begin, end]."""
        values = [
            rate
            for when, rate in zip(self.times, self.mbit, strict=True)
            if begin < when <= end + 1e-9
        ]
        return sum(values) / len(values) if values else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "start": self.start,
                "times": self.times, "mbit": self.mbit}  # fmt: skip


class _ShoalReceiver:
    """Keeps ``window`` chunk requests outstanding to one sender, in ``mode``."""

    def __init__(
        self, engine: TransferEngine, sender: tuple[str, int], mode: Mode, chunk: bytes,
        window: int, start: float,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.sender = sender
        self.mode = mode
        self.chunk = chunk
        self.chunk_hash = hashlib.sha256(chunk).digest()
        self.window = window
        self.start = start
        self.next_index = 0

    def poll(self, now: float) -> None:
        while self.engine.next_event() is not None:
            pass
        if now < self.start:
            return
        while self.engine.active_downloads < self.window:
            try:
                self.engine.request_chunk(
                    self.sender, _CONTENT_ID, self.next_index, len(self.chunk),
                    self.chunk_hash, self.mode, now,
                )  # fmt: skip
            except TooManyDownloads:
                return
            self.next_index += 1

    def handle_timer(self, now: float) -> None:
        return None

    def get_timer(self) -> float | None:
        return self.start if self.next_index == 0 else None

    def has_events(self) -> bool:
        return True  # polls after every input, as before the pump's machine-only steps

    def received_bytes(self) -> int:
        return self.engine.counters.payload_bytes_received


class _ShoalSender:
    """Serves the same chunk for every index asked."""

    def __init__(self, engine: TransferEngine, chunk: bytes) -> None:
        self.engine = engine
        self.chunk = chunk

    def poll(self, now: float) -> None:
        while (event := self.engine.next_event()) is not None:
            if isinstance(event, ChunkRequested):
                self.engine.send_chunk(event.peer, event.request_id, self.chunk, now)

    def handle_timer(self, now: float) -> None:
        return None

    def get_timer(self) -> float | None:
        return None

    def has_events(self) -> bool:
        return self.engine.has_events()


class ShareNetwork:
    """The two offices and their bottleneck, with flows added one by one."""

    def __init__(self, setup: ShareSetup, config: TransferConfig | None = None) -> None:
        self.setup = setup
        self.config = config or TransferConfig()
        self.sim = SimNetwork(seed=setup.seed)
        hop_delay = setup.rtt / 4
        fast = 10e9 / 8
        self.core = self.sim.add_office("core", "10.1.0.0/16", wan_rate=fast, wan_delay=hop_delay)
        self.branch = self.sim.add_office(
            "branch", "10.2.0.0/16", wan_rate=fast, wan_delay=hop_delay
        )
        bottleneck = self.branch.wan_down
        bottleneck.rate = setup.rate_bytes
        bottleneck.buffer_seconds = setup.buffer_packets * PACKET_BYTES / setup.rate_bytes
        self.bottleneck = bottleneck
        self.flows: list[FlowSeries] = []
        #: Queuing delay at the bottleneck at the end of each bin, milliseconds.
        self.queue_ms: list[float] = []
        self._meters: list[Callable[[], int]] = []
        self._hosts = 0
        self._chunk = random.Random(setup.seed).randbytes(1 << 20)

    def _host_pair(self) -> tuple[Host, Host]:
        self._hosts += 1
        sender = self.sim.add_host(self.core, f"10.1.0.{self._hosts}")
        receiver = self.sim.add_host(self.branch, f"10.2.0.{self._hosts}")
        return sender, receiver

    def add_shoal(
        self, name: str, mode: Mode, start: float, window: int = 8,
        sender_stall: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        """A shoal flow from ``start``; ``sender_stall`` (stall, period: seconds) puts
        its sender on a busy host (``StallingMachine``)."""
        sender_host, receiver_host = self._host_pair()
        sender_engine = TransferEngine(config=self.config, now=self.sim.now)
        receiver_engine = TransferEngine(config=self.config, now=self.sim.now)
        receiver = _ShoalReceiver(
            receiver_engine, (sender_host.ip, _PORT), mode, self._chunk, window, start
        )
        bound: Machine = sender_engine
        if sender_stall is not None:
            bound = StallingMachine(sender_engine, *sender_stall)
        self.sim.bind(sender_host, _PORT, bound)
        self.sim.attach(sender_host, _ShoalSender(sender_engine, self._chunk))
        self.sim.bind(receiver_host, _PORT, receiver_engine)
        self.sim.attach(receiver_host, receiver)
        self.flows.append(FlowSeries(name, "shoal", start))
        self._meters.append(receiver.received_bytes)

    def add_tcp(self, name: str, start: float) -> None:
        sender_host, receiver_host = self._host_pair()
        receiver = TcpReceiver()
        sender = TcpSender((receiver_host.ip, _PORT), start=start)
        self.sim.bind(receiver_host, _PORT, receiver)
        self.sim.bind(sender_host, _PORT, sender)
        self.flows.append(FlowSeries(name, "tcp", start))
        self._meters.append(lambda: receiver.stats.payload_bytes)

    def run(self) -> list[FlowSeries]:
        """Run to ``setup.end``, sampling every flow's rate each bin."""
        setup = self.setup
        previous = [meter() for meter in self._meters]
        when = setup.bin_seconds
        while when <= setup.end + 1e-9:
            self.sim.run(when)
            for index, meter in enumerate(self._meters):
                now_bytes = meter()
                flow = self.flows[index]
                flow.times.append(round(when, 6))
                flow.mbit.append((now_bytes - previous[index]) * 8 / setup.bin_seconds / 1e6)
                previous[index] = now_bytes
            self.queue_ms.append(max(0.0, self.bottleneck.free_at - when) * 1000)
            when += setup.bin_seconds
        return self.flows


@dataclass(slots=True)
class ShareRun:
    """One run of a scenario: its flows and the bottleneck's queue over time."""

    scenario: str
    flows: list[FlowSeries]
    queue_ms: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "flows": [flow.as_dict() for flow in self.flows],
                "queue_ms": self.queue_ms}  # fmt: skip


def run_pair(
    setup: ShareSetup, first: FlowKind | None, late: FlowKind | None, mode: Mode,
    config: TransferConfig | None = None, scenario: str = "",
) -> ShareRun:  # fmt: skip
    """One run: ``first`` from 0 and ``late`` from ``setup.late_start`` (either may be None)."""
    network = ShareNetwork(setup, config)
    for name, kind, start in (("first", first, 0.0), ("late", late, setup.late_start)):
        if kind == "shoal":
            network.add_shoal(f"shoal-{mode.name.lower()}", mode, start)
        elif kind == "tcp":
            network.add_tcp(f"tcp-{name}", start)
    flows = network.run()
    return ShareRun(scenario, flows, network.queue_ms)


#: What each mode's targets compare: scenario name -> (first flow, late flow).
SCENARIOS: dict[Mode, dict[str, tuple[FlowKind | None, FlowKind | None]]] = {
    Mode.FOREGROUND: {
        "shoal+tcp": ("shoal", "tcp"),
        "tcp+tcp": ("tcp", "tcp"),
        "shoal-alone": ("shoal", None),
    },
    Mode.BACKGROUND: {
        "shoal+tcp": ("shoal", "tcp"),
        "tcp-alone": (None, "tcp"),
        "shoal-alone": ("shoal", None),
    },
}


def run_scenarios(
    setup: ShareSetup, mode: Mode, config: TransferConfig | None = None
) -> dict[str, ShareRun]:
    """Every run the targets of ``mode`` need."""
    return {
        name: run_pair(setup, first, late, mode, config, name)
        for name, (first, late) in SCENARIOS[mode].items()
    }


def _flow(run: ShareRun, kind: FlowKind, late: bool | None = None) -> FlowSeries:
    for flow in run.flows:
        if flow.kind == kind and (late is None or (flow.start > 0) == late):
            return flow
    raise KeyError(kind)


def verdicts(
    runs: dict[str, ShareRun], mode: Mode, rate_mbit: float, begin: float, end: float
) -> dict[str, Any]:
    """Issue 9's share targets over [begin, end] (the late flow settled), as figures.

    Foreground: the late TCP flow beside shoal keeps >= 80% of what it keeps beside a
    first TCP flow. Background: TCP beside shoal keeps >= 90% of its rate alone, and
    shoal alone takes >= 90% of the link. Each verdict also gives the bottleneck's
    median queue with shoal alone.
    """
    shoal_alone = _flow(runs["shoal-alone"], "shoal").mean_mbit(begin, end)
    queue = sorted(
        value
        for when, value in zip(runs["shoal-alone"].flows[0].times, runs["shoal-alone"].queue_ms,
                               strict=True)
        if begin < when <= end
    )  # fmt: skip
    result: dict[str, Any] = {
        "shoal_alone_mbit": shoal_alone,
        "shoal_alone_link_share": shoal_alone / rate_mbit,
        "shoal_alone_median_queue_ms": queue[len(queue) // 2] if queue else 0.0,
    }
    tcp_beside_shoal = _flow(runs["shoal+tcp"], "tcp").mean_mbit(begin, end)
    shoal_beside_tcp = _flow(runs["shoal+tcp"], "shoal").mean_mbit(begin, end)
    result["tcp_beside_shoal_mbit"] = tcp_beside_shoal
    result["shoal_beside_tcp_mbit"] = shoal_beside_tcp
    if mode is Mode.FOREGROUND:
        reference = _flow(runs["tcp+tcp"], "tcp", late=True).mean_mbit(begin, end)
        result["tcp_beside_tcp_mbit"] = reference
        result["ratio"] = tcp_beside_shoal / reference if reference else 0.0
        result["target"] = "TCP beside shoal >= 0.8 x TCP beside TCP"
        result["met"] = result["ratio"] >= 0.8
    else:
        alone = _flow(runs["tcp-alone"], "tcp").mean_mbit(begin, end)
        result["tcp_alone_mbit"] = alone
        result["ratio"] = tcp_beside_shoal / alone if alone else 0.0
        result["target"] = "TCP beside shoal >= 0.9 x TCP alone; shoal alone >= 0.9 x link"
        result["met"] = result["ratio"] >= 0.9 and shoal_alone >= 0.9 * rate_mbit
    return result
