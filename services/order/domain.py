"""The order's rules, in plain Python with no I/O, and the events they cause.

An order is born PENDING, priced from the catalog at that moment, and the saga
(inventory, payment) later moves it to exactly one final status. Placing an order
starts the saga (OrderPlaced); cancelling one, by its owner or by the saga timeout,
asks the others to undo their part (OrderCancelled). Settling an outcome the others
decided announces nothing. Beside its status an order keeps its saga step, how far
the saga has got, for the customer to watch (OrderStep).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.money import Money
from shared.validation import parse_uuid, require_idempotency_key, require_range, require_text

MAX_ITEMS = 50
MAX_QUANTITY = 100
MAX_REASON = 500

CANCELLED_BY_CUSTOMER = "cancelled by customer"
SAGA_TIMED_OUT = "saga timed out"


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


# Every outcome of the saga is final: a confirmed order is never un-confirmed,
# a rejected one is never retried (the client places a new order instead).
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
    ),
    OrderStatus.CONFIRMED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
# Statuses that only make sense with a why; the others must carry none.
_EXPLAINED = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELLED})


class OrderStep(enum.StrEnum):
    """How far the saga's forward path got, apart from the status (proto OrderStep).

    Only forward, only while PENDING; a final status keeps the furthest step reached,
    and a CONFIRMED order is COMMITTED. Listed in the order the saga takes them.
    """

    PLACED = "placed"  # stored, OrderCreated staged; inventory has not answered
    RESERVED = "reserved"  # inventory holds every line (InventoryReserved)
    CHARGED = "charged"  # payment charged the wallet (PaymentSucceeded)
    COMMITTED = "committed"  # inventory sold the stock (InventoryCommitted): CONFIRMED

    def at_least(self, other: OrderStep) -> bool:
        steps = list(OrderStep)
        return steps.index(self) >= steps.index(other)


@dataclass(frozen=True, slots=True)
class RequestedItem:
    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated PlaceOrder request, not yet priced."""

    idempotency_key: str
    items: tuple[RequestedItem, ...]

    @property
    def product_ids(self) -> list[uuid.UUID]:
        return [item.product_id for item in self.items]

    @property
    def quantities(self) -> dict[uuid.UUID, int]:
        return {item.product_id: item.quantity for item in self.items}


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What the order needs to know of a product at the moment it is placed."""

    product_id: uuid.UUID
    sku: str
    price: Money
    sellable: bool


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: uuid.UUID
    # Captured when ordered: later catalog changes do not rewrite history.
    sku: str
    quantity: int
    unit_price: Money

    @property
    def subtotal(self) -> Money:
        return self.unit_price.times(self.quantity)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    items: tuple[OrderItem, ...]
    total: Money
    idempotency_key: str
    status_reason: str
    created_at: datetime
    updated_at: datetime
    # Priced from the order service's last known catalog entries while the product
    # service was unreachable (degraded mode), not from a live lookup. The total is
    # still what the customer is charged.
    priced_from_cache: bool = False
    step: OrderStep = OrderStep.PLACED

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self.status]

    def transition(self, to: OrderStatus, reason: str = "") -> Order:
        """A copy in status ``to``; FailedPrecondition if the state machine forbids it."""
        if to not in TRANSITIONS[self.status]:
            raise FailedPrecondition(
                f"order {self.order_id} is {self.status}; it cannot become {to}"
            )
        if to in _EXPLAINED:
            reason = require_text(reason, "reason", max_len=MAX_REASON)
        elif reason:
            raise InvalidArgument("reason", f"a {to} order carries no reason")
        # Confirmed means sold: the saga went all the way, whichever steps were heard.
        step = OrderStep.COMMITTED if to is OrderStatus.CONFIRMED else self.step
        return replace(
            self, status=to, status_reason=reason, step=step, updated_at=datetime.now(UTC)
        )

    def confirm(self) -> Order:
        return self.transition(OrderStatus.CONFIRMED)

    def reject(self, reason: str) -> Order:
        return self.transition(OrderStatus.REJECTED, reason)

    def cancel(self, reason: str) -> Order:
        return self.transition(OrderStatus.CANCELLED, reason)

    def answers(self, request: OrderRequest) -> bool:
        """Whether this order is what ``request`` asks for (item order aside)."""
        return {i.product_id: i.quantity for i in self.items} == request.quantities


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """What an event of another context decides about an order."""

    status: OrderStatus
    reason: str = ""
    # The furthest step the event shows the saga reached, heard of or not.
    reached: OrderStep = OrderStep.PLACED


def _explained(prefix: str, detail: str) -> str:
    # Built from another service's text: never let its length or emptiness make
    # the transition raise, or the event would be retried and dead-lettered.
    return f"{prefix}: {detail.strip() or 'unknown'}"[:MAX_REASON]


def inventory_committed() -> SagaOutcome:
    return SagaOutcome(OrderStatus.CONFIRMED)


def inventory_rejected(sku: str) -> SagaOutcome:
    return SagaOutcome(OrderStatus.REJECTED, _explained("out of stock", sku))


def payment_failed(reason: str) -> SagaOutcome:
    # Payment only charges a reserved order: the order got that far.
    return SagaOutcome(
        OrderStatus.CANCELLED, _explained("payment failed", reason), OrderStep.RESERVED
    )


def settle(order: Order, outcome: SagaOutcome) -> Order | None:
    """The order after ``outcome``, or None when it is already final.

    Events arrive at least once and in no order across topics, so the first
    outcome wins and any later one (a redelivery, or the loser of a race with
    CancelOrder or the saga timeout) changes nothing.
    """
    if order.is_final:
        return None
    settled = order.transition(outcome.status, outcome.reason)
    return replace(settled, step=max(settled.step, outcome.reached, key=list(OrderStep).index))


def progress(order: Order, step: OrderStep) -> Order | None:
    """The order at saga step ``step``, or None when that changes nothing.

    The step only moves forward and only while the order is PENDING: a redelivery,
    an event overtaken by a later one from the other topic (PaymentSucceeded may
    arrive before InventoryReserved) or one for a final order leaves it as it is.
    """
    if order.is_final or order.step.at_least(step):
        return None
    return replace(order, step=step, updated_at=datetime.now(UTC))


def cancel_by_customer(order: Order) -> Order:
    """The order cancelled at its owner's request; itself if it already is (a retry)."""
    if order.status is OrderStatus.CANCELLED:
        return order
    if order.status is not OrderStatus.PENDING:
        raise FailedPrecondition(
            f"order {order.order_id} is {order.status}; only a pending order can be cancelled"
        )
    return order.cancel(CANCELLED_BY_CUSTOMER)


def cancel_events(before: Order, after: Order) -> list[OrderEvent]:
    """What a cancellation announces: OrderCancelled once, and nothing for a retry of a
    cancel already done (``after`` is ``before``)."""
    return [] if after is before else [OrderCancelled(after)]


def time_out(order: Order) -> Order:
    """The order cancelled because the saga did not finish within its deadline."""
    return order.cancel(SAGA_TIMED_OUT)


def order_request(idempotency_key: str, items: Sequence[tuple[str, int]]) -> OrderRequest:
    """Validates raw (product_id, quantity) pairs and the key, naming the bad field."""
    require_idempotency_key(idempotency_key)
    if not items:
        raise InvalidArgument("items", "must hold at least one item")
    if len(items) > MAX_ITEMS:
        raise InvalidArgument("items", f"must hold at most {MAX_ITEMS} items, got {len(items)}")
    seen: dict[uuid.UUID, int] = {}
    parsed = []
    for i, (raw_id, quantity) in enumerate(items):
        product_id = parse_uuid(raw_id, f"items[{i}].product_id")
        if product_id in seen:
            raise InvalidArgument(
                f"items[{i}].product_id",
                f"repeats items[{seen[product_id]}]; order a larger quantity instead",
            )
        seen[product_id] = i
        require_range(quantity, f"items[{i}].quantity", low=1, high=MAX_QUANTITY)
        parsed.append(RequestedItem(product_id, quantity))
    return OrderRequest(idempotency_key, tuple(parsed))


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    """The saga starts: inventory reserves every line or none."""

    order: Order


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """Inventory releases what it holds for the order; payment refunds what it charged."""

    order: Order


OrderEvent = OrderPlaced | OrderCancelled


def place_order(
    *,
    user_id: uuid.UUID,
    request: OrderRequest,
    catalog: Mapping[uuid.UUID, CatalogEntry],
    priced_from_cache: bool = False,
) -> Order:
    """A new PENDING order, priced from ``catalog`` as it is right now.

    ``priced_from_cache``: ``catalog`` holds the last entries seen, not a live answer;
    the order records it, and is priced by the same rules either way.
    """
    missing = [str(i) for i in request.product_ids if i not in catalog]
    if missing:
        raise NotFound(f"products do not exist: {', '.join(missing)}")
    unsellable = [str(i) for i in request.product_ids if not catalog[i].sellable]
    if unsellable:
        raise FailedPrecondition(f"products are not for sale: {', '.join(unsellable)}")
    currencies = sorted({catalog[i].price.currency for i in request.product_ids})
    if len(currencies) > 1:
        raise FailedPrecondition(
            f"items are priced in {', '.join(currencies)}; one order takes one currency"
        )
    items = tuple(
        sorted(
            (
                OrderItem(
                    item.product_id,
                    catalog[item.product_id].sku,
                    item.quantity,
                    catalog[item.product_id].price,
                )
                for item in request.items
            ),
            # One canonical order, so PlaceOrder and GetOrder list items alike.
            key=lambda item: (item.sku, item.product_id),
        )
    )
    total = Money(0, currencies[0])
    for item in items:
        total += item.subtotal
    now = datetime.now(UTC)
    return Order(
        order_id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        items=items,
        total=total,
        idempotency_key=request.idempotency_key,
        status_reason="",
        created_at=now,
        updated_at=now,
        priced_from_cache=priced_from_cache,
    )


def replay(existing: Order, request: OrderRequest) -> Order:
    """The answer to a retried PlaceOrder: the first order, if the retry asks for the same."""
    if not existing.answers(request):
        raise FailedPrecondition(
            f"idempotency_key {request.idempotency_key!r} was already used for order "
            f"{existing.order_id} with different items; use a new key for a new order"
        )
    return existing
