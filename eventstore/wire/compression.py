"""Decompression of a Kafka batch's records, bounded, through cramjam.

The codec is bits 0-2 of a batch's attributes: 0 none, 1 gzip, 2 snappy, 3 lz4,
4 zstd (docs/format.md, section 17). The server never recompresses: it
decompresses only to check a produced batch and to read one embedded.

Bounds: the output never exceeds ``max_bytes``. cramjam's ``decompress_into``
writes into a buffer of a given size and fails, without growing anything, when
the data would not fit; the buffer starts near four times the input and doubles
up to ``max_bytes``. A decompression bomb costs at most ``max_bytes`` of memory
and a few attempts, then :class:`CorruptRecordError`.

Snappy comes in two framings: the raw block format (librdkafka, and Kafka's
clients without the xerial library) and xerial's stream, which Kafka's Java
client writes:

==========  ========  ============================================================
position    size      field
==========  ========  ============================================================
0           8         magic ``0x82 'SNAPPY' 0x00``
8           4         version int32 (1)
12          4         compatible version int32 (1)
16          4 + n     blocks: int32 length ``n``, then ``n`` bytes of raw snappy;
                      repeated to the end
==========  ========  ============================================================
"""

from __future__ import annotations

import struct
from typing import Final

import cramjam

from .errors import CorruptRecordError

__all__ = [
    "CODEC_NAMES",
    "DECOMPRESSED_BYTES_MAX",
    "GZIP",
    "LZ4",
    "NONE",
    "SNAPPY",
    "ZSTD",
    "decompress",
]

NONE: Final = 0
GZIP: Final = 1
SNAPPY: Final = 2
LZ4: Final = 3
ZSTD: Final = 4
CODEC_NAMES: Final = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

DECOMPRESSED_BYTES_MAX: Final = 256 * 1024 * 1024
XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
XERIAL_HEADER_BYTES: Final = 16
_FIRST_GUESS_BYTES: Final = 64 * 1024
_int32 = struct.Struct(">i")

Buffer = bytes | bytearray | memoryview


def decompress(codec: int, data: Buffer, max_bytes: int = DECOMPRESSED_BYTES_MAX) -> bytes:
    """``data`` decompressed by ``codec`` (1-4), at most ``max_bytes``; else CorruptRecordError."""
    if codec == SNAPPY:
        if bytes(data[:len(XERIAL_MAGIC)]) == XERIAL_MAGIC:
            return _xerial(data, max_bytes)
        return _snappy_raw(data, max_bytes)
    module = {GZIP: cramjam.gzip, LZ4: cramjam.lz4, ZSTD: cramjam.zstd}.get(codec)
    if module is None:
        raise CorruptRecordError(f"unknown compression codec {codec}")
    size = min(max_bytes, max(_FIRST_GUESS_BYTES, 4 * len(data)))
    while True:  # at most log2(max_bytes / 64 KiB) + 1 attempts
        out = bytearray(size)
        try:
            used = module.decompress_into(bytes(data), out)
        except cramjam.DecompressionError as e:
            if size >= max_bytes:
                raise CorruptRecordError(
                    f"{CODEC_NAMES[codec]} data does not decompress within {max_bytes} bytes: {e}") from None
            size = min(max_bytes, size * 2)
            continue
        except Exception as e:  # anything else cramjam raises on bad input
            raise CorruptRecordError(f"{CODEC_NAMES[codec]} data does not decompress: {e}") from None
        del out[used:]
        return bytes(out)


def _snappy_raw(data: Buffer, max_bytes: int) -> bytes:
    try:
        size = cramjam.snappy.decompress_raw_len(bytes(data))
    except Exception as e:
        raise CorruptRecordError(f"snappy data has no valid length: {e}") from None
    if size > max_bytes:
        raise CorruptRecordError(f"snappy data says {size} bytes, more than {max_bytes}")
    out = bytearray(size)
    try:
        used = cramjam.snappy.decompress_raw_into(bytes(data), out)
    except Exception as e:
        raise CorruptRecordError(f"snappy data does not decompress: {e}") from None
    if used != size:
        raise CorruptRecordError(f"snappy data gave {used} bytes, its header says {size}")
    return bytes(out)


def _xerial(data: Buffer, max_bytes: int) -> bytes:
    view = memoryview(data)
    end = len(view)
    position = XERIAL_HEADER_BYTES
    if end < position:
        raise CorruptRecordError("xerial snappy header is truncated")
    blocks: list[bytes] = []
    total = 0
    while position < end:  # each block takes at least four bytes
        if end - position < 4:
            raise CorruptRecordError("xerial snappy block length is truncated", position)
        (length,) = _int32.unpack_from(view, position)
        position += 4
        if length < 0 or length > end - position:
            raise CorruptRecordError(f"xerial snappy block of {length} bytes runs past the data", position)
        block = _snappy_raw(view[position:position + length], max_bytes - total)
        total += len(block)
        blocks.append(block)
        position += length
    return b"".join(blocks)
