"""Discovery datagrams (codes 0x10..0x1F): WHO_HAS and HAVE, and WHO_HAS's padding.

Layouts: the table in ``shoal.wire.messages``. A HAVE carries the answerer's token for
the asker (zero once the asker is validated), a WHO_HAS echoes it, and a WHO_HAS is
padded with zero bytes so that the answer it asks for is at most 3x its size
(RFC 9000 §8.1; §14.1 pads the client's Initial for the same reason).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import DIGEST_SIZE, ContentId
from shoal.wire.buffer import Buffer
from shoal.wire.datagram import NO_TOKEN, TOKEN_SIZE, pull_content_id, pull_token, push_token
from shoal.wire.errors import MalformedDatagram

#: Bytes of a HAVE datagram before its bitmap (prefix included).
HAVE_HEADER_SIZE = 4 + 4 + 32 + TOKEN_SIZE + 4
#: Bytes of a WHO_HAS datagram without padding (prefix included).
WHO_HAS_SIZE = 4 + 4 + 32 + TOKEN_SIZE
#: Most chunks one HAVE bitmap may describe: one bit per chunk, so that the whole HAVE
#: (52 bytes before the bitmap) fits a 1400-byte datagram. 10,784 chunks of 1 MiB is a
#: 10.5 GiB package; larger ones need a ranged HAVE (the discovery issue decides).
MAX_HAVE_CHUNKS = (1400 - HAVE_HEADER_SIZE) * 8
_HAVE_FIELDS = struct.Struct(f">I{DIGEST_SIZE}s{TOKEN_SIZE}sI")
"""query ID, content ID, token, chunk count: ``HAVE_HEADER_SIZE`` but the prefix."""


@dataclass(frozen=True, slots=True)
class WhoHas:
    query_id: int
    content_id: ContentId
    #: The answerer's token for our address (echoed from its HAVE), or NO_TOKEN.
    token: bytes = NO_TOKEN
    #: Zero bytes after the fields, so that the answer is at most 3x the query.
    padding: int = 0


@dataclass(frozen=True, slots=True)
class Have:
    query_id: int
    content_id: ContentId
    chunks: ChunkSet
    #: The answerer's token for the asker's address; NO_TOKEN once it is validated.
    token: bytes = NO_TOKEN


def who_has_padding(chunk_count: int | None) -> int:
    """Padding for a WHO_HAS whose answer (a HAVE of ``chunk_count`` chunks; the largest
    there is when unknown) may be sent to an unvalidated asker: the query is at least
    half the answer, so the answer plus one query back stay within 3x (RFC 9000 §8.1)."""
    count = MAX_HAVE_CHUNKS if chunk_count is None else min(chunk_count, MAX_HAVE_CHUNKS)
    answer = HAVE_HEADER_SIZE + (count + 7) // 8
    return max(0, -(-answer // 2) - WHO_HAS_SIZE)


def pull_who_has(buf: Buffer) -> WhoHas:
    query_id = buf.pull_uint32()
    content_id = pull_content_id(buf)
    token = pull_token(buf)
    padding = buf.pull_rest()
    if any(padding):
        # One encoding per message: padding is zeros (as QUIC's PADDING frames).
        raise MalformedDatagram("who-has padding that is not zero")
    return WhoHas(query_id, content_id, token, len(padding))


def push_who_has(buf: Buffer, message: WhoHas) -> None:
    buf.push_uint32(message.query_id)
    buf.push_bytes(message.content_id.digest)
    push_token(buf, message.token)
    buf.push_bytes(bytes(message.padding))


def pull_have(buf: Buffer) -> Have:
    # The fixed fields in one pull (a HAVE is most of the datagrams an office exchanges).
    query_id, digest, token, count = buf.pull_struct(_HAVE_FIELDS)
    content_id = ContentId(digest)
    if count > MAX_HAVE_CHUNKS:
        raise MalformedDatagram(f"availability for {count} chunks (at most {MAX_HAVE_CHUNKS})")
    bitmap = buf.pull_bytes((count + 7) // 8)
    try:
        chunks = ChunkSet.from_bytes(count, bitmap)
    except ValueError as error:
        raise MalformedDatagram(f"bad availability bitmap: {error}") from None
    return Have(query_id, content_id, chunks, token)


def push_have(buf: Buffer, message: Have) -> None:
    buf.push_uint32(message.query_id)
    buf.push_bytes(message.content_id.digest)
    push_token(buf, message.token)
    buf.push_uint32(message.chunks.count)
    buf.push_bytes(message.chunks.to_bytes())
