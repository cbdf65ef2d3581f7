"""Size-prefixed frames: split a byte stream into frames, and prefix one.

A Kafka connection carries frames: a big-endian int32 ``size``, then ``size``
bytes (docs/protocol.md, section 2). :class:`FrameSplitter` is fed whatever the
socket gave and hands back the whole frames; it does no I/O.

Responses: :func:`frame` prefixes contents already in one buffer (one copy);
:class:`FrameParts` is what an encoder writes a large response into: small writes
are gathered, a large one (stored record batches) is kept as the caller's own
buffer, and the frame comes out as a list of buffers sent one after the other, so
the batches a Fetch serves are never copied on their way to the socket.

Bounds: a size outside ``1 .. max_frame_bytes`` raises :class:`FrameTooLargeError`
as soon as its four bytes are there, before any of the frame is kept; the splitter
holds at most one partial frame (at most ``4 + max_frame_bytes`` bytes) and tells
the caller how many bytes it still wants, so a server reads no more than that.
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from .errors import FrameTooLargeError

__all__ = ["FRAME_BYTES_MAX", "SPLICE_BYTES", "Buffer", "FrameParts", "FrameSplitter", "frame", "joined"]

FRAME_BYTES_MAX: Final = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
SIZE_BYTES: Final = 4
#: A write at least this long is kept as its own buffer rather than copied (FrameParts).
SPLICE_BYTES: Final = 4096
_size = struct.Struct(">i")

Buffer: TypeAlias = bytes | bytearray | memoryview


def frame(contents: Buffer) -> bytes:
    """``contents`` with its int32 size in front (one copy)."""
    return b"".join((_size.pack(len(contents)), contents))


class FrameParts:
    """A writable (``write`` only, as kio's writers use it) that builds one frame as a list
    of buffers: the 4-byte size is reserved in front and filled by :meth:`finish`.

    Writes shorter than ``splice_bytes`` are appended to a bytearray; a longer one is
    kept as the caller's object itself, unchanged and uncopied (it must not be
    mutated until the frame is sent). ``b"".join(finish())`` is byte for byte what
    writing everything into one buffer gives.
    """

    __slots__ = ("_parts", "_small", "_splice_bytes")

    def __init__(self, splice_bytes: int = SPLICE_BYTES) -> None:
        self._splice_bytes = splice_bytes
        self._small = bytearray(SIZE_BYTES)
        self._parts: list[Buffer] = [self._small]

    def write(self, data: Buffer) -> int:
        size = len(data)
        if size < self._splice_bytes:
            self._small += data
            return size
        self._parts.append(data)
        self._small = bytearray()
        self._parts.append(self._small)
        return size

    def finish(self) -> list[Buffer]:
        """The frame's buffers, its size filled in; empty ones left out."""
        parts = self._parts
        _size.pack_into(parts[0], 0, sum(map(len, parts)) - SIZE_BYTES)
        return [p for p in parts if len(p)]


def joined(parts: Buffer | list[Buffer]) -> bytes:
    """A frame as one bytes object, whether it came whole or in parts."""
    if isinstance(parts, list):
        return b"".join(parts)
    return bytes(parts)


class FrameSplitter:
    """Splits a byte stream into frames; keeps at most one partial frame.

    A frame that comes in several chunks is kept as views of those chunks and joined
    once when whole (one copy, however many chunks), not grown in a buffer."""

    __slots__ = ("_failed", "_have", "_max_frame_bytes", "_need", "_parts", "_prefix")

    def __init__(self, max_frame_bytes: int = FRAME_BYTES_MAX) -> None:
        if not 1 <= max_frame_bytes <= 0x7FFFFFFF:
            raise ValueError(f"max_frame_bytes must be in 1..2**31-1, got {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._prefix = bytearray()  # the size's bytes while they are fewer than four
        self._need = 0  # size of the frame being collected; 0 while its prefix is incomplete
        self._parts: list[memoryview] = []  # the frame's bytes received so far
        self._have = 0
        self._failed: FrameTooLargeError | None = None

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes kept: the start of a frame not yet whole (its size's bytes included)."""
        if self._need:
            return SIZE_BYTES + self._have
        return len(self._prefix)

    @property
    def bytes_wanted(self) -> int:
        """Bytes still missing before the frame being collected is whole (≥ 1)."""
        if self._need:
            return self._need - self._have
        return SIZE_BYTES - len(self._prefix)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take ``data``; return the frames (contents without the size) it completed.

        Raises :class:`FrameTooLargeError` on a size outside ``1 .. max_frame_bytes``;
        the splitter is then unusable (the connection is to be closed). Frames that
        were whole before the bad size are returned first: the error is raised by the
        next call (``failed`` tells it is coming), so requests sent before it are
        still answered, as Kafka does.
        """
        if self._failed is not None:
            raise self._failed
        if not isinstance(data, bytes):  # views of it may be kept: it must not change later
            data = bytes(data)
        view = memoryview(data).cast("B")
        frames: list[bytes] = []
        position = 0
        end = len(view)
        try:
            while position < end:  # each pass takes at least one byte of data
                position = self._take(view, position, frames)
        except FrameTooLargeError:
            if not frames:
                raise
        return frames

    @property
    def failed(self) -> FrameTooLargeError | None:
        """The error the next ``feed`` raises, if a bad size was seen."""
        return self._failed

    def _take(self, view: memoryview, position: int, frames: list[bytes]) -> int:
        if not self._need:
            prefix = self._prefix
            taken = min(SIZE_BYTES - len(prefix), len(view) - position)
            prefix += view[position:position + taken]
            position += taken
            if len(prefix) < SIZE_BYTES:
                return position
            size: int = _size.unpack_from(prefix)[0]
            prefix.clear()
            if not 1 <= size <= self._max_frame_bytes:
                self._failed = FrameTooLargeError(size, self._max_frame_bytes)
                raise self._failed
            if len(view) - position >= size:  # the whole frame is in this chunk
                frames.append(bytes(view[position:position + size]))
                return position + size
            self._need = size
        taken = min(self._need - self._have, len(view) - position)
        self._parts.append(view[position:position + taken])
        self._have += taken
        position += taken
        if self._have == self._need:
            frames.append(b"".join(self._parts))
            self._parts.clear()
            self._need = self._have = 0
        return position
