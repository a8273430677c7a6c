"""A simulated client's disk that takes time: its writes answered later, as a shell's.

The simulator runs each agent with its disk effects inline (``AgentCore.disk_inline``):
a verified chunk is stored, and answered, within the poll that made it. A real client
hands them to its writer thread (``shoal.client.disk_worker``), whose batch of writes
ends with an ``fdatasync`` and the sidecar's atomic replacement (two ``fsync``): 1.0-1.3
ms on the lab's virtual disk (``benchmarks/store_write_cost.py``), tens of milliseconds
on a laptop's hard disk or on a disk shared with other work. ``DiskShell`` stands for
that shell: it polls the agent, queues its disk effects, and performs them one batch at
a time, each batch answered ``seconds`` after it started (everything queued meanwhile is
the next batch, as the writer thread takes it); reads for peers are answered at once
(the page cache).

A grid cell sets it with ``disk_ms`` (``shoal_dev.sweep.Cell``; simulator only).
"""

from __future__ import annotations

from shoal.client.agent import AgentCore
from shoal.client.disk import DiskEffect, ReadChunk, perform_disk_effects, perform_reads
from shoal_dev.sim.network import Host, SimNetwork

__all__ = ["DiskShell"]


class DiskShell:
    """``agent``'s shell on ``host`` with a disk that takes ``seconds`` per write batch
    (an ``Application`` for ``SimNetwork``)."""

    def __init__(self, network: SimNetwork, host: Host, agent: AgentCore, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a disk's batch takes a positive time, not {seconds}")
        agent.disk_inline = False
        self.network = network
        self.host = host
        self.agent = agent
        self.seconds = seconds
        self._queued: list[DiskEffect] = []
        self._writing = False
        self.batches = 0
        """Write batches performed (each one ``seconds`` long)."""

    def poll(self, now: float) -> None:
        agent = self.agent
        agent.poll(now)
        effects = agent.take_disk_effects()
        if effects:
            self._queued.extend(effects)
            self._start_batch(now)
        reads = agent.take_disk_reads()
        if reads:
            self.network.at(now, lambda: self._answer_reads(reads))

    def handle_timer(self, now: float) -> None:
        self.agent.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.agent.get_timer()

    def has_events(self) -> bool:
        return self.agent.has_events()

    def _alive(self) -> bool:
        """The process this shell runs is still the host's (not killed or restarted)."""
        return self.host.alive and self.host.application is self

    def _start_batch(self, now: float) -> None:
        if self._writing or not self._queued:
            return
        batch, self._queued = self._queued, []
        self._writing = True
        self.network.at(now + self.seconds, lambda: self._batch_done(batch))

    def _batch_done(self, batch: list[DiskEffect]) -> None:
        self._writing = False
        if not self._alive():
            return  # the process died with its writes (what reached the store stays)
        now = self.network.now
        self.batches += 1
        for result in perform_disk_effects(self.agent.store, batch):
            self.agent.disk_done(result, now)
        self.network.pump(self.host)
        self._start_batch(now)

    def _answer_reads(self, reads: list[ReadChunk]) -> None:
        if not self._alive():
            return
        now = self.network.now
        for result in perform_reads(self.agent.store, reads):
            self.agent.chunk_read(result, now)
        self.network.pump(self.host)
