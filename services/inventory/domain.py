"""Stock and reservation rules, in plain Python with no I/O.

A stock row is a small ledger: every unit ever received is available, reserved
or sold, so ``available + reserved + sold == total_received`` always holds.
In the order saga each order gets one reservation, whose state machine (below)
says what every saga event does to it and to the stock it holds, and the domain
events (at the end) are what the rest of the saga hears of it.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import Money
from shared.validation import require_batch, require_range

# The catalog's SKU format. Duplicated from the product service on purpose:
# services share contracts, not code.
SKU_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{1,63}")
MAX_AVAILABLE = 1_000_000_000
MAX_BATCH = 100


@dataclass(frozen=True, slots=True)
class Stock:
    sku: str
    available: int
    reserved: int
    sold: int
    total_received: int
    updated_at: datetime

    @property
    def balanced(self) -> bool:
        return self.available + self.reserved + self.sold == self.total_received


def parse_sku(value: str, field: str = "sku") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    # fullmatch, not match with '$': '$' also matches before a trailing newline.
    if not SKU_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            "must be 2-64 characters of A-Z, 0-9 and '-', starting with a letter or digit,"
            f" got {value[:70]!r}",
        )
    return value


def parse_skus(values: Sequence[str], field: str = "skus") -> list[str]:
    """Distinct SKUs in request order; rejects the whole batch if any one is malformed."""
    skus = require_batch(values, field, max_items=MAX_BATCH)
    return [parse_sku(sku, f"{field}[{i}]") for i, sku in enumerate(skus)]


def require_available(value: int, field: str = "available") -> int:
    return require_range(value, field, low=0, high=MAX_AVAILABLE)


# --- the order saga: one reservation per order ---------------------------------------------------

MAX_LINES = MAX_BATCH
MAX_REASON = 500
# What InventoryRejected and InventoryReleased say; the order service shows them to the customer.
OUT_OF_STOCK = "out of stock"
PAYMENT_FAILED = "payment failed"
ORDER_CANCELLED = "order cancelled"


class ReservationState(enum.StrEnum):
    # Every line is held: available -> reserved.
    RESERVED = "reserved"
    # Paid: reserved -> sold.
    COMMITTED = "committed"
    # Returned to available stock, from RESERVED (payment failed, cancelled) or from
    # COMMITTED (cancelled after payment: un-sold).
    RELEASED = "released"
    # Some line was short; nothing was ever held.
    REJECTED = "rejected"
    # A tombstone: the order was cancelled before inventory heard of it, so a late
    # OrderCreated finds it and holds nothing.
    CANCELLED = "cancelled"


# None is "no reservation yet". A reservation is born RESERVED, REJECTED or CANCELLED.
TRANSITIONS: Mapping[ReservationState | None, frozenset[ReservationState]] = {
    None: frozenset(
        {ReservationState.RESERVED, ReservationState.REJECTED, ReservationState.CANCELLED}
    ),
    ReservationState.RESERVED: frozenset({ReservationState.COMMITTED, ReservationState.RELEASED}),
    ReservationState.COMMITTED: frozenset({ReservationState.RELEASED}),
    ReservationState.RELEASED: frozenset(),
    ReservationState.REJECTED: frozenset(),
    ReservationState.CANCELLED: frozenset(),
}


class IllegalTransition(FailedPrecondition):
    """A reservation was asked to move where its state machine does not go: a bug, not input."""


def check_transition(current: ReservationState | None, to: ReservationState) -> None:
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(f"a reservation in state {current or 'none'} cannot become {to}")


class StockMove(enum.Enum):
    """What a step does to each line's units, as deltas of (available, reserved, sold).

    Every move sums to zero, so ``available + reserved + sold == total_received`` holds.
    """

    HOLD = (-1, 1, 0)
    COMMIT = (0, -1, 1)
    RELEASE = (1, -1, 0)
    UNSELL = (1, 0, -1)
    NONE = (0, 0, 0)

    @property
    def available(self) -> int:
        return self.value[0]

    @property
    def reserved(self) -> int:
        return self.value[1]

    @property
    def sold(self) -> int:
        return self.value[2]


class Trigger(enum.StrEnum):
    """The saga events inventory reacts to."""

    ORDER_CREATED = "OrderCreated"
    PAYMENT_SUCCEEDED = "PaymentSucceeded"
    PAYMENT_FAILED = "PaymentFailed"
    ORDER_CANCELLED = "OrderCancelled"


@dataclass(frozen=True, slots=True)
class Step:
    to: ReservationState
    move: StockMove
    # Where the reservation goes instead when the stock cannot cover every line.
    if_short: ReservationState | None = None


# What each event does to a reservation in each state. A state missing from an
# event's row means "nothing": the event is stale, a duplicate, or arrived after
# a compensation (e.g. PaymentSucceeded for a released reservation: payment
# refunds on its own). Handlers must not raise for those.
REACTIONS: Mapping[Trigger, Mapping[ReservationState | None, Step]] = {
    Trigger.ORDER_CREATED: {
        None: Step(ReservationState.RESERVED, StockMove.HOLD, if_short=ReservationState.REJECTED),
    },
    Trigger.PAYMENT_SUCCEEDED: {
        ReservationState.RESERVED: Step(ReservationState.COMMITTED, StockMove.COMMIT),
    },
    Trigger.PAYMENT_FAILED: {
        ReservationState.RESERVED: Step(ReservationState.RELEASED, StockMove.RELEASE),
    },
    Trigger.ORDER_CANCELLED: {
        None: Step(ReservationState.CANCELLED, StockMove.NONE),
        ReservationState.RESERVED: Step(ReservationState.RELEASED, StockMove.RELEASE),
        ReservationState.COMMITTED: Step(ReservationState.RELEASED, StockMove.UNSELL),
    },
}


def _check_reactions() -> None:
    for reactions in REACTIONS.values():
        for state, step in reactions.items():
            check_transition(state, step.to)
            if step.if_short is not None:
                check_transition(state, step.if_short)


_check_reactions()  # an illegal entry above fails at import, not in the middle of a saga


def react(state: ReservationState | None, trigger: Trigger) -> Step | None:
    """What ``trigger`` does to a reservation in ``state`` (None: none yet); None: nothing."""
    return REACTIONS[trigger].get(state)


def source_states(trigger: Trigger) -> frozenset[ReservationState | None]:
    """The states in which ``trigger`` does anything at all."""
    return frozenset(REACTIONS[trigger])


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int


def requested_lines(lines: Sequence[tuple[str, int]], field: str = "lines") -> tuple[Line, ...]:
    """One line per SKU (a repeated SKU's quantities added up), sorted by SKU.

    Sorted because stock rows are locked in line order, and one global order is
    what keeps two orders sharing SKUs from deadlocking each other.
    """
    if not lines:
        raise InvalidArgument(field, "must not be empty")
    if len(lines) > MAX_LINES:
        raise InvalidArgument(field, f"must hold at most {MAX_LINES} lines, got {len(lines)}")
    quantities: dict[str, int] = {}
    for i, (sku, quantity) in enumerate(lines):
        parse_sku(sku, f"{field}[{i}].sku")
        require_range(quantity, f"{field}[{i}].quantity", low=1, high=MAX_AVAILABLE)
        quantities[sku] = quantities.get(sku, 0) + quantity
    for sku, quantity in quantities.items():
        require_range(quantity, f"{field}[sku={sku}].quantity", low=1, high=MAX_AVAILABLE)
    return tuple(Line(sku, quantities[sku]) for sku in sorted(quantities))


def first_short(lines: Sequence[Line], held: Collection[str]) -> str | None:
    """The first SKU (in line order) that could not be held; None when every line was."""
    return next((line.sku for line in lines if line.sku not in held), None)


def first_fit(available: int, quantities: Sequence[int]) -> list[bool]:
    """Which of these requests for one SKU are held, in order, from ``available`` units.

    The same answer as one conditional UPDATE (``... WHERE available >= q``) per
    request in turn: a request that does not fit is refused, and a later, smaller
    one may still fit.
    """
    held = []
    for quantity in quantities:
        fits = 0 < quantity <= available
        if fits:
            available -= quantity
        held.append(fits)
    return held


def rejection_reason(sku: str) -> str:
    return f"{OUT_OF_STOCK}: {sku}"


def release_reason(reason: str) -> str:
    """A reason a released or cancelled reservation can always carry: never empty, bounded."""
    return reason.strip()[:MAX_REASON] or ORDER_CANCELLED


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: uuid.UUID
    state: ReservationState
    user_id: uuid.UUID
    # None only for a tombstone: a cancellation does not say what the order cost.
    total: Money | None
    reason: str
    lines: tuple[Line, ...]
    created_at: datetime
    updated_at: datetime


# --- the domain events: what the saga hears of a reservation -------------------------------------


@dataclass(frozen=True, slots=True)
class StockReserved:
    """Every line of the order is held; payment may charge ``total``."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    total: Money


@dataclass(frozen=True, slots=True)
class ReservationRejected:
    """Nothing is held: ``sku`` is the first line the stock could not cover."""

    order_id: uuid.UUID
    sku: str
    reason: str = OUT_OF_STOCK


@dataclass(frozen=True, slots=True)
class ReservationCommitted:
    """Paid: the held units are sold."""

    order_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ReservationReleased:
    """The held (or sold) units are available again."""

    order_id: uuid.UUID
    reason: str


InventoryEvent = StockReserved | ReservationRejected | ReservationCommitted | ReservationReleased


def reservation_outcome(
    order_id: uuid.UUID, user_id: uuid.UUID, total: Money, short: str | None
) -> StockReserved | ReservationRejected:
    """What a new reservation announces: held, or rejected naming its first short SKU."""
    if short is None:
        return StockReserved(order_id, user_id, total)
    return ReservationRejected(order_id, short)


def moved_on(
    order_id: uuid.UUID, to: ReservationState, reason: str
) -> ReservationCommitted | ReservationReleased | None:
    """What a reservation that moved on to ``to`` announces; a tombstone announces nothing
    (the order service cancelled the order itself)."""
    if to is ReservationState.COMMITTED:
        return ReservationCommitted(order_id)
    if to is ReservationState.RELEASED:
        return ReservationReleased(order_id, reason)
    return None
