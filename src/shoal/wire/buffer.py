"""A byte buffer with ``pull_*``/``push_*`` methods for fixed-width big-endian fields.

Modelled on aioquic's ``buffer.py``: a codec reads a datagram by pulling fields in order
and writes one by pushing them. Reading past the end raises ``MalformedDatagram`` (the
one error every decoder in ``shoal.wire`` raises), so a truncated datagram can never
surface as an ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct
from typing import Any

from shoal.wire.errors import MalformedDatagram

_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")


class Buffer:
    """A read cursor over received bytes (``Buffer(data)``) or a write buffer (``Buffer()``)."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes | bytearray | memoryview | None = None) -> None:
        self._data: bytearray | memoryview = bytearray() if data is None else memoryview(data)
        self._position = 0

    # -- reading -------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._position

    @property
    def remaining(self) -> int:
        """Bytes left to read."""
        return len(self._data) - self._position

    def eof(self) -> bool:
        return self._position >= len(self._data)

    def _take(self, size: int) -> int:
        start = self._position
        if size < 0 or start + size > len(self._data):
            raise MalformedDatagram(
                f"datagram truncated: needed {size} bytes at offset {start}, "
                f"only {len(self._data) - start} left"
            )
        self._position = start + size
        return start

    def pull_bytes(self, size: int) -> bytes:
        start = self._take(size)
        return bytes(self._data[start : start + size])

    def pull_rest(self) -> memoryview:
        """Everything not read yet, without copying."""
        start = self._take(self.remaining)
        return memoryview(self._data)[start:]

    def pull_uint8(self) -> int:
        start = self._take(1)
        return self._data[start]

    def pull_uint16(self) -> int:
        start = self._take(2)
        return int(_UINT16.unpack_from(self._data, start)[0])

    def pull_uint32(self) -> int:
        start = self._take(4)
        return int(_UINT32.unpack_from(self._data, start)[0])

    def pull_struct(self, layout: struct.Struct) -> tuple[Any, ...]:
        """Several fixed-width fields at once, as ``layout`` (a ``struct.Struct``) reads them."""
        start = self._take(layout.size)
        return layout.unpack_from(self._data, start)

    def pull_uint64(self) -> int:
        start = self._take(8)
        return int(_UINT64.unpack_from(self._data, start)[0])

    # -- writing -------------------------------------------------------------------

    def _writable(self) -> bytearray:
        if not isinstance(self._data, bytearray):
            raise TypeError("this Buffer was opened for reading")
        return self._data

    def push_bytes(self, value: bytes | bytearray | memoryview) -> None:
        self._writable().extend(value)

    def push_uint8(self, value: int) -> None:
        self._writable().append(value)

    def push_uint16(self, value: int) -> None:
        self._writable().extend(_UINT16.pack(value))

    def push_uint32(self, value: int) -> None:
        self._writable().extend(_UINT32.pack(value))

    def push_uint64(self, value: int) -> None:
        self._writable().extend(_UINT64.pack(value))

    def data(self) -> bytes:
        """The bytes written so far."""
        return bytes(self._data)
