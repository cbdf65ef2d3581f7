"""``es produce``: append records from stdin lines or ``--value`` options."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Annotated

import typer

from .. import store as store_module
from ..errors import PartitionNotFoundError, RecordTooLargeError
from ..records import Header, Message, RecordMetadata
from ..validation import check_plain_topic
from .access import BootstrapOption, CliError, DataOption, open_any
from .output import JsonOption, note, plural, print_json, progress

BATCH_RECORDS_MAX = 1000
BATCH_BYTES_MAX = 4 * 1024 * 1024


class _Written:
    """Per partition: the first and last offset written and how many records."""

    def __init__(self) -> None:
        self.ranges: dict[int, list[int]] = {}
        self.total = 0

    def add(self, metas: Iterable[RecordMetadata]) -> None:
        for meta in metas:  # bounded by one batch
            r = self.ranges.get(meta.partition)
            if r is None:
                self.ranges[meta.partition] = [meta.offset, meta.offset, 1]
            else:
                r[0], r[1], r[2] = min(r[0], meta.offset), max(r[1], meta.offset), r[2] + 1
            self.total += 1


def produce(
    topic: str,
    value: Annotated[list[str] | None, typer.Option(
        "--value", help="A record value (repeat for several); without it, one record per stdin line.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="The key of every record.")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", metavar="NAME=VALUE", help="A header on every record (repeatable).")] = None,
    key_separator: Annotated[str | None, typer.Option(
        metavar="SEP", help="Split each line at the first SEP into key and value.")] = None,
    partition: Annotated[int | None, typer.Option(
        min=0, help="Write to this partition (default: by key, else spread).")] = None,
    data: DataOption = store_module.DEFAULT_PATH,
    json: Annotated[bool, JsonOption] = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Append records, one per stdin line (or per --value); print the offsets written."""
    if key is not None and key_separator is not None:
        raise typer.BadParameter("give --key or --key-separator, not both", param_hint="--key")
    if key_separator == "":
        raise typer.BadParameter("the separator must not be empty", param_hint="--key-separator")
    headers = _parse_headers(header or [])
    if value:
        lines: Iterable[bytes] = [v.encode() for v in value]
        interactive = False
    else:
        lines = _lines(sys.stdin.buffer)
        interactive = sys.stdin.isatty()
    written = _Written()
    with open_any(data, bootstrap) as store:
        cfg = store.topic(topic)  # a missing topic or partition fails before reading any input
        check_plain_topic(cfg)
        if partition is not None and partition >= cfg.partitions:
            raise PartitionNotFoundError(topic, partition, cfg.partitions)
        fixed_key = key.encode() if key is not None else None
        messages = _messages(lines, fixed_key, key_separator, headers, written)
        with progress("produce", None, enabled=not interactive) as bar:
            for first_line, batch in _batches(messages, 1 if interactive else BATCH_RECORDS_MAX):
                try:
                    metas = store.append_batch(topic, batch, partition=partition)
                except RecordTooLargeError as e:
                    line = first_line + (e.index or 0)
                    raise CliError(f"line {line}: {e}", hint=f"{_done(written.total)}; raise the "
                                   f"limit with: es topics alter {topic} --max-record-bytes N") from None
                written.add(metas)
                bar.advance(len(batch))
    _print(topic, written, json)


def _parse_headers(items: list[str]) -> list[Header]:
    headers: list[Header] = []
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--header")
        headers.append((name, text.encode()))
    return headers


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for raw in stream:  # bounded by the input
        if raw.endswith(b"\r\n"):
            yield raw[:-2]
        elif raw.endswith(b"\n"):
            yield raw[:-1]
        else:
            yield raw


def _messages(lines: Iterable[bytes], key: bytes | None, separator: str | None,
              headers: list[Header], written: _Written) -> Iterator[Message]:
    sep = separator.encode() if separator is not None else None
    hdrs = headers or None
    for number, line in enumerate(lines, 1):
        if sep is None:
            yield Message(value=line, key=key, headers=hdrs)
            continue
        k, found, v = line.partition(sep)
        if not found:
            raise CliError(f"line {number} has no key separator {separator!r}",
                           hint=_retry_hint(written.total))
        yield Message(value=v, key=k, headers=hdrs)


def _done(written: int) -> str:
    if not written:
        return "nothing was written"
    if written == 1:
        return "the first record was written"
    return f"the first {written:,} records were written"


def _retry_hint(written: int) -> str:
    if not written:
        return "nothing was written; fix the input and run again"
    return f"{_done(written)}; fix the input and resend from line {written + 1:,}"


def _batches(messages: Iterator[Message], records_max: int) -> Iterator[tuple[int, list[Message]]]:
    """(number of the batch's first line, batch): at most ``records_max`` records or ~4 MiB."""
    batch: list[Message] = []
    size = 0
    first = 1
    for m in messages:  # bounded by the input
        batch.append(m)
        size += len(m.value or b"") + len(m.key or b"")
        if len(batch) >= records_max or size >= BATCH_BYTES_MAX:
            yield first, batch
            first += len(batch)
            batch, size = [], 0
    if batch:
        yield first, batch


def _print(topic: str, written: _Written, json: bool) -> None:
    parts = sorted(written.ranges.items())
    if json:
        print_json({"topic": topic, "records": written.total, "partitions": [
            {"partition": p, "first_offset": r[0], "last_offset": r[1], "records": r[2]}
            for p, r in parts]})
        return
    if not written.total:
        note("no records written (the input was empty)")
        return
    print(f"wrote {plural(written.total, 'record')} to {topic!r}")
    for p, (first, last, _count) in parts:
        where = f"offset {first}" if first == last else f"offsets {first}..{last}"
        print(f"  partition {p}: {where}")
