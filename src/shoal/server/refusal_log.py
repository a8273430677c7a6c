"""Each refusal of a device logged once, with its reason and what to do about it.

A device refused for the same cause retries every few seconds; the log says it once per
(device, cause), then again only when the cause changes (the count of refusals per cause
is the ``shoal_server_refusals`` metric). What to do is a table, by cause.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

from shoal.core.address import Address
from shoal.wire.control import RefusalCause, Refused

log = logging.getLogger("shoal.server.refusals")

MAX_REMEMBERED = 100_000

FIX: dict[RefusalCause, str] = {
    RefusalCause.AUTHENTICATION_FAILED: "enroll the device again with this console's "
    "bundle (`shoal client enroll`): its enrollment token is not this server's",
    RefusalCause.UNKNOWN_DEVICE: "none: the device registers again by itself",
    RefusalCause.NOT_LICENSED: "add seats to the licence, or retire unused devices in the console",
    RefusalCause.LICENCE_EXPIRED: "save a renewed licence key in the console",
    RefusalCause.VERSION_UNSUPPORTED: "upgrade the older side (the message says which)",
    RefusalCause.NOT_ACTIVATED: "save the licence key in the console to activate this server",
    RefusalCause.UNKNOWN_CONTENT: "none if the content was just deleted; else wait for the "
    "server to fetch it from the console",
    RefusalCause.NOT_ASSIGNED: "assign the application to the device (or its office) in "
    "the console; 'banned': check the device (it served bad chunks), the ban lifts by "
    "itself; 'outside every known network': add its subnet to an office in the topology, "
    "or allow direct download (server without --no-direct)",
    RefusalCause.INVALID_REQUEST: "upgrade the device's agent (it sent a value out of range)",
    RefusalCause.REPLAYED: "check the device's clock, or another device cloned from its key",
    RefusalCause.NO_CERTIFICATE: "wait for the server to reach the console (check "
    "`shoal doctor` on the server)",
    RefusalCause.ADDRESS_UNPROVEN: "none: the device proves its address and retries",
    RefusalCause.RATE_LIMITED: "none if devices are being rolled out; else look for a "
    "device re-registering in a loop",
}


class RefusalLog:
    """Remembers the last cause logged per device, to log each refusal once."""

    def __init__(self) -> None:
        self._logged: OrderedDict[bytes, RefusalCause] = OrderedDict()

    def log(self, refusals: Iterable[tuple[bytes, Address, Refused]]) -> int:
        """Log the refusals not logged yet; returns how many lines were written."""
        lines = 0
        for device_id, address, refusal in refusals:
            if self._logged.get(device_id) is refusal.cause:
                continue
            self._logged[device_id] = refusal.cause
            self._logged.move_to_end(device_id)
            if len(self._logged) > MAX_REMEMBERED:
                self._logged.popitem(last=False)
            fix = FIX.get(refusal.cause, "")
            log.warning(
                "refused device %s at %s: %s (fix: %s)",
                device_id.hex()[:8],
                address[0],
                refusal.message,
                fix,
                extra={
                    "device_id": device_id.hex(),
                    "address": address[0],
                    "cause": refusal.cause.name.lower(),
                    "fix": fix,
                },
            )
            lines += 1
        return lines
