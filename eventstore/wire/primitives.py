"""Kafka's variable-length integers, read and written without I/O.

* unsigned varint: 7 bits a byte, least significant group first, high bit set on
  every byte but the last (Kafka's ``UNSIGNED_VARINT``: at most 5 bytes, 32 bits;
  ``UNSIGNED_VARLONG``: at most 10 bytes, 64 bits);
* varint / varlong: the zigzag encoding of a signed value as an unsigned one
  (``(n << 1) ^ (n >> 63)``), so small negative numbers stay short.

Readers take the buffer, a position and the end of the readable range, and return
``(value, next position)``; they raise :class:`Malformed` on a truncated or overlong
encoding, which each caller turns into its own error (``ProtocolError`` for
messages, ``CorruptRecordError`` for record batches).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "Malformed",
    "read_uvarint",
    "read_varint",
    "read_varlong",
    "write_uvarint",
    "write_varint",
]

UVARINT_BYTES_MAX: Final = 5
UVARLONG_BYTES_MAX: Final = 10


class Malformed(Exception):  # internal: always translated before it leaves the package
    """A primitive that cannot be read; ``position`` is where it starts."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def read_uvarint(buf: bytes | bytearray | memoryview, position: int, end: int,
                 max_bytes: int = UVARINT_BYTES_MAX) -> tuple[int, int]:
    """An unsigned varint of at most ``max_bytes`` bytes at ``position`` (before ``end``)."""
    value = 0
    shift = 0
    start = position
    limit = min(end, position + max_bytes)
    while position < limit:
        byte = buf[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    if position >= end and position - start < max_bytes:
        raise Malformed("truncated varint", start)
    raise Malformed(f"varint longer than {max_bytes} bytes", start)


def read_varint(buf: bytes | bytearray | memoryview, position: int, end: int) -> tuple[int, int]:
    """A zigzag varint (32-bit)."""
    raw, position = read_uvarint(buf, position, end, UVARINT_BYTES_MAX)
    if raw > 0xFFFFFFFF:
        raise Malformed("varint out of the 32-bit range", position)
    return (raw >> 1) ^ -(raw & 1), position


def read_varlong(buf: bytes | bytearray | memoryview, position: int, end: int) -> tuple[int, int]:
    """A zigzag varlong (64-bit)."""
    raw, position = read_uvarint(buf, position, end, UVARLONG_BYTES_MAX)
    if raw > 0xFFFFFFFFFFFFFFFF:
        raise Malformed("varlong out of the 64-bit range", position)
    return (raw >> 1) ^ -(raw & 1), position


def write_uvarint(out: bytearray, value: int) -> None:
    """Append ``value`` (≥ 0) as an unsigned varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def write_varint(out: bytearray, value: int) -> None:
    """Append a signed 64-bit ``value`` as a zigzag varint/varlong."""
    write_uvarint(out, ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)
