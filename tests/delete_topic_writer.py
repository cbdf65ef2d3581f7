"""A writer for the delete_topic kill tests: run with ``EVENTSTORE_KILL_AT=<point>:1``.

``python delete_topic_writer.py PATH KIND`` makes a store with a topic ``gone``
(``KIND`` ``plain``: two partitions of records; ``streams``: the streams
``gone-1`` and ``gone-2``), a plain topic ``kept`` and a stream ``keep-1``;
commits group ``g``'s offsets on ``gone`` and ``kept``; then prints ``P`` and
deletes ``gone``, which ``storage/faults.py`` SIGKILLs at the chosen step. If
the deletion returns, it prints ``D``.
"""

from __future__ import annotations

import sys


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(path: str, kind: str) -> None:
    import eventstore
    from eventstore import NewEvent, TopicPartition

    store = eventstore.open(path)
    store.create_topic("kept")
    store.append("kept", b"k0")
    store.append_to_stream("keep-1", [NewEvent(type="made", data=b"{}")])
    if kind == "streams":
        for stream in ("gone-1", "gone-2"):
            store.append_to_stream(stream, [NewEvent(type="e", data=b"%d" % n) for n in range(3)])
        partitions = store.topic("gone").partitions
    else:
        store.create_topic("gone", 2)
        store.append_batch("gone", [b"a", b"b", b"c"], partition=0)
        store.append_batch("gone", [b"d", b"e"], partition=1)
        partitions = 2
    offsets = {TopicPartition("gone", p): store.offsets("gone", p)[1] for p in range(partitions)}
    store.reset_group_offsets("g", {**offsets, TopicPartition("kept", 0): 1})
    assert len(store.list_streams()) == (3 if kind == "streams" else 1)  # the index holds them
    emit("P")
    store.delete_topic("gone")
    emit("D")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
