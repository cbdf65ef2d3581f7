"""eventstore for async code, on anyio: the same store under asyncio or trio.

::

    async with await eventstore.aio.open(path) as store:
        await store.create_topic("orders", partitions=3)
        await store.append("orders", b"v", key=b"k")
        consumer = store.consumer("orders", group_id="g", auto_offset_reset="earliest")
        async for record in consumer:
            ...

These are facades over the blocking API with no logic of their own: each
method has the name, arguments, results and errors of the blocking method it
calls. What changes is how they wait:

1. A method that may touch the disk, fsync or wait for a lock is a coroutine
   and runs the blocking call in a worker thread. Once started the call
   completes, and its result is returned even if the task was cancelled
   meanwhile (the cancellation takes effect at the next checkpoint): a
   cancelled call did not happen.
2. Waiting for records (``Consumer.poll``, ``async for``, ``Store.wait_for``)
   and for a producer future holds no thread: the partition (or the sender
   thread) wakes the task, and a cancelled wait leaves nothing behind.
3. ``close`` and leaving ``async with`` are shielded from cancellation, so a
   store is always closed and its lock released.
4. Methods that only read or change a client's own state in memory (a
   consumer's assignment, ``seek``, ``pause``, a transaction's ``append``, a
   future's ``done``) and the factories (``consumer``, ``producer``,
   ``transaction``, ``subscribe_to_*``) are plain methods. Everything else is
   awaited, topic configurations (``topic``, ``topics``, ``partitions_for``)
   included.
5. Each facade's ``blocking`` attribute is the object it wraps.

The event-sourcing API of the store is here too: ``append_to_stream``,
``read_stream``, ``read_all``, stream metadata, and subscriptions that are
async iterators (``async for event in store.subscribe_to_category("order")``).
``tests/test_api_signatures.py`` holds every facade to the parameters of the
blocking class it wraps, and lists the few deliberate differences.
"""

from .consumer import Consumer
from .deadletter import DeadLetterProcessor
from .producer import FutureRecordMetadata, Producer
from .reader import StoreReader, open_reader
from .remote import RemoteStore, connect
from .store import Store, open
from .subscriptions import Subscription
from .transactions import Transaction

__all__ = [
    # opening
    "Store",
    "StoreReader",
    "connect",
    "open",
    "open_reader",
    "RemoteStore",
    "Transaction",
    # clients
    "Consumer",
    "DeadLetterProcessor",
    "FutureRecordMetadata",
    "Producer",
    # event streams
    "Subscription",
]
