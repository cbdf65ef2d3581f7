"""TLS for the SSL and SASL_SSL listeners: the server's context, and a stream over a raw socket.

The connection loop reads sockets only when it asks (``sockets.RawStream``), so TLS is
done in memory over that same stream: an ``ssl.SSLObject`` between two ``MemoryBIO``
buffers, ciphertext in and out through ``RawStream``. Nothing is read ahead of the
server's bounds, and the PLAINTEXT path is untouched.

:class:`TlsContexts` holds the current ``ssl.SSLContext``; ``reload`` (on SIGHUP) makes
a new one from the files: connections made after it use the new certificate, those
already made keep theirs (docs/operations.md, section 1.2).
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio

from ..errors import InvalidArgumentError
from ..wire.framing import Buffer
from .config import ServerConfig
from .sockets import RawStream

__all__ = ["HANDSHAKE_TIMEOUT_S", "TlsContexts", "TlsStream", "handshake", "peer_common_name"]

HANDSHAKE_TIMEOUT_S = 10.0
"""A client that has not finished its TLS handshake by then is disconnected."""
_CIPHERTEXT_BYTES = 65536
_RECORD_OVERHEAD = 4096  # room for the TLS records' headers and tags around max_bytes of plaintext


class TlsContexts:
    """The server's TLS context, made from the configured files, remade by ``reload``."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self.current = self._make()

    def reload(self) -> None:
        """Read the certificate, key and CA files again; a file that cannot be read keeps
        the old context (and raises ``InvalidArgumentError``)."""
        self.current = self._make()

    def _make(self) -> ssl.SSLContext:
        config = self._config
        if config.ssl_certfile is None:
            raise InvalidArgumentError("an SSL or SASL_SSL listener needs a certificate (ssl_certfile)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
            if config.ssl_cafile is not None:
                context.load_verify_locations(cafile=config.ssl_cafile)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as e:
            raise InvalidArgumentError(f"cannot load the TLS certificate, key or CA file: {e}") from None
        return context


class TlsStream:
    """``RawStream``'s receive / send / aclose, through TLS."""

    __slots__ = ("_fill_bytes", "_incoming", "_outgoing", "_raw", "_tls")

    def __init__(self, raw: RawStream, context: ssl.SSLContext) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._fill_bytes = _CIPHERTEXT_BYTES

    @property
    def tls(self) -> ssl.SSLObject:
        return self._tls

    async def handshake(self) -> None:
        """Complete the TLS handshake; ``ssl.SSLError`` or ``anyio.EndOfStream`` when it fails."""
        while True:  # bounded: each pass moves the handshake on by one exchange
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            await self._flush()
            return

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of plaintext, waiting for the first; ``anyio.EndOfStream`` at the end."""
        self._fill_bytes = max(_CIPHERTEXT_BYTES, max_bytes + _RECORD_OVERHEAD)
        while True:  # bounded: each pass reads ciphertext or returns plaintext
            try:
                data = self._tls.read(max_bytes)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:
                    await self._flush()  # e.g. a TLS 1.3 key update's answer
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                raise anyio.EndOfStream from None
            except ssl.SSLError as e:
                raise anyio.BrokenResourceError from e
            if not data:
                raise anyio.EndOfStream
            return self._more(data, max_bytes) if len(data) < max_bytes else data

    def _more(self, first: bytes, max_bytes: int) -> bytes:
        """``first`` and the plaintext already decrypted or decryptable without waiting, up to
        ``max_bytes``: a TLS read gives one record (16 KiB) at a time, and a large request
        read record by record would cost the connection loop one pass each."""
        parts, have = [first], len(first)
        while have < max_bytes:  # bounded by max_bytes and the ciphertext buffered
            try:
                chunk = self._tls.read(max_bytes - have)
            except ssl.SSLError:  # nothing more without the socket (or an error the next read says)
                break
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return first if len(parts) == 1 else b"".join(parts)

    async def send(self, data: Buffer) -> None:
        """All of ``data``, as TLS records."""
        try:
            self._tls.write(data)
        except ssl.SSLError as e:
            raise anyio.BrokenResourceError from e
        await self._flush()

    async def aclose(self) -> None:
        await self._raw.aclose()

    async def _fill(self) -> None:
        """Ciphertext from the socket into the TLS object; end of stream when the peer left."""
        try:
            self._incoming.write(await self._raw.receive(self._fill_bytes))
        except anyio.EndOfStream:
            self._incoming.write_eof()
            raise

    async def _flush(self) -> None:
        if self._outgoing.pending:
            await self._raw.send(self._outgoing.read())


async def handshake(raw: RawStream, context: ssl.SSLContext) -> TlsStream:
    """A TLS stream over ``raw`` once its handshake is done (within ``HANDSHAKE_TIMEOUT_S``);
    raises ``ssl.SSLError``, ``TimeoutError`` or an anyio stream error when it fails."""
    stream = TlsStream(raw, context)
    with anyio.fail_after(HANDSHAKE_TIMEOUT_S):
        await stream.handshake()
    return stream


def peer_common_name(stream: TlsStream) -> str | None:
    """The CN of the client certificate's subject, when the client presented one."""
    cert = stream.tls.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject", ())
    for rdn in subject:  # bounded: a subject's few attributes
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
