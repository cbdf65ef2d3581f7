"""An e-commerce flow, all embedded: each service is a consumer group of the ``order`` topic.

- **Order service** places orders: ``OrderPlaced`` in stream ``order-<n>`` (topic ``order``).
- **Inventory** reserves stock: ``InventoryReserved`` or ``OutOfStock`` in the same stream.
- **Payment** charges reserved orders: ``PaymentCompleted``.
- **Notification** tells the customer: ``CustomerNotified``.
- **Fraud** flags an IP placing too many orders within a window: ``FraudSuspected`` in ``fraud-<ip>``.
- **Analytics** is a projection over the ``order`` category: events per type and revenue,
  its state committed together with its checkpoint.
- One **poison** order (its data is not valid JSON) fails in Inventory, is retried, then
  parked in ``order.dlq`` without blocking the orders behind it.

Services append with deterministic event ids, so a record delivered twice (after a crash
between handling and committing) appends nothing twice: the retried append is idempotent.

Run: ``python examples/ecommerce.py [STORE_DIR] [ORDERS]``
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import eventstore
from eventstore import (
    Aggregate,
    DeadLetterProcessor,
    Event,
    NewEvent,
    Projection,
    ProjectionRunner,
    ProjectionState,
    RecordedEvent,
    Repository,
    decode_event,
    encode_event,
    event_from_record,
    event_type,
)

SKUS = {"book": 1_500, "lamp": 4_900, "desk": 24_900, "pen": 300}
STOCK_PER_SKU = 0.3  # share of the orders each SKU can serve before it runs out
FRAUD_WINDOW_MS = 60_000
FRAUD_ORDERS_MAX = 20
_IDS = uuid.UUID("6f1d3f7e-1c7a-4c61-9b7e-2d1f4d1a0e55")


@event_type("OrderPlaced")
class OrderPlaced(Event):
    customer: str
    ip: str
    sku: str
    quantity: int
    total_cents: int


@event_type("InventoryReserved")
class InventoryReserved(Event):
    sku: str
    quantity: int


@event_type("OutOfStock")
class OutOfStock(Event):
    sku: str


@event_type("PaymentCompleted")
class PaymentCompleted(Event):
    amount_cents: int


@event_type("CustomerNotified")
class CustomerNotified(Event):
    customer: str
    message: str


@event_type("FraudSuspected")
class FraudSuspected(Event):
    ip: str
    orders_in_window: int
    order_id: str


class Order(Aggregate):
    """An order's lifecycle, rebuilt from its stream."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.customer = ""
        self.total_cents = 0

    def place(self, customer: str, ip: str, sku: str, quantity: int) -> None:
        self.trigger_event(OrderPlaced, customer=customer, ip=ip, sku=sku, quantity=quantity,
                           total_cents=SKUS[sku] * quantity)

    def apply_OrderPlaced(self, e: OrderPlaced) -> None:
        self.status, self.customer, self.total_cents = "placed", e.customer, e.total_cents

    def apply_InventoryReserved(self, e: InventoryReserved) -> None:
        self.status = "reserved"

    def apply_OutOfStock(self, e: OutOfStock) -> None:
        self.status = "rejected: out of stock"

    def apply_PaymentCompleted(self, e: PaymentCompleted) -> None:
        self.status = "paid"

    def apply_CustomerNotified(self, e: CustomerNotified) -> None:
        self.status += ", customer notified"


def _reply(store: eventstore.Store, service: str, cause: RecordedEvent, stream_id: str,
           event: Event) -> None:
    """Append ``event`` with an id derived from the event that caused it: idempotent."""
    new = encode_event(event, id=uuid.uuid5(_IDS, f"{service}:{cause.id}"))
    store.append_to_stream(stream_id, [new])


class Services:
    """The handlers of every service; each runs in its own consumer group and thread."""

    def __init__(self, store: eventstore.Store, orders: int) -> None:
        self.store = store
        self.stock = {sku: max(1, int(orders * STOCK_PER_SKU)) for sku in SKUS}
        self.recent_by_ip: dict[str, list[int]] = {}
        self.flagged: set[str] = set()

    def inventory(self, record: eventstore.Record) -> None:
        event = event_from_record(record)
        if event.type != "OrderPlaced":
            return
        placed = decode_event(event)  # the poison order raises here: retried, then parked
        assert isinstance(placed, OrderPlaced)
        if self.stock[placed.sku] >= placed.quantity:
            self.stock[placed.sku] -= placed.quantity
            reply: Event = InventoryReserved(sku=placed.sku, quantity=placed.quantity)
        else:
            reply = OutOfStock(sku=placed.sku)
        _reply(self.store, "inventory", event, event.stream_id, reply)

    def payment(self, record: eventstore.Record) -> None:
        event = event_from_record(record)
        if event.type != "InventoryReserved":
            return
        placed = decode_event(self.store.read_stream(event.stream_id, limit=1)[0])
        assert isinstance(placed, OrderPlaced)
        _reply(self.store, "payment", event, event.stream_id,
               PaymentCompleted(amount_cents=placed.total_cents))

    def notification(self, record: eventstore.Record) -> None:
        event = event_from_record(record)
        if event.type not in ("PaymentCompleted", "OutOfStock"):
            return
        placed = decode_event(self.store.read_stream(event.stream_id, limit=1)[0])
        assert isinstance(placed, OrderPlaced)
        text = "paid, on its way" if event.type == "PaymentCompleted" else "sorry, out of stock"
        _reply(self.store, "notification", event, event.stream_id,
               CustomerNotified(customer=placed.customer, message=f"order {event.stream_id}: {text}"))

    def fraud(self, record: eventstore.Record) -> None:
        event = event_from_record(record)
        if event.type != "OrderPlaced":
            return
        try:
            placed = decode_event(event)
        except eventstore.EventDecodeError:
            return  # Inventory parks it; nothing to judge here
        assert isinstance(placed, OrderPlaced)
        window = [t for t in self.recent_by_ip.get(placed.ip, []) if t > event.timestamp_ms - FRAUD_WINDOW_MS]
        window.append(event.timestamp_ms)
        self.recent_by_ip[placed.ip] = window
        if len(window) > FRAUD_ORDERS_MAX and placed.ip not in self.flagged:
            self.flagged.add(placed.ip)
            _reply(self.store, "fraud", event, f"fraud-{placed.ip.replace('.', '_')}",
                   FraudSuspected(ip=placed.ip, orders_in_window=len(window), order_id=event.stream_id))


class Analytics(Projection):
    """Events per type and revenue, over the ``order`` category."""

    category = "order"

    def handle(self, event: RecordedEvent, state: ProjectionState) -> None:
        state.add(b"type:" + event.type.encode(), 1)
        if event.type == "PaymentCompleted":
            paid = decode_event(event)
            assert isinstance(paid, PaymentCompleted)
            state.add(b"revenue_cents", paid.amount_cents)


GROUPS = ("inventory", "payment", "notification", "fraud")


def run(path: str, orders: int = 2_000, progress: Callable[[str, int, int], Any] | None = None,
        seed: int = 7) -> dict[str, Any]:
    """Run the whole flow on the store at ``path``; returns a summary."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with eventstore.open(path, durability="interval", fsync_interval_ms=50) as store:
        store.create_topic("order", partitions=4, exist_ok=True, streams=True)
        store.create_topic("order.dlq", partitions=1, exist_ok=True)
        runner = ProjectionRunner(store, Analytics(), name="analytics")
        runner.catch_up()
        before, dlq_before = _analytics(runner), store.offsets("order.dlq", 0)[1]
        services = Services(store, orders)
        stop = threading.Event()
        threads = []
        for group in GROUPS:
            consumer = store.consumer("order", group_id=group, auto_offset_reset="earliest",
                                      enable_auto_commit=False, max_poll_records=500)
            processor = DeadLetterProcessor(consumer, getattr(services, group), retries=2,
                                            backoff_ms=1)
            thread = threading.Thread(target=_serve, args=(processor, consumer, stop), daemon=True)
            thread.start()
            threads.append(thread)

        repo = Repository(store, Order)
        run_id = uuid.uuid4().hex[:6]
        for i in range(orders):  # the order service
            order = Order(f"order-{run_id}x{i}")
            ip = "203.0.113.7" if i % 10 == 0 else f"198.51.100.{rng.randrange(250)}"
            order.place(f"customer-{rng.randrange(300)}", ip, rng.choice(list(SKUS)), rng.randint(1, 3))
            repo.save(order)
            if i == orders // 2:  # a poison order: its data is not valid JSON
                store.append_to_stream(f"order-{run_id}poison",
                                       [NewEvent(type="OrderPlaced", data=b'{"customer": 4')])
            if progress is not None:
                progress("orders", i + 1, orders)

        _wait_for_quiet(store, progress)
        stop.set()
        for thread in threads:
            thread.join(10)
        placed_s = time.perf_counter() - started

        runner.catch_up()
        after = _analytics(runner)
        sample = repo.get(f"order-{run_id}x1")
        dlq = store.offsets("order.dlq", 0)[1] - dlq_before
        return {  # what this run added (the store keeps every earlier run's events too)
            "orders": orders,
            "seconds": placed_s,
            "events_per_type": {k: v - before.get(k, 0) for k, v in sorted(after.items())
                                if k != "revenue_cents"},
            "revenue_cents": after.get("revenue_cents", 0) - before.get("revenue_cents", 0),
            "lag": {g: sum(store.lag(g).values()) for g in GROUPS},
            "dead_lettered": dlq,
            "fraud_alerts": len(store.list_streams("fraud")),
            "sample_order": {"id": sample.id, "version": sample.version, "status": sample.status,
                             "total_cents": sample.total_cents},
        }


def _analytics(runner: ProjectionRunner) -> dict[str, int]:
    counts = {k.removeprefix(b"type:").decode(): n for k, n in runner.counters(b"type:").items()}
    counts["revenue_cents"] = runner.counter(b"revenue_cents")
    return counts


def _serve(processor: DeadLetterProcessor, consumer: eventstore.Consumer, stop: threading.Event) -> None:
    try:
        processor.run(stop=stop, poll_timeout_ms=100)
    finally:
        consumer.close()


def _wait_for_quiet(store: eventstore.Store, progress: Callable[[str, int, int], Any] | None,
                    timeout_s: float = 120) -> None:
    """Until every group has consumed everything (replies included) twice in a row."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:  # bounded by the deadline
        lag = sum(sum(store.lag(g).values()) for g in GROUPS)
        quiet = quiet + 1 if lag == 0 else 0
        if progress is not None:
            progress("settling", 0 if lag else 1, 1)
        time.sleep(0.05)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="shop-")
    orders = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    summary = run(path, orders)
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
