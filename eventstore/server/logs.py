"""The server's log lines on stderr, as text for people or JSON for collectors
(``es serve --log-format json|text --log-level LEVEL``; docs/operations.md, 4.3).

A JSON line is one object: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message``, and the fields a line was given with ``extra=`` (a
connection's ``client``, ``listener`` and ``principal``; a slow request's ``api`` and
``ms``); an exception comes as ``exc``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

from ..errors import InvalidArgumentError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(message)s"
SERVER_LOGGER: Final = "eventstore.server"

#: The attributes every LogRecord has; anything else on a record came as ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():  # bounded by the record's attributes
            if name not in _STANDARD and not name.startswith("_"):
                plain = isinstance(value, (str, int, float, bool)) or value is None
                line[name] = value if plain else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The server's handler on stderr (one per process, replaced by a later configuration)."""


def configure_logging(log_format: str = "text", log_level: str = "info") -> None:
    """Send the server's log lines to stderr in ``log_format`` from ``log_level`` up."""
    if log_format not in LOG_FORMATS:
        raise InvalidArgumentError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidArgumentError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    server_log = logging.getLogger(SERVER_LOGGER)
    for old in [h for h in server_log.handlers if isinstance(h, _StderrHandler)]:
        server_log.removeHandler(old)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    server_log.addHandler(handler)
    server_log.setLevel(log_level.upper())
    server_log.propagate = False
