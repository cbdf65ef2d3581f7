"""The Kafka wire protocol, sans I/O: frames, headers, messages, record batches, errors.

Nothing here opens a socket or touches the store: the server (to come) feeds bytes
in and writes bytes out (docs/protocol.md). Modules, in the order a request meets
them:

* ``framing``: :class:`FrameSplitter` cuts a byte stream into size-prefixed frames,
  bounded by ``max_frame_bytes``;
* ``header``: :func:`parse_request_header`, :func:`response_header`;
* ``apis``: the (API, versions) table the server serves and advertises;
* ``bounds``: the walk that checks every length and count before kio reads a body;
* ``messages``: request bodies decoded and responses encoded with kio's classes
  (needs the ``server`` extra);
* ``batch`` and ``compression``: Kafka RecordBatch v2 — header, CRC-32C, base-offset
  rewrite, records decoded and encoded (crc32c and cramjam: core dependencies);
* ``errors``: :class:`ProtocolError`, :class:`CorruptRecordError`, and the table
  from eventstore's errors to Kafka error codes;
* ``security``: Kafka's security protocols and SASL mechanisms, and the client's side
  of a SASL exchange (:class:`~eventstore.wire.security.SaslClient`).

This package imports none of ``messages`` (kio, the ``server`` extra) nor ``batch``:
import them where they are used.
"""

from .apis import SERVED, advertised, is_served
from .errors import (
    CorruptRecordError,
    FrameTooLargeError,
    KafkaError,
    ProtocolError,
    UnsupportedVersionError,
    kafka_error_for,
)
from .framing import FRAME_BYTES_MAX, FrameSplitter, frame
from .header import RequestHeader, parse_request_header, response_header

__all__ = [
    # framing and headers
    "FRAME_BYTES_MAX",
    "FrameSplitter",
    "RequestHeader",
    "frame",
    "parse_request_header",
    "response_header",
    # what is served
    "SERVED",
    "advertised",
    "is_served",
    # errors
    "CorruptRecordError",
    "FrameTooLargeError",
    "KafkaError",
    "ProtocolError",
    "UnsupportedVersionError",
    "kafka_error_for",
]
