"""The registry's clients grouped by office, for the scans that concern one office.

A lease's stripe count and a WiFi client's peer list look at the clients of one office;
scanning the whole registry for them made an estate's first leases quadratic in its
size (10,000 devices, 500 offices: every lease read 10,000 records). ``OfficeRoster``
keeps, per office, its clients in the registry's own order (the order a peer list's
ties keep), so such a scan reads one office.

It is derived state: ``ServerCore`` tells it of each new client, each client that
leaves, and marks it stale when a client moves to another address or the topology
changes (a move would otherwise put the client last in its new office, not where the
registry has it); a stale roster, or one whose size no longer matches the registry's
(a record added or removed behind its back), is rebuilt from the registry on the next
read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shoal.server.registry import ClientRecord

__all__ = ["OfficeRoster"]


class OfficeRoster:
    """Registered clients per office name (``None``: in no office), registry order."""

    def __init__(self) -> None:
        self._members: dict[str | None, dict[bytes, ClientRecord]] = {}
        self._office_of_device: dict[bytes, str | None] = {}
        self._stale = True

    def mark_stale(self) -> None:
        """Rebuild before the next read (a client moved, or the topology changed)."""
        self._stale = True

    def add(self, client: ClientRecord, office: str | None) -> None:
        """``client`` joined the registry (last in its order) in ``office``."""
        if self._stale:
            return  # rebuilt from the registry on the next read, with it
        if client.device_id in self._office_of_device:
            self._stale = True  # not new after all: its place is the registry's to say
            return
        self._office_of_device[client.device_id] = office
        self._members.setdefault(office, {})[client.device_id] = client

    def remove(self, device_id: bytes) -> None:
        """The client left the registry."""
        if self._stale or device_id not in self._office_of_device:
            return
        office = self._office_of_device.pop(device_id)
        members = self._members[office]
        del members[device_id]
        if not members:
            del self._members[office]

    def clients_in(
        self,
        office: str,
        registry: dict[bytes, ClientRecord],
        office_of: Callable[[str], str | None],
    ) -> Iterable[ClientRecord]:
        """The clients of ``office``, in ``registry``'s order (rebuilt from it, placing
        each address with ``office_of``, when stale or out of step with it)."""
        if self._stale or len(self._office_of_device) != len(registry):
            self._rebuild(registry, office_of)
        return self._members.get(office, {}).values()

    def _rebuild(
        self, registry: dict[bytes, ClientRecord], office_of: Callable[[str], str | None]
    ) -> None:
        self._members, self._office_of_device, self._stale = {}, {}, False
        for client in registry.values():
            self.add(client, office_of(client.ip))
