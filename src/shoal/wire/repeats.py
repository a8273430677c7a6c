"""Discovery datagrams that repeat byte for byte: decoded once, encoded once.

Discovery datagrams repeat: a broadcast query reaches every host of an office (in the
simulator, one process, the same bytes each), a settled search sends the same query
every few seconds, and a push round sends the same HAVE (query ID 0, no token: the peer
proved its address) to each of its neighbours. A message is a value of its bytes, so
``decode_remembered`` keeps the last ``MAX_REMEMBERED`` decodings of small datagrams
and answers a repeat with the same message object, and ``encode_have`` encodes a HAVE
identical to the last one only once (issue 10: a chunk costs ~14 discovery datagrams,
each decoded, and most of them encoded, for ~10 us).

Bounded whatever a sender does: at most ``MAX_REMEMBERED`` decodings of at most
``MAX_REMEMBERED_SIZE`` bytes, the oldest forgotten first; only ``bytes`` (a
``memoryview`` may be a receive buffer that the next read overwrites), and only
datagrams that decoded: a malformed one raises again, and is counted again. Decoded
messages are shared: their receivers must not change them (``Have.chunks`` is copied
by whoever keeps it, as ``ChunkPicker.peer_has`` does).
"""

from __future__ import annotations

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.wire.messages import Have, Message, decode_datagram, encode_datagram

MAX_REMEMBERED = 256
"""Decodings kept: an office's live queries and the last push rounds fit."""
MAX_REMEMBERED_SIZE = 2048
"""Larger datagrams (HAVEs of packages over ~16,000 chunks) are decoded each time."""

_remembered: dict[bytes, Message] = {}
_last_have: list[tuple[tuple[int, ContentId, bytes, int, bytes], bytes]] = []


def decode_remembered(data: bytes | bytearray | memoryview) -> Message:
    """``decode_datagram(data)``, answered from the last decodings when ``data`` is
    bytes decoded already; raises as ``decode_datagram`` does."""
    if type(data) is not bytes or len(data) > MAX_REMEMBERED_SIZE:
        return decode_datagram(data)
    message = _remembered.get(data)
    if message is None:
        message = decode_datagram(data)  # raises before anything is remembered
        if len(_remembered) >= MAX_REMEMBERED:
            del _remembered[next(iter(_remembered))]  # the oldest
        _remembered[data] = message
    return message


def encode_have(query_id: int, content_id: ContentId, chunks: ChunkSet, token: bytes) -> bytes:
    """``encode_datagram(Have(query_id, content_id, chunks, token))``: the last HAVE
    encoded again if it is the same one (a push round's, to proven peers)."""
    key = (query_id, content_id, token, chunks.count, chunks.to_bytes())
    if _last_have and _last_have[0][0] == key:
        return _last_have[0][1]
    datagram = encode_datagram(Have(query_id, content_id, chunks, token))
    _last_have[:] = [(key, datagram)]
    return datagram
