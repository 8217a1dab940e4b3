"""What the storefront's templates show, from the services' messages: plain data, no I/O.

Money is formatted from integer minor units (never through a float), and an order's
progress through the saga is a list of steps the page can colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from shop.common.v1 import money_pb2
from shop.order.v1 import order_pb2
from shop.product.v1 import product_pb2

# Two decimal places for every currency the demo uses; the services store minor units.
MINOR_PER_MAJOR = 100
_STATUS = {
    order_pb2.ORDER_STATUS_PENDING: "pending",
    order_pb2.ORDER_STATUS_CONFIRMED: "confirmed",
    order_pb2.ORDER_STATUS_REJECTED: "rejected",
    order_pb2.ORDER_STATUS_CANCELLED: "cancelled",
}
_STATUS_LABEL = {
    "pending": "Pending",
    "confirmed": "Confirmed",
    "rejected": "Rejected",
    "cancelled": "Cancelled",
    "unknown": "Unknown",
}
# The saga's steps as the customer sees them, in order (docs/saga.md).
STEPS = (
    ("placed", "Placed"),
    ("reserved", "Stock reserved"),
    ("charged", "Paid"),
    ("confirmed", "Confirmed"),
)


def money(value: money_pb2.Money) -> str:
    sign = "-" if value.amount_minor < 0 else ""
    major, minor = divmod(abs(value.amount_minor), MINOR_PER_MAJOR)
    return f"{sign}{major:,}.{minor:02d} {value.currency}".strip()


def parse_amount(text: str) -> int | None:
    """A form's amount ("12.50") in minor units, or None if it is not a positive amount
    with at most two decimals."""
    try:
        amount = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    minor = amount * MINOR_PER_MAJOR
    if not amount.is_finite() or minor != minor.to_integral_value() or minor <= 0:
        return None
    return int(minor)


def product_view(p: product_pb2.Product) -> dict[str, Any]:
    return {
        "product_id": p.product_id,
        "sku": p.sku,
        "title": p.title,
        "description": p.description,
        "price": money(p.price),
    }


def status_name(order: order_pb2.Order) -> str:
    return _STATUS.get(order.status, "unknown")


_STEP_DONE = {
    order_pb2.ORDER_STEP_PLACED: 1,
    order_pb2.ORDER_STEP_RESERVED: 2,
    order_pb2.ORDER_STEP_CHARGED: 3,
    order_pb2.ORDER_STEP_COMMITTED: 3,
}


def step_reached(order: order_pb2.Order) -> int:
    """How many of STEPS are done: 1 once placed, all of them when confirmed."""
    if status_name(order) == "confirmed":
        return len(STEPS)
    return _STEP_DONE.get(order.step, 1)


@dataclass(frozen=True)
class StepView:
    name: str
    label: str
    state: str  # "done", "failed" or ""


def steps(order: order_pb2.Order) -> list[StepView]:
    reached = step_reached(order)
    failed = status_name(order) in {"rejected", "cancelled"}
    views = []
    for index, (name, label) in enumerate(STEPS):
        if index < reached:
            state = "done"
        elif failed and index == reached:
            state = "failed"
        else:
            state = ""
        views.append(StepView(name, label, state))
    return views


def order_view(order: order_pb2.Order) -> dict[str, Any]:
    status = status_name(order)
    created = order.created_at.ToDatetime(tzinfo=UTC) if order.HasField("created_at") else None
    return {
        "order_id": order.order_id,
        "short_id": order.order_id[:8],
        "status": status,
        "status_label": _STATUS_LABEL[status],
        "status_reason": order.status_reason,
        "final": status in {"confirmed", "rejected", "cancelled"},
        "cancellable": status == "pending",
        "steps": steps(order),
        "lines": [
            {"sku": i.sku, "quantity": i.quantity, "unit_price": money(i.unit_price)}
            for i in order.items
        ],
        "total": money(order.total),
        "created_at": created.strftime("%Y-%m-%d %H:%M UTC") if created else "",
        "priced_from_cache": order.priced_from_cache,
    }
