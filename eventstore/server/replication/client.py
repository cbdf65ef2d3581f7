"""A follower's connection to its leader: Kafka requests as kio's classes over one TCP
stream, one request at a time (docs/replication.md, section 4).

:func:`connect_leader` opens every connection a follower makes to its leader (the
fetcher's, the catalog's long poll, a forwarded request's) as ``--replica-security-protocol``
says: TLS (1.2 or later, the leader's certificate checked), then on SASL a SaslHandshake
v1 and the mechanism's messages in SaslAuthenticate v1 — PLAIN as one message
``\\0user\\0password`` (RFC 4616), SCRAM through ``scramp``'s client, which also checks
that the leader knows the user's key. A refusal raises ``AuthenticationFailedError``
naming the leader and the reason; the follower logs it and tries again after its backoff.

The server decodes requests and encodes responses (``eventstore.wire.messages``);
this is the other direction, for the few APIs a follower sends (ApiVersions,
OffsetForLeaderEpoch, Fetch). The leader is trusted no more than any peer: a frame
larger than ``FRAME_BYTES_MAX`` or a response to another request ends the connection.
"""

from __future__ import annotations

import io
import struct
from functools import cache
from typing import Any, Final

import anyio
import anyio.abc

from ...wire import FRAME_BYTES_MAX
from ...wire.apis import request_header_version, response_header_version
from ...wire.errors import ProtocolError
from ...wire.security import SaslClient
from ..config import format_address
from .secure import ReplicaSecurity

try:
    from kio.index import load_response_schema
    from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
    from kio.serial import entity_reader, entity_writer
except ImportError as e:  # pragma: no cover - depends on the installation
    from ...wire.errors import SERVER_EXTRA

    raise ImportError(f"{__name__}: {e.name} is missing; {SERVER_EXTRA}") from e

__all__ = ["CONNECT_TIMEOUT_S", "LeaderConnection", "connect_leader"]

CLIENT_ID: Final = b"eventstore-follower"
CONNECT_TIMEOUT_S: Final = 30.0
"""A connection whose TCP connect, TLS handshake and SASL exchange take longer fails."""
_size = struct.Struct(">i")


async def connect_leader(host: str, port: int, security: ReplicaSecurity) -> anyio.abc.ByteStream:
    """A stream to the leader at ``host:port``, over TLS and authenticated as ``security`` says
    (a plain TCP stream on PLAINTEXT). Raises ``AuthenticationFailedError`` when the leader
    refuses the credentials, ``OSError`` (``ssl.SSLError``: an untrusted certificate),
    ``TimeoutError`` or an anyio stream error when the connection fails."""
    with anyio.fail_after(CONNECT_TIMEOUT_S):
        stream: anyio.abc.ByteStream
        if security.context is None:
            stream = await anyio.connect_tcp(host, port)
        else:  # the leader's TlsStream closes without close_notify: its end is the stream's end
            stream = await anyio.connect_tcp(host, port, ssl_context=security.context, tls_hostname=host,
                                             tls_standard_compatible=False)
        try:
            if security.sasl:
                await _authenticate(LeaderConnection(stream), security, format_address(host, port))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
    return stream


async def _authenticate(conn: LeaderConnection, security: ReplicaSecurity, address: str) -> None:
    """SaslHandshake v1, then the mechanism's messages in SaslAuthenticate v1."""
    assert security.username is not None and security.password is not None  # server_config checked them
    sasl = SaslClient(security.mechanism, security.username, security.password, address)
    answer = await conn.call(SaslHandshakeRequest(mechanism=security.mechanism))
    sasl.handshake(int(answer.error_code), [str(m) for m in answer.mechanisms])
    message: bytes | None = sasl.first()
    while message is not None:  # bounded: PLAIN sends one message, SCRAM two
        reply = await conn.call(SaslAuthenticateRequest(auth_bytes=message))
        message = sasl.next(int(reply.error_code), reply.error_message, bytes(reply.auth_bytes))


class LeaderConnection:
    """One TCP connection to the leader; ``call`` sends a request and returns its response."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._correlation = 0
        self._buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int, security: ReplicaSecurity | None = None) -> LeaderConnection:
        """A connection opened by :func:`connect_leader`; None: PLAINTEXT."""
        return cls(await connect_leader(host, port, security or ReplicaSecurity()))

    async def close(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> LeaderConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    async def call(self, request: Any) -> Any:
        """Send kio's request entity; return kio's response entity of the same API and version."""
        api_key, version = int(request.__api_key__), int(request.__version__)
        self._correlation += 1
        correlation = self._correlation
        out = io.BytesIO()
        out.write(struct.pack(">hhih", api_key, version, correlation, len(CLIENT_ID)) + CLIENT_ID)
        if request_header_version(api_key, version) >= 2:
            out.write(b"\x00")  # no tagged fields
        writer: Any = _writer
        writer(type(request))(out, request)
        body = out.getvalue()
        await self._stream.send(_size.pack(len(body)) + body)
        frame = await self._receive_frame()
        (got,) = _size.unpack_from(frame)
        if got != correlation:
            raise ProtocolError(f"the leader answered request {got}, expected {correlation}")
        position = 4
        if response_header_version(api_key, version) == 1:
            position += 1  # the header's tagged fields: an empty section (leaders send none)
        value, _end = _reader(api_key, version)(frame, position)
        return value

    async def _receive_frame(self) -> bytes:
        while len(self._buffer) < 4:  # bounded: each pass reads more or raises
            self._buffer += await self._stream.receive()
        (size,) = _size.unpack_from(self._buffer)
        if not 0 < size <= FRAME_BYTES_MAX:
            raise ProtocolError(f"the leader sent a frame of {size} bytes")
        while len(self._buffer) < 4 + size:  # bounded by the frame's size
            self._buffer += await self._stream.receive(max(65536, 4 + size - len(self._buffer)))
        frame = bytes(self._buffer[4:4 + size])
        del self._buffer[:4 + size]
        return frame


@cache
def _writer(entity_type: Any) -> Any:
    return entity_writer(entity_type)


@cache
def _reader(api_key: int, version: int) -> Any:
    return entity_reader(load_response_schema(api_key, version))
