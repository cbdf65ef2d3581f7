"""What every command prints: tables, JSON documents, bytes shown to people, progress.

Data goes to stdout, everything else (progress, notes, errors) to stderr. Tables are
rich tables that fit the terminal (80 columns when stdout is not one); ``--json``
output is ``json.dumps`` of plain dicts and lists whose shapes the README documents.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .times import format_ms

JsonOption = typer.Option("--json", help="Print JSON (shapes in the README).")

_ELLIPSIS = "…"
_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr) that prints text as is: no markup, no emoji."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def print_json(document: Any) -> None:
    """One JSON document on stdout (indented; keys in the order built)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def json_line(document: Any) -> str:
    """One compact JSON document on one line (for JSON Lines streams)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def note(message: str) -> None:
    """A line for people on stderr (not data)."""
    sys.stderr.write(message + "\n")


def bytes_json(data: bytes | None) -> str | dict[str, str] | None:
    """bytes in JSON: a string if valid UTF-8, else ``{"base64": ...}``; None stays null."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def headers_json(headers: Sequence[tuple[str, bytes | None]]) -> list[list[Any]]:
    return [[name, bytes_json(value)] for name, value in headers]


def show_bytes(data: bytes | None, width: int | None = None) -> str:
    """bytes for a person: UTF-8 with escapes for the rest and for control characters."""
    if data is None:
        return "null"
    text = data.decode("utf-8", "backslashreplace")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return clip(text, width) if width is not None else text


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + _ELLIPSIS


def plural(count: int, noun: str) -> str:
    """``1 record``, ``2 records``, ``3 batches`` (thousands separated)."""
    if count == 1:
        return f"1 {noun}"
    if noun.endswith("y"):
        return f"{count:,} {noun[:-1]}ies"
    return f"{count:,} {noun}{'es' if noun.endswith(('s', 'ch', 'sh', 'x')) else 's'}"


def terminal_width() -> int:
    """Columns of the terminal on stdout; 80 when stdout is not a terminal."""
    return shutil.get_terminal_size((80, 24)).columns


def human_size(size_bytes: int) -> str:
    """1536 -> '1.5 KB' (decimal units, as ``ls -h --si``)."""
    value = float(size_bytes)
    for unit in _SIZE_UNITS:
        if value < 1000 or unit == _SIZE_UNITS[-1]:
            return f"{size_bytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def optional_ms(value: int | None, none: str = "forever") -> str:
    return none if value is None else f"{value:,} ms"


def optional_bytes(value: int | None, none: str = "unlimited") -> str:
    return none if value is None else f"{value:,} bytes"


def timestamp(ms: int | None) -> str:
    return "-" if ms is None else format_ms(ms)


def table(*columns: str, title: str | None = None) -> Table:
    """A compact table; column names ending in ``>`` are right-aligned numbers."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title,
              title_justify="left")
    for name in columns:
        right = name.endswith(">")
        t.add_column(name.rstrip(">"), justify="right" if right else "left",
                     overflow="fold", no_wrap=right or "(UTC)" in name)
    return t


def add_row(t: Table, *cells: object) -> None:
    t.add_row(*(Text(str(c)) for c in cells))


def key_values(rows: Sequence[tuple[str, object]]) -> str:
    """Names and values in two columns, values wrapped to the terminal width."""
    indent = max((len(name) for name, _ in rows), default=0) + 2
    width = max(20, terminal_width() - indent)
    lines = []
    for name, value in rows:
        wrapped = textwrap.wrap(str(value), width) or [""]
        lines.append(f"{name:<{indent}}{wrapped[0]}")
        lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class _NoProgress:
    def advance(self, amount: float = 1) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, description: str, total: float | None) -> None:
        self._progress = progress
        self._id = progress.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._id, amount)


@contextmanager
def progress(description: str, total: float | None, *, unit: str = "items",
             enabled: bool = True) -> Iterator[_Task | _NoProgress]:
    """A transient progress bar on stderr, shown only when stderr is a terminal.

    ``unit="bytes"`` shows sizes; ``total=None`` shows a running count. Commands that
    print records to stdout pass ``enabled=not stdout_is_terminal()`` so the bar never
    fights with their output.
    """
    if not (enabled and stderr_is_terminal()):
        yield _NoProgress()
        return
    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    columns = [TextColumn("{task.description:<8}"), BarColumn(), count]
    if total is not None:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        yield _Task(bar, description, total)
