"""SaslHandshake (17) and SaslAuthenticate (36): who a client on a SASL listener is.

The handshake picks the mechanism; each SaslAuthenticate carries one message of it
(``eventstore.server.auth``); after a v0 handshake the messages come as bare frames
instead (Kafka before 1.0), which the connection hands to ``raw_message``. Success
sets the connection's principal to ``User:NAME`` and lets every API through; a
failure is answered with SASL_AUTHENTICATION_FAILED (v0: not answered) after a
delay that grows with the failures from that address, logged with the address,
and the connection closes after the answer
(docs/operations.md, section 1.2).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import anyio

from ...wire import RequestHeader
from ...wire.framing import frame
from ..auth import AuthenticationFailed, FailureDelays, PlainExchange, ScramExchange, exchange
from ..context import RAW_FRAMES, Context
from ..dispatch import handles
from ..entities import response_for

__all__ = ["sasl_authenticate", "sasl_handshake"]

log = logging.getLogger("eventstore.server")

UNSUPPORTED_SASL_MECHANISM: Final = 33
ILLEGAL_SASL_STATE: Final = 34
SASL_AUTHENTICATION_FAILED: Final = 58
_EXCHANGE = "sasl.exchange"  # ctx.session key: the exchange the handshake started
_DELAYS = "sasl.delays"  # broker.state key: the FailureDelays of the server


@handles(17)
async def sasl_handshake(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Start an exchange of the mechanism asked for, if this listener offers it."""
    offered = ctx.config.sasl_mechanisms if ctx.listener.startswith("SASL_") else ()
    if ctx.authenticated or _EXCHANGE in ctx.session:
        ctx.close_after_answer = True
        return response_for(header, error_code=ILLEGAL_SASL_STATE, mechanisms=tuple(offered))
    if body.mechanism not in offered:
        log.warning("SASL mechanism %r asked by %s is not offered on %s", body.mechanism, ctx.client,
                    ctx.listener)
        ctx.close_after_answer = True
        return response_for(header, error_code=UNSUPPORTED_SASL_MECHANISM, mechanisms=tuple(offered))
    ctx.session[_EXCHANGE] = exchange(ctx.log.catalog, body.mechanism)
    if header.api_version == 0:
        ctx.session[RAW_FRAMES] = raw_message
    return response_for(header, error_code=0, mechanisms=tuple(offered))


@handles(36)
async def sasl_authenticate(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """One message of the exchange; the principal once it succeeds."""
    current: PlainExchange | ScramExchange | None = ctx.session.get(_EXCHANGE)
    if current is None or ctx.authenticated:
        ctx.close_after_answer = True
        return response_for(header, error_code=ILLEGAL_SASL_STATE,
                            error_message="SaslAuthenticate without a SaslHandshake before it")
    try:
        answer = await _step(ctx, current, bytes(body.auth_bytes))
    except AuthenticationFailed as e:
        await _failed(ctx, str(e))
        return response_for(header, error_code=SASL_AUTHENTICATION_FAILED,
                            error_message="Authentication failed: invalid credentials", auth_bytes=b"")
    return response_for(header, error_code=0, auth_bytes=answer)


async def raw_message(ctx: Context, message: bytes) -> bytes | None:
    """One message of the exchange a v0 handshake started, as a bare frame; its answer as one
    (None on a failure: Kafka's v0 has no error to send, the connection just closes)."""
    current: PlainExchange | ScramExchange | None = ctx.session.get(_EXCHANGE)
    if current is None:
        return None
    try:
        answer = await _step(ctx, current, message)
    except AuthenticationFailed as e:
        await _failed(ctx, str(e))
        return None
    if ctx.authenticated:
        ctx.session.pop(RAW_FRAMES, None)
    return frame(answer)


async def _step(ctx: Context, current: PlainExchange | ScramExchange, message: bytes) -> bytes:
    """One message in, the answer out; the principal once the exchange succeeds."""
    answer, user = await ctx.blocking(current.step, message)
    if user is not None:
        del ctx.session[_EXCHANGE]
        ctx.principal = f"User:{user}"
        ctx.authenticated = True
        log.info("%s authenticated as %s on %s", ctx.client, ctx.principal, ctx.listener)
    return answer


async def _failed(ctx: Context, reason: str) -> None:
    """Log and count the failure, wait the address's delay; the connection closes after the answer."""
    delays: FailureDelays = ctx.state.setdefault(_DELAYS, FailureDelays())
    delay = delays.failed(ctx.client.rpartition(":")[0])
    log.warning("authentication failed for %s on %s: %s (answered in %.1f s, then closed)",
                ctx.client, ctx.listener, reason, delay)
    ctx.broker.metrics.auth_failure(_mechanism(ctx.session.get(_EXCHANGE)), ctx.listener)
    await anyio.sleep(delay)
    ctx.close_after_answer = True
    ctx.session.pop(_EXCHANGE, None)


def _mechanism(current: PlainExchange | ScramExchange | None) -> str:
    """The mechanism label of an authentication failure in ``/metrics``."""
    if current is None:
        return "none"
    return "PLAIN" if isinstance(current, PlainExchange) else "SCRAM"
