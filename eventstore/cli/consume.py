"""``es consume``: print a topic's records, or tail it with ``--follow`` until Ctrl-C."""

from __future__ import annotations

import enum
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Protocol, Union

import typer

from .. import store as store_module
from ..client.consumer import Consumer
from ..errors import OffsetOutOfRangeError, PartitionNotFoundError
from ..reader import StoreReader
from ..records import Record, TopicConfig, TopicPartition
from .access import AnyStore, BootstrapOption, CliError, DataOption, open_any, open_reader
from .output import (
    JsonOption,
    bytes_json,
    clip,
    headers_json,
    json_line,
    note,
    plural,
    progress,
    show_bytes,
    stderr_is_terminal,
    stdout_is_terminal,
    terminal_width,
)
from .times import TIME_HELP, format_ms, parse_time_ms

if TYPE_CHECKING:  # the Kafka client library is imported only when --bootstrap is given
    from ..remote.kafka import RemoteConsumer

POLL_RECORDS_MAX = 500
FOLLOW_POLL_MS = 1000


class Format(enum.StrEnum):
    raw = "raw"
    json = "json"
    table = "table"


Writer = Callable[[list[Record]], None]
AnyConsumer = Union[Consumer, "RemoteConsumer"]


def consume(
    topic: str,
    group: Annotated[str | None, typer.Option(
        "--group", "-g", help="Start at the group's committed offsets and commit what is printed.")
    ] = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the log start.")] = False,
    offset: Annotated[int | None, typer.Option(
        help="Start at this offset in each partition (negative: this many before the end).")
    ] = None,
    since: Annotated[str | None, typer.Option(
        metavar="TIME", help=f"Start at the first record at or after TIME: {TIME_HELP}.")] = None,
    partition: Annotated[int | None, typer.Option(min=0, help="Only this partition.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Wait for new records until Ctrl-C.")] = False,
    max_records: Annotated[int | None, typer.Option(
        "--max", min=1, help="Stop after N records.")] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", help="raw: values, one per line; json: JSON Lines; table: for people.")
    ] = Format.raw,
    json: Annotated[bool, JsonOption] = False,
    data: DataOption = store_module.DEFAULT_PATH,
    bootstrap: BootstrapOption = None,
) -> None:
    """Print a topic's records and stop, or with --follow wait for more until Ctrl-C.

    Without a start option: the group's committed offsets (with --group), else the log
    start, or the end with --follow (only new records).
    """
    if sum((from_beginning, offset is not None, since is not None)) > 1:
        raise typer.BadParameter("give one of --from-beginning, --offset and --since",
                                 param_hint="--from-beginning")
    since_ms = parse_time_ms(since, "--since") if since is not None else None
    write = _writer(Format.json if json else fmt)
    if group is None and not bootstrap:  # no lock: tail a store an application holds open
        with open_reader(data) as reader:
            tps = _partitions(reader, topic, partition)
            starts = _starts(reader, tps, from_beginning, offset, since_ms)
            for tp in tps:
                if tp not in starts:
                    first, end = reader.offsets(tp.topic, tp.partition)
                    starts[tp] = end if follow else first
            with _sigterm_stops(follow):
                count = _run_reader(reader, starts, write, follow, max_records)
    else:
        with open_any(data, bootstrap) as store:
            tps = _partitions(store, topic, partition)
            consumer = store.consumer(
                group_id=group, enable_auto_commit=False, max_poll_records=POLL_RECORDS_MAX,
                auto_offset_reset="latest" if follow else "earliest",
            )
            try:
                consumer.assign(tps)
                starts = _starts(store, tps, from_beginning, offset, since_ms)
                if group is None:  # a server's store, no group: as the reader, from the start or end
                    for tp in tps:
                        if tp not in starts:
                            first, end = store.offsets(tp.topic, tp.partition)
                            starts[tp] = end if follow else first
                for tp, start in starts.items():
                    consumer.seek(tp, start)
                total = _backlog(store, consumer, tps)
                with _sigterm_stops(follow):
                    count = _run(consumer, write, follow, max_records, total)
            finally:
                consumer.close(autocommit=False)
    if follow and stderr_is_terminal():
        note(f"consumed {plural(count, 'record')}")


class _Log(Protocol):
    """What both a ``Store`` and a ``StoreReader`` offer the start options."""

    def topic(self, name: str) -> TopicConfig: ...
    def offsets(self, topic: str, partition: int) -> tuple[int, int]: ...
    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None: ...


def _partitions(log: _Log, topic: str, partition: int | None) -> list[TopicPartition]:
    cfg = log.topic(topic)
    if partition is not None and partition >= cfg.partitions:
        raise PartitionNotFoundError(topic, partition, cfg.partitions)
    parts = [partition] if partition is not None else list(range(cfg.partitions))
    return [TopicPartition(topic, p) for p in parts]


def _starts(log: _Log, tps: list[TopicPartition], from_beginning: bool,
            offset: int | None, since_ms: int | None) -> dict[TopicPartition, int]:
    """The explicit start offset of each partition (none without a start option)."""
    out: dict[TopicPartition, int] = {}
    if not (from_beginning or offset is not None or since_ms is not None):
        return out
    for tp in tps:
        start, end = log.offsets(tp.topic, tp.partition)
        if from_beginning:
            out[tp] = start
        elif since_ms is not None:
            found = log.offset_for_time(tp.topic, tp.partition, since_ms)
            out[tp] = end if found is None else found
        elif offset is not None:
            target = max(start, end + offset) if offset < 0 else offset
            if not start <= target <= end:
                raise OffsetOutOfRangeError(tp.topic, tp.partition, target, start, end)
            out[tp] = target
    return out


def _backlog(store: AnyStore, consumer: AnyConsumer, tps: list[TopicPartition]) -> int:
    """Records between the consumer's positions and the ends (for the progress bar)."""
    return sum(max(0, store.offsets(tp.topic, tp.partition)[1] - consumer.position(tp)) for tp in tps)


@contextmanager
def _sigterm_stops(follow: bool) -> Iterator[None]:
    """While following, SIGTERM stops like Ctrl-C: the store is closed cleanly, exit status 0."""
    if not follow or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(consumer: AnyConsumer, write: Writer, follow: bool, max_records: int | None,
         backlog: int) -> int:
    """Poll, print and commit until the end (or Ctrl-C with ``follow``); returns the count."""
    count = 0
    timeout_ms = FOLLOW_POLL_MS if follow else 0
    show = not follow and not stdout_is_terminal()
    with progress("consume", min(backlog, max_records or backlog), enabled=show) as bar:
        try:
            while max_records is None or count < max_records:  # bounded by the log or Ctrl-C
                polled = consumer.poll(timeout_ms=timeout_ms, max_records=_limit(count, max_records))
                if not polled:
                    if follow:
                        continue
                    break
                for records in polled.values():
                    write(records)
                    count += len(records)
                    bar.advance(len(records))
                sys.stdout.flush()
                # only what was printed, only partitions that printed something
                if consumer.group_id is not None:
                    consumer.commit({tp: records[-1].offset + 1 for tp, records in polled.items()})
        except KeyboardInterrupt:
            if not follow:
                raise
    return count


def _run_reader(reader: StoreReader, positions: dict[TopicPartition, int], write: Writer,
                follow: bool, max_records: int | None) -> int:
    """Read each partition in turn from ``positions`` until the ends (or Ctrl-C with ``follow``).

    A position that retention has passed moves to the log start, as a
    consumer with ``auto_offset_reset="earliest"`` would.
    """
    count = 0
    backlog = sum(reader.offsets(tp.topic, tp.partition)[1] - at for tp, at in positions.items())
    born = {tp: reader.incarnation(tp.topic, tp.partition) for tp in positions}
    show = not follow and not stdout_is_terminal()
    with progress("consume", min(backlog, max_records or backlog), enabled=show) as bar:
        try:
            while max_records is None or count < max_records:  # bounded by the log or Ctrl-C
                got = 0
                for tp, at in positions.items():  # bounded by the partitions
                    if max_records is not None and count + got >= max_records:
                        break
                    try:
                        records = reader.read(tp.topic, tp.partition, at, _limit(count + got, max_records))
                        _same_topic(reader, tp, born[tp])
                    except OffsetOutOfRangeError as e:
                        _same_topic(reader, tp, born[tp])
                        if at >= e.log_start_offset:
                            raise  # past the end: the log was cut back under us
                        positions[tp] = e.log_start_offset
                        continue
                    if records:
                        write(records)
                        positions[tp] = records[-1].offset + 1
                        got += len(records)
                if got:
                    count += got
                    bar.advance(got)
                    sys.stdout.flush()
                elif follow:
                    time.sleep(reader.poll_interval_ms / 1000)
                else:
                    break
        except KeyboardInterrupt:
            if not follow:
                raise
    return count


def _same_topic(reader: StoreReader, tp: TopicPartition, born: object) -> None:
    """A ``CliError`` if the topic was deleted and made again: its offsets name other records."""
    if reader.incarnation(tp.topic, tp.partition) != born:
        raise CliError(f"topic {tp.topic!r} was deleted and made again while it was read",
                       hint=f"read the new one with: es consume {tp.topic} --from-beginning")


def _limit(count: int, max_records: int | None) -> int:
    return POLL_RECORDS_MAX if max_records is None else min(POLL_RECORDS_MAX, max_records - count)


def _writer(fmt: Format) -> Writer:
    if fmt is Format.raw:
        return _write_raw
    if fmt is Format.json:
        return _write_json
    return _TableWriter(terminal_width())


def _write_raw(records: list[Record]) -> None:
    out = sys.stdout.buffer
    out.write(b"".join((r.value or b"") + b"\n" for r in records))


def record_json(r: Record) -> dict[str, object]:
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset,
            "timestamp_ms": r.timestamp_ms, "key": bytes_json(r.key), "value": bytes_json(r.value),
            "headers": headers_json(r.headers)}


def _write_json(records: list[Record]) -> None:
    sys.stdout.write("".join(json_line(record_json(r)) + "\n" for r in records))


class _TableWriter:
    """Fixed-width lines (a rich table would wait for every row), cut to the terminal width."""

    KEY_WIDTH = 12

    def __init__(self, width: int) -> None:
        self.width = width
        self.header_done = False

    def __call__(self, records: list[Record]) -> None:
        lines = []
        if not self.header_done:
            self.header_done = True
            lines.append(self._line("P", "OFFSET", "TIMESTAMP (UTC)", "KEY", "VALUE"))
        for r in records:
            key = "-" if r.key is None else show_bytes(r.key, self.KEY_WIDTH)
            lines.append(self._line(str(r.partition), str(r.offset), format_ms(r.timestamp_ms), key,
                                    show_bytes(r.value)))
        sys.stdout.write("".join(line + "\n" for line in lines))

    def _line(self, partition: str, offset: str, ts: str, key: str, value: str) -> str:
        text = f"{partition:>3} {offset:>9}  {ts:<24}  {key:<{self.KEY_WIDTH}}  {value}"
        return clip(text, self.width)
