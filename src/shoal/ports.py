"""UDP ports of the peer-to-peer network: the defaults, and the one ``PortSet`` that the
server, the client and the console's settings (``shoal.console.schemas.PortSet``, the
API's spelling of it) all mean."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DISCOVERY = 41440  # broadcast "who has content X" on the office subnet
CONTROL = 41441  # client -> P2P server requests
FOREGROUND_DATA = 41442  # chunk transfers a user waits for (loss-based congestion control)
BACKGROUND_DATA = 41443  # chunk transfers on spare capacity (LEDBAT)


@dataclass(frozen=True, slots=True)
class PortSet:
    """The four UDP ports of the peer-to-peer network.

    A server listens on all four; a client listens on discovery, data and background
    and sends its control requests to the server's ``control`` port.
    """

    discovery: int = DISCOVERY
    control: int = CONTROL
    data: int = FOREGROUND_DATA
    background: int = BACKGROUND_DATA

    @classmethod
    def from_console(cls, document: Mapping[str, Any], fallback: PortSet) -> PortSet:
        """The console's ``PortSet`` JSON (discovery, control, foreground_data...)."""
        return cls(
            discovery=int(document.get("discovery", fallback.discovery)),
            control=int(document.get("control", fallback.control)),
            data=int(document.get("foreground_data", fallback.data)),
            background=int(document.get("background_data", fallback.background)),
        )

    def numbers(self) -> tuple[int, int, int, int]:
        """Discovery, control, data, background: the order of the wire's port fields."""
        return (self.discovery, self.control, self.data, self.background)

    def to_console(self) -> dict[str, int]:
        """The console's JSON spelling (the inverse of ``from_console``)."""
        return {
            "discovery": self.discovery,
            "control": self.control,
            "foreground_data": self.data,
            "background_data": self.background,
        }
