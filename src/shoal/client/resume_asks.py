"""The server is asked the rest of a chunk we hold a prefix of, off our stripes too
(issues 9 and 10).

A client asks the server only the chunks of its stripes (``shoal.client.lease``). But a
prefix may be of a chunk that is not in them (any more): a killed holder's restarted
process loads the prefixes of the chunks it was fetching from their partial files
(``shoal.client.prefix_files``), and meanwhile its stripes passed to other holders; a
holder cut off by a WAN outage or a server restart keeps its prefixes in memory and may
come back with other stripes. Asked of nobody, such a chunk is fetched whole by the
stripe's new holder (or waits out the server's hold for us, ``shoal.server.cut_chunks``),
and the prefix's bytes crossed the WAN for nothing.

So each such chunk is offered by the server as well (``ServerOrigin.resuming``), and
the picker asks it there only while no peer of the office holds it (the origin of last
resort, ``shoal.protocol.swarm``); the request carries the prefix's length as its offset,
and the server serves the rest of it stripe or not (``shoal.server.resumes``). Bounded
by what the server serves a device off its stripes (``RESUME_MAX``, its
``PER_DEVICE``); one the server refuses ``BUSY`` is not asked off the lease again, and
its prefix waits for whoever is asked the chunk next (as before).
"""

from __future__ import annotations

from shoal.client.download import Download
from shoal.client.lease import offer_server
from shoal.client.partials import Partials
from shoal.client.registration import RegistrationMachine


def ask_rests(download: Download | None, partials: Partials, office: RegistrationMachine) -> None:
    """Offer the server the chunks of ``download`` we hold a prefix of and not the chunk
    (after a lease answer, a restart's load of the partial files, a request cut)."""
    if download is None or download.picker is None or not download.origin.answered:
        return  # the first lease answer asks again
    picker, origin = download.picker, download.origin
    prefixed = partials.chunks(download.content_id)
    if not prefixed and not origin.resuming:
        return  # the common case (this runs after every request that ends unserved)
    have = picker.have
    for chunk_index in [index for index in origin.resuming if index in have]:
        origin.resumed(chunk_index)
    added = False
    for chunk_index in prefixed:
        if chunk_index not in have and origin.resume(chunk_index):
            added = True
    if added:
        offer_server(download, office.server_data_address(download.mode))
