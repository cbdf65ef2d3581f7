"""One connection of our own to a server, for the extension APIs (docs/protocol.md, section 7).

The log half of the remote store goes through a Kafka client library; the stream
calls have no Kafka client, so they go over this: a blocking socket, the framing
and headers of ``eventstore.wire``, the extension codec. It opens with ApiVersions
(v0, which every Kafka server answers): a server that does not list key 20000
is not an eventstore server, and every stream call then raises one error that
names it (:class:`StreamsNotServedError`). On a secured server the socket is wrapped
in TLS before ApiVersions and the connection authenticates with SASL after it
(``security.py``); every connection does, the ones opened again after a break and
the ones to a leader too.

A connection carries one request at a time (a lock); a subscription holds its
own, so its long polls never hold up other calls. A broken connection is closed
and opened again by the next call; the call that saw it break raises.

Given several addresses, a call answered NOT_LEADER_OR_FOLLOWER (a follower, or a
fenced leader: docs/replication.md, 4.5) asks that server's Metadata for the leader
(its controller), connects there and sends the request again, at most
``LEADER_REDIRECTS_MAX`` times; the refusing server did nothing, so the resend is safe.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import socket
import struct
import threading
import time
from typing import Any

from ..errors import (
    AuthenticationFailedError,
    EventStoreError,
    InvalidArgumentError,
    InvalidTopicError,
    RecordTooLargeError,
    StorageError,
    StoreClosedError,
    StreamNotFoundError,
    TopicExistsError,
    TopicNotFoundError,
    WrongExpectedVersionError,
)
from ..wire import FrameSplitter
from ..wire import extensions as codec
from ..wire.errors import ProtocolError
from .security import Security, authenticate

__all__ = [
    "Connection", "ConnectionPool", "ServerUnavailableError", "StreamsNotServedError", "error_with_message",
    "parse_bootstrap", "raise_for",
]

APPEND_KEY = 20000
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0  # a request's answer, long polls excepted (they add their own wait)
CLIENT_ID = "eventstore-remote"
POOL_IDLE_MAX = 8  # connections a store keeps open for its stream calls between them
NOT_LEADER_OR_FOLLOWER = 6
LEADER_REDIRECTS_MAX = 3
LEADER_WAIT_S = 0.2  # between redirects: a follower that does not know its leader yet


class ServerUnavailableError(StoreClosedError):
    """The server cannot be reached, or the connection to it broke (the call may or may not
    have happened; stream appends are safe to resend with the same event ids)."""

    def __init__(self, address: str, reason: str) -> None:
        self.path = self.address = address
        self.reason = reason
        EventStoreError.__init__(self, f"the store at {address}: {reason}")


class StreamsNotServedError(EventStoreError):
    """The server speaks Kafka but not eventstore's stream APIs (a Kafka cluster)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"the server at {address} does not serve eventstore's stream APIs "
                         "(no API key 20000 in its ApiVersions)")


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"host:port[,host:port...]"`` as a list of addresses; ``InvalidArgumentError`` if malformed."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise InvalidArgumentError(f"address must be 'host:port[,host:port...]', got {bootstrap!r}")
    out = []
    for part in bootstrap.split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgumentError(f"address must be 'host:port[,host:port...]', got {bootstrap!r}")
        out.append((host, int(port)))
    return out


class Connection:
    """A blocking connection to the first server of ``addresses`` that answers."""

    def __init__(self, addresses: list[tuple[str, int]], security: Security | None = None) -> None:
        self.addresses = addresses
        self.security = security or Security()
        self.address = f"{addresses[0][0]}:{addresses[0][1]}"
        """The server connected to (``host:port``), or the first one before any connection."""
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._splitter = FrameSplitter()
        self._ids = itertools.count(1)
        self._apis: dict[int, tuple[int, int]] | None = None
        self._closed = False

    @property
    def serves_streams(self) -> bool:
        """Whether the server lists the extension APIs (connects if not yet connected)."""
        with self._lock:
            self._ensure()
            assert self._apis is not None
            return APPEND_KEY in self._apis

    def call(self, api_key: int, fields: dict[str, Any], wait_s: float = 0.0) -> dict[str, Any]:
        """Send one extension request and return the response's fields (error code unchecked),
        from the leader: a server that does not lead sends the call there (module docstring).
        ``wait_s``: how long the server may hold the answer (a long poll)."""
        response = self._call_once(api_key, fields, wait_s)
        for attempt in range(LEADER_REDIRECTS_MAX):  # bounded: a few redirects
            if response["error_code"] != NOT_LEADER_OR_FOLLOWER or not self._follow_leader():
                return response
            if attempt:
                time.sleep(LEADER_WAIT_S)
            response = self._call_once(api_key, fields, wait_s)
        return response

    def _follow_leader(self) -> bool:
        """Connect to the leader the current server names; False when it names none other."""
        with self._lock:
            sock = self._ensure()
            cid = next(self._ids) & 0x7FFFFFFF
            try:
                sock.settimeout(REQUEST_TIMEOUT_S)
                sock.sendall(codec.encode_metadata_request(cid, CLIENT_ID))
                got, leader_id, brokers = codec.decode_metadata_leader(self._receive(sock))
            except (OSError, ProtocolError):
                self._drop()
                return False
            leader = brokers.get(leader_id)
            if got != cid or leader is None or f"{leader[0]}:{leader[1]}" == self.address:
                return False
            self._drop()
            self.addresses = [leader, *[a for a in self.addresses if a != leader]]
            return True

    def _call_once(self, api_key: int, fields: dict[str, Any], wait_s: float) -> dict[str, Any]:
        request = None
        with self._lock:
            reused = self._sock is not None
            while True:  # at most twice: a kept connection the server has closed is replaced once
                sock = self._ensure()
                if self._apis is None or APPEND_KEY not in self._apis:
                    raise StreamsNotServedError(self.address)
                cid = next(self._ids) & 0x7FFFFFFF
                if request is None:
                    request = codec.encode_request(api_key, cid, fields, CLIENT_ID)
                else:  # the same bytes under the new correlation id
                    request = request[:8] + struct.pack(">i", cid) + request[12:]
                try:
                    sock.settimeout(REQUEST_TIMEOUT_S + wait_s)
                    sock.sendall(request)
                    got, response = codec.decode_response(api_key, self._receive(sock))
                except (OSError, ProtocolError) as e:
                    self._drop()
                    if reused and isinstance(e, OSError) and not self._closed:
                        # the request may have run before the answer was lost: every extension
                        # request may be sent again (appends carry their event ids)
                        reused = False
                        continue
                    raise ServerUnavailableError(self.address, f"connection lost: {e}{self._hint(e)}") from e
                if got != cid:
                    self._drop()
                    raise ServerUnavailableError(self.address, f"answered request {got}, expected {cid}")
                return response

    def check_access(self) -> None:
        """Connect (TLS, SASL) and ask the server's Metadata, as a Kafka client's first request:
        what the log half does first, checked here so that a refusal raises at once
        (``AuthenticationFailedError``, or a server that closes on a client that did not
        authenticate) instead of librdkafka's retries until its timeout. A server without
        Metadata v1 (Kafka 4 dropped it) is only connected to."""
        with self._lock:
            sock = self._ensure()
            assert self._apis is not None
            low, high = self._apis.get(codec.METADATA_KEY, (1, 0))
            if not low <= 1 <= high:
                return
            cid = next(self._ids) & 0x7FFFFFFF
            try:
                sock.settimeout(REQUEST_TIMEOUT_S)
                sock.sendall(codec.encode_metadata_request(cid, CLIENT_ID))
                got = codec.decode_metadata_leader(self._receive(sock))[0]
            except (OSError, ProtocolError) as e:
                self._drop()
                reason = f"Metadata not answered: {e}{self._hint(e)}"
                raise ServerUnavailableError(self.address, reason) from e
            if got != cid:
                self._drop()
                raise ServerUnavailableError(self.address, f"answered request {got}, expected {cid}")

    def _hint(self, error: Exception, opening: bool = False) -> str:
        """Why a server may close a connection at once: while ``opening`` (before ApiVersions is
        answered), a TLS listener on a plaintext client or a missing client certificate; on the
        first request, a SASL listener on a client that did not authenticate."""
        if "closed" not in str(error):
            return ""
        protocol = f"this client connects with security_protocol={self.security.protocol!r}"
        if opening and not self.security.tls:
            return f" (a TLS listener closes a connection that does not start TLS; {protocol})"
        if opening and self.security.certfile is None:
            return " (a listener that asks for a client certificate closes a connection without one)"
        if not opening and not self.security.sasl:
            return f" (a SASL listener closes a connection that has not authenticated; {protocol})"
        return ""

    def close(self) -> None:
        """Close the socket; later calls raise ``StoreClosedError``. Idempotent, any thread."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in a long poll
            sock.close()

    def _ensure(self) -> socket.socket:
        if self._closed:
            raise StoreClosedError(self.address)
        if self._sock is not None:
            return self._sock
        errors = []
        for host, port in self.addresses:  # bounded: each address is tried once
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
            except OSError as e:
                errors.append(f"{host}:{port}: {e}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            address = f"{host}:{port}"
            try:
                sock = self.security.wrap(sock, host, address)
            except OSError as e:
                errors.append(f"{address}: TLS handshake: {e}")
                continue
            self._sock, self.address = sock, address
            self._splitter = FrameSplitter()
            try:
                self._apis = self._api_versions(sock)
                authenticate(self.security, self._round_trip, self._next_id, address, CLIENT_ID)
            except AuthenticationFailedError:
                self._drop()
                raise
            except (OSError, ProtocolError) as e:
                self._drop()
                errors.append(f"{address}: {e}{self._hint(e, opening=True)}")
                continue
            return sock
        raise ServerUnavailableError(self.address, f"cannot connect: {'; '.join(errors)}")

    def _api_versions(self, sock: socket.socket) -> dict[int, tuple[int, int]]:
        cid = next(self._ids)
        sock.settimeout(REQUEST_TIMEOUT_S)
        sock.sendall(codec.encode_api_versions_request(cid, CLIENT_ID))
        got, error, apis = codec.decode_api_versions_response(self._receive(sock))
        if got != cid or error != 0:
            raise ProtocolError(f"ApiVersions answered correlation id {got}, error {error}")
        return apis

    def _next_id(self) -> int:
        return next(self._ids) & 0x7FFFFFFF

    def _round_trip(self, request: bytes) -> bytes:
        """One request on the socket being opened, its answer (the SASL exchange's)."""
        assert self._sock is not None
        self._sock.sendall(request)
        return self._receive(self._sock)

    def _receive(self, sock: socket.socket) -> bytes:
        splitter = self._splitter
        while True:  # bounded by the socket's timeout and the frame bound
            data = sock.recv(max(splitter.bytes_wanted, 65536))
            if not data:
                raise OSError("the server closed the connection")
            frames = splitter.feed(data)
            if frames:
                if len(frames) > 1:
                    raise ProtocolError("the server sent an answer that was not asked for")
                return frames[0]

    def _drop(self) -> None:
        sock, self._sock, self._apis = self._sock, None, None
        if sock is not None:
            sock.close()


class ConnectionPool:
    """Connections to one server for calls from many threads: a call takes an idle connection
    (or opens one), so threads do not wait for each other's round trips; at most ``idle_max``
    are kept open between calls."""

    def __init__(self, addresses: list[tuple[str, int]], security: Security | None = None,
                 idle_max: int = POOL_IDLE_MAX) -> None:
        self.addresses = addresses
        self.security = security or Security()
        self._idle_max = idle_max
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._closed = False
        self._last_address = f"{addresses[0][0]}:{addresses[0][1]}"

    @property
    def address(self) -> str:
        """The server the last connection reached (``host:port``)."""
        return self._last_address

    @property
    def idle(self) -> int:
        """Connections kept open between calls."""
        return len(self._idle)

    def call(self, api_key: int, fields: dict[str, Any], wait_s: float = 0.0) -> dict[str, Any]:
        """``Connection.call`` on a connection of the pool; the leader it found is where the
        pool's next connections go first."""
        connection = self._acquire()
        try:
            return connection.call(api_key, fields, wait_s)
        finally:
            self._last_address = connection.address
            self.addresses = connection.addresses
            self._release(connection)

    def open_one(self) -> Connection:
        """A connection of the pool's servers and security, not kept by the pool (a subscription's)."""
        return Connection(self.addresses, self.security)

    def check_access(self) -> None:
        """``Connection.check_access`` on a connection of the pool."""
        connection = self._acquire()
        try:
            connection.check_access()
        finally:
            self._release(connection)

    def _acquire(self) -> Connection:
        with self._lock:
            if self._closed:
                raise StoreClosedError(self._last_address)
            connection = self._idle.pop() if self._idle else self.open_one()
            self._busy.add(connection)
            return connection

    def _release(self, connection: Connection) -> None:
        with self._lock:
            self._busy.discard(connection)
            if self._closed or len(self._idle) >= self._idle_max:
                connection.close()
            else:
                self._idle.append(connection)

    def close(self) -> None:
        """Close every connection, those in use too (their calls raise). Idempotent."""
        with self._lock:
            self._closed = True
            connections = [*self._idle, *self._busy]
            self._idle.clear()
        for connection in connections:
            connection.close()


# --- errors: the extension response's error code back to the store's exception -------------


def error_with_message(cls: type[EventStoreError], message: str) -> EventStoreError:
    """An exception of ``cls`` carrying the server's message. The wire carries only a code and
    a message, so the fields ``cls`` takes (``topic``, ``limit``, ...) are None."""
    error = cls.__new__(cls)
    EventStoreError.__init__(error, message)
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        if not hasattr(error, name):
            setattr(error, name, None)
    return error


_BY_CODE: dict[int, type[EventStoreError]] = {
    3: TopicNotFoundError,
    6: StoreClosedError,
    10: RecordTooLargeError,
    17: InvalidTopicError,
    36: TopicExistsError,
    42: InvalidArgumentError,
    56: StorageError,
    20004: InvalidArgumentError,
}


def raise_for(response: dict[str, Any], stream_id: str | None = None, expected: object = None) -> None:
    """Raise what the embedded store raises for ``response``'s error code, if it has one."""
    code = response["error_code"]
    if code == 0:
        return
    message = response["error_message"] or f"error {code}"
    if code == 20001:
        raise WrongExpectedVersionError(stream_id or "", expected, response.get("actual_version", -1))
    if code in (20002, 20003):
        raise StreamNotFoundError(stream_id or "", deleted=code == 20003)
    cls = _BY_CODE.get(code, EventStoreError)
    if cls is InvalidArgumentError:
        raise InvalidArgumentError(message)
    raise error_with_message(cls, message)
