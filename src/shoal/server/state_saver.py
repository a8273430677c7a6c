"""Writing what the server's core gathered to SQL, off the event loop where it can be.

Theory of operation
-------------------
``ServerCore`` changes on the loop thread and queues what the shell must write: the
registry rows that changed, the devices that expired, the bad-peer reports and the new
bans; its rendezvous leases and delivery ledger change with every grant and delivery.
``StateSaver`` writes them out:

every ``report_seconds``  the registry rows that changed and the expired devices
                          (found in slices between turns of the loop, written in bulk
                          in a worker thread: ``save_registry_soon``, called by the
                          service's report loop) and the bad-peer reports; refusals
                          and new bans go to the log;
``LEASE_SAVE_SECONDS``    after a change, the leases and the delivery ledger, and the
                          registry rows of the devices that registered since (in a
                          worker thread: ``save_loop``);
at shutdown               all of it, on the event loop (``save_now``).

A restarted server reads them back (``ServerService``), so it serves its clients
before it reaches the console again and each office keeps its holders. A registration
is saved within the second, not at the next report: a server that crashed seconds after
an office's devices registered would otherwise come back knowing none of them, and
list no peers to a device of a WiFi office (whose discovery is by unicast to the
peers the server lists) until the others checked in again, up to ``checkin_seconds``
later, while it fetched over the WAN what its office held.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shoal.net.runner import sleep_or_stop
from shoal.server.core import ClientRecord, ServerCore
from shoal.server.refusal_log import RefusalLog
from shoal.server.state_store import RowState, StateStore

__all__ = ["LEASE_SAVE_SECONDS", "StateSaver"]

log = logging.getLogger("shoal.server")
LEASE_SAVE_SECONDS = 1.0
"""How often the rendezvous leases and the delivery ledger are saved while held."""
SCAN_SLICE = 1000
"""Registry entries compared with their saved rows between two turns of the event loop."""


class StateSaver:
    """Writes the registry, the leases and the bad-peer reports of ``core`` to ``state``."""

    def __init__(self, state: StateStore, core: ServerCore, refusal_log: RefusalLog) -> None:
        self.state = state
        self.core = core
        self.refusal_log = refusal_log
        self._writing_rows = asyncio.Lock()
        """Registry rows are written by one worker thread at a time, in the order their
        states were taken: an older state must not land after a newer one."""

    async def save_loop(self, stop: asyncio.Event) -> None:
        """Within ``LEASE_SAVE_SECONDS``, save the rows of devices that registered, and
        the rendezvous leases and the delivery ledger after a grant, a free stripe or a
        delivery (in worker threads; renewals alone are not saved, a restart counts
        every holder as renewed): a server that crashes loses at most that much."""
        saved = None
        while not stop.is_set():
            await sleep_or_stop(stop, LEASE_SAVE_SECONDS)
            await self._save_registrations()
            changes = self.core.wan_copy.lease_changes
            if changes == saved:
                continue
            lease_state = self.core.wan_copy.lease_state(asyncio.get_running_loop().time())
            await asyncio.to_thread(self.state.save_leases, lease_state, time.time())
            saved = changes

    async def _save_registrations(self) -> None:
        core = self.core
        if not core.registered:
            return
        registered, core.registered = core.registered, set()
        records = [core.clients[device] for device in registered if device in core.clients]
        await self._write_rows(await self._changed_in_slices(records))

    async def _write_rows(self, states: list[RowState], expired: list[bytes] | None = None) -> None:
        if states or expired:
            async with self._writing_rows:
                await asyncio.to_thread(self.state.save_rows, states, time.time(), expired or [])

    def _log_refusals(self) -> None:
        """Say in the log which devices were refused, why and what to do: once per
        (device, cause), so a device retrying every few seconds is one line."""
        refusals = self.core.recent_refusals
        self.refusal_log.log(refusals)
        refusals.clear()

    def save_now(self) -> None:
        """Write the registry and the leases now, on the event loop (at shutdown)."""
        self.state.save_rows(*self._registry_changes())
        self.state.save_leases(self.core.wan_copy.lease_state(time.monotonic()), time.time())
        self._save_reports()

    async def save_registry_soon(self) -> None:
        """Write what changed in the registry since the last save, in a worker thread:
        with 10,000 devices, writing every row on the event loop every few seconds held
        the control path for seconds (check-ins answered after 5-8 s, registrations
        timing out)."""
        self._log_refusals()
        core = self.core
        expired, core.expired = core.expired, []
        states = self.state.changed_rows((), expired)  # forgets the expired rows
        states += await self._changed_in_slices(list(core.clients.values()))
        await self._write_rows(states, expired)
        self._save_reports()

    async def _changed_in_slices(self, records: list[ClientRecord]) -> list[RowState]:
        """``changed_rows`` of ``records`` in slices with the loop free between them:
        comparing 10,000 rows in one piece held the control path for 30-200 ms on a
        loaded machine (issue 10); 10,000 devices may also register within seconds."""
        states: list[RowState] = []
        for start in range(0, len(records), SCAN_SLICE):
            states += self.state.changed_rows(records[start : start + SCAN_SLICE], ())
            await asyncio.sleep(0)
        return states

    def _registry_changes(self) -> tuple[list[RowState], float, list[bytes]]:
        """The registry entries changed since they were last written (as plain values),
        the wall-clock time, and the expired device IDs."""
        self._log_refusals()
        core = self.core
        expired, core.expired = core.expired, []
        changed = self.state.changed_rows(core.clients.values(), expired)
        return changed, time.time(), expired

    def _save_reports(self) -> None:
        core = self.core
        reports = list(core.bad_peers.reports)
        core.bad_peers.reports.clear()
        if reports:
            self.state.add_bad_peer_reports(
                [
                    (
                        r.reporter.hex(),
                        r.content_id.hex,
                        f"{r.peer[0]}:{r.peer[1]}",
                        r.chunk_index,
                        time.time(),
                    )
                    for r in reports
                ]
            )
        while core.bad_peers.new_bans:
            ban = core.bad_peers.new_bans.popleft()
            log.warning(
                "peer %s banned in office %s: %d devices report bad chunks of %s from it",
                ban.peer_ip,
                ban.office,
                ban.reporters,
                ban.content_id.short,
            )
