"""Points in time on the command line: ``10m`` ago, ISO 8601, epoch milliseconds; and back."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import typer

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w))+$")

TIME_HELP = "a duration ago (10m, 1h30m, 2d; units ms s m h d w), ISO 8601 or epoch ms"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_duration_ms(text: str) -> int | None:
    """``1h30m`` -> 5400000; None if ``text`` is not a duration."""
    if not _DURATION.match(text):
        return None
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_time_ms(text: str, option: str, now: int | None = None) -> int:
    """A point in time as epoch milliseconds; a usage error (exit 2) if ``text`` is none.

    ``10m`` means ten minutes before ``now``; ``2025-01-31T12:00:00Z`` or
    ``2025-01-31 12:00`` (local time when no offset is given) a date and time; a bare
    integer, epoch milliseconds.
    """
    text = text.strip()
    duration = parse_duration_ms(text)
    if duration is not None:
        return max(0, (now_ms() if now is None else now) - duration)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not {TIME_HELP}", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person typing it means
    return max(0, int(moment.timestamp() * 1000))


def format_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 in UTC: ``2025-01-31T12:00:00.000Z``."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
