"""How many stripes an office's WAN copy is split in: one where one uplink keeps up.

Theory of operation
-------------------
An office's WAN copy of a content is fetched by ``k`` stripe holders at once
(``shoal.server.rendezvous``); each receives its stripe at about ``C/k`` (the office's
WAN rate ``C`` shared by ``k`` flows from the server) and must send every chunk of it on
into the office through its own uplink ``u``.

* One stripe (``k = 1``) fills the WAN pipe from the first chunk, and the chunks come in
  order, one every ``chunk/C``: the office's pipeline starts after one chunk time. With
  ``k`` stripes the first chunks are complete only after ``k`` chunk times, all at once,
  and the last ones likewise, and ``k`` processes of the office share the work of each
  WAN chunk time: on the lab's branch-flash (50 Mbit/s WAN, 1 Gbit/s clients) striping
  made T_last 1.04-1.19 x what one holder did (bisected to the striped rendezvous).
* One holder's uplink must send every chunk at least once, so one holder is enough only
  where its uplink carries the WAN's rate many times over; where it does not (issue 9's
  20 Mbit/s uplinks behind 100 Mbit/s) one holder's uplink sets the pace (``F/u``), and
  in the simulator striping gains wherever ``u <= 2 C`` (1.96 against 2.42 x T_lb1 at
  ``u = 2 C``; 2.55 against 2.98 at ``u = C``), and up to ``u = 10 C`` (short
  transfers: the holders' flows fill the WAN sooner than one flow's start), so there
  every client that will ask gets a stripe (up to the cap), as before. Fewer stripes
  sized to the uplinks (``ceil(1.25 C / u)``) lost there: 2 stripes at ``u = C`` gave
  2.90.

So ``stripe_count`` gives one stripe per ``MIN_CHUNKS_PER_STRIPE`` chunks where the
office's links are known and a client's uplink is at least ``ONE_HOLDER_RATIO`` times its
WAN (one holder for a content of few chunks), and otherwise one per client
that will ask, never more than the server's cap (``ServerSettings.max_stripes``) or the
chunks (``docs/network.md``, "How many stripes").

The links are the office's *link profile* (``OfficeLinks``), set on the server
(``shoal server run --office-links NAME=WAN/UP``, Mbit/s) as an administrator knows
them: a fresh office has no measured rates when its first client asks (the clients
measure their upload times only once they upload, and the server its WAN rate only from
its own deliveries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MIN_CHUNKS_PER_STRIPE",
    "ONE_HOLDER_RATIO",
    "OfficeLinks",
    "parse_office_links",
    "stripe_count",
]

ONE_HOLDER_RATIO = 20.0
"""One holder fetches the whole WAN copy where a client's uplink is at least this many
times the office's WAN. Measured (``docs/network.md``, "How many stripes"): at 20 x
(the lab's branch-flash, 50 Mbit/s behind 1 Gbit/s clients) one holder was faster in the
lab and equal in the simulator (1.21 against 1.20 x T_lb1); at 10 x and below striping
was faster in the simulator (10 x: 1.80 against 2.21; 4 x: 1.88 against 2.29, medians
of three seeds), where the holders' flows from the server start together and fill a
short transfer's WAN sooner than one flow does."""


MIN_CHUNKS_PER_STRIPE = 16
"""Where one uplink keeps up (``ONE_HOLDER_RATIO``), each stripe still gets at least
this many chunks: striping costs such an office only where a stripe is a few chunks
(the first complete chunks come ``k`` chunk times late), and gains where the content
has many (the holders' flows fill the WAN sooner and share the relaying). Measured in
the simulator, 4 clients on 1 Gbit/s behind 50 Mbit/s, 8 MiB: in 1 MiB chunks (8) one
holder 1.10 x T_lb1, striped 1.10, and one holder faster in the lab; in 128 KiB chunks
(64, the default chunk size since packages get >= 128 chunks) one holder 1.30, 4
stripes 1.07."""


@dataclass(frozen=True, slots=True)
class OfficeLinks:
    """An office's link rates as the server is told them (Mbit/s)."""

    wan_mbit: float
    """The office's WAN downlink: how fast the server's copy can come in."""
    client_up_mbit: float
    """A typical client's uplink: how fast one holder can pass chunks on."""

    def __post_init__(self) -> None:
        if not (self.wan_mbit > 0 and self.client_up_mbit > 0):
            raise ValueError(
                f"link rates must be positive: WAN {self.wan_mbit}, uplink {self.client_up_mbit}"
            )

    @property
    def one_holder_keeps_up(self) -> bool:
        """Is one client's uplink at least ``ONE_HOLDER_RATIO`` times the WAN?"""
        return self.client_up_mbit >= ONE_HOLDER_RATIO * self.wan_mbit


def stripe_count(links: OfficeLinks | None, candidates: int, chunk_count: int, cap: int) -> int:
    """How many stripes an office's WAN copy of a ``chunk_count``-chunk content is split
    in, with ``candidates`` clients of the office that will ask for it, ``cap`` at most,
    and ``links`` the office's link profile (None: not known)."""
    if links is not None and links.one_holder_keeps_up:
        return max(1, min(cap, candidates, chunk_count // MIN_CHUNKS_PER_STRIPE))
    return max(1, min(cap, candidates, chunk_count))


def parse_office_links(entries: Iterable[str]) -> Mapping[str, OfficeLinks]:
    """``NAME=WAN/UP`` entries (Mbit/s; ``--office-links``) as a mapping by office name.

    Raises ``ValueError`` naming the entry that is wrong."""
    profiles: dict[str, OfficeLinks] = {}
    for entry in entries:
        name, equals, rates = entry.rpartition("=")
        wan, slash, up = rates.partition("/")
        try:
            if not (equals and slash and name):
                raise ValueError("expected NAME=WAN_MBIT/UPLINK_MBIT")
            profiles[name] = OfficeLinks(float(wan), float(up))
        except ValueError as error:
            raise ValueError(f"office links {entry!r}: {error}") from None
    return profiles
