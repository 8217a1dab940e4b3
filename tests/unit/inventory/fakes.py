"""Inventory's unit of work in memory, with the semantics its SQL has.

The tables are plain dicts; each repository method does what its statement does
(a conditional UPDATE "WHERE available >= q" is a check before the change, a
claim "ON CONFLICT DO NOTHING" is an insert only where there is no row), and the
CHECK constraints of the migrations are checked after every write, so a use case
that would break one fails here as it would against PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.inventory.domain import (
    SKU_PATTERN,
    Line,
    Reservation,
    ReservationState,
    Step,
    Stock,
)
from services.inventory.publishing import publication
from services.inventory.use_cases import Claim, SingleLineOrder
from shared.money import Money
from tests.support.fake_unit_of_work import FakeUnitOfWork

# A hold, as the SQL's UPDATE does it: available -> reserved.
_HOLD = (-1, 1, 0)


class ConstraintViolation(Exception):
    """What PostgreSQL would raise for a CHECK or a primary key the write breaks."""


@dataclass
class StockRow:
    available: int
    reserved: int
    sold: int
    total_received: int
    updated_at: datetime


@dataclass
class ReservationRow:
    state: ReservationState
    user_id: uuid.UUID
    total: Money | None
    reason: str
    lines: dict[str, int]  # sku -> quantity
    created_at: datetime
    updated_at: datetime


@dataclass
class InventoryTables:
    stock: dict[str, StockRow] = field(default_factory=dict)
    reservations: dict[uuid.UUID, ReservationRow] = field(default_factory=dict)

    def check(self) -> None:
        """The migrations' CHECK constraints."""
        for sku, s in self.stock.items():
            if not SKU_PATTERN.fullmatch(sku):
                raise ConstraintViolation(f"stock sku {sku!r}")
            if min(s.available, s.reserved, s.sold) < 0:
                raise ConstraintViolation(f"stock {sku} below zero: {s}")
            if s.available + s.reserved + s.sold != s.total_received:
                raise ConstraintViolation(f"stock_ledger_balanced: {sku} {s}")
        for order_id, r in self.reservations.items():
            if (r.total is None) != (r.state is ReservationState.CANCELLED):
                raise ConstraintViolation(f"reservations_total_known: {order_id} {r.state}")
            live = r.state in (ReservationState.RESERVED, ReservationState.COMMITTED)
            if live != (r.reason == "") or len(r.reason) > 500:
                raise ConstraintViolation(f"reservations_reason: {order_id} {r.state} {r.reason!r}")
            if any(q <= 0 or not SKU_PATTERN.fullmatch(sku) for sku, q in r.lines.items()):
                raise ConstraintViolation(f"reservation_lines: {order_id} {r.lines}")


def _now() -> datetime:
    return datetime.now(UTC)


class FakeStockRepository:
    def __init__(self, uow: FakeInventoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[str, StockRow]:
        return self._uow.tables.stock

    async def set_available(self, sku: str, available: int) -> Stock:
        row = self._rows.get(sku)
        if row is None:
            row = self._rows[sku] = StockRow(available, 0, 0, available, _now())
        else:
            row.total_received += available - row.available
            row.available = available
            row.updated_at = _now()
        self._uow.tables.check()
        return _stock(sku, row)

    async def get(self, sku: str) -> Stock | None:
        row = self._rows.get(sku)
        return None if row is None else _stock(sku, row)

    async def get_many(self, skus: list[str]) -> list[Stock]:
        return [_stock(sku, self._rows[sku]) for sku in sorted(set(skus)) if sku in self._rows]

    async def lock_in_order(self, skus: Collection[str], order_ids: Collection[uuid.UUID]) -> None:
        """Records the rows locked, in the order they are locked."""
        reservations = self._uow.tables.reservations
        wanted = set(skus) | {
            sku
            for order_id in order_ids
            if order_id in reservations
            for sku in reservations[order_id].lines
        }
        self._uow.locked.append(sorted(sku for sku in wanted if sku in self._rows))


def _stock(sku: str, row: StockRow) -> Stock:
    return Stock(sku, row.available, row.reserved, row.sold, row.total_received, row.updated_at)


class FakeReservationRepository:
    def __init__(self, uow: FakeInventoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, ReservationRow]:
        return self._uow.tables.reservations

    @property
    def _stock(self) -> dict[str, StockRow]:
        return self._uow.tables.stock

    def _claim(
        self, order_id: uuid.UUID, state: ReservationState, user_id: uuid.UUID, total: Money
    ) -> bool:
        """INSERT ... ON CONFLICT (order_id) DO NOTHING."""
        if order_id in self._rows:
            return False
        now = _now()
        self._rows[order_id] = ReservationRow(state, user_id, total, "", {}, now, now)
        return True

    def _add_line(self, order_id: uuid.UUID, sku: str, quantity: int) -> None:
        lines = self._rows[order_id].lines
        if sku in lines:
            raise ConstraintViolation(f"reservation_lines_pkey: ({order_id}, {sku})")
        lines[sku] = quantity

    def _fits(self, sku: str, quantity: int) -> bool:
        """UPDATE stock ... WHERE sku = $1 AND available >= $2: no row, no update."""
        row = self._stock.get(sku)
        return row is not None and row.available >= quantity

    def _move(self, sku: str, deltas: tuple[int, int, int], quantity: int) -> None:
        row = self._stock[sku]
        row.available += deltas[0] * quantity
        row.reserved += deltas[1] * quantity
        row.sold += deltas[2] * quantity
        row.updated_at = _now()

    async def claim_and_hold(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        total: Money,
        lines: Sequence[Line],
        state: ReservationState,
    ) -> Claim:
        self._uow.claims["claim_and_hold"] += 1
        skus = [line.sku for line in lines]
        # The SQL locks stock rows in line order: only SKU order keeps it free of deadlocks.
        assert skus == sorted(set(skus)), f"lines must be distinct and sorted by SKU: {skus}"
        if not self._claim(order_id, state, user_id, total):
            return Claim(claimed=False)
        for line in lines:
            self._add_line(order_id, line.sku, line.quantity)
        short = next((line.sku for line in lines if not self._fits(line.sku, line.quantity)), None)
        if short is None:
            for line in lines:
                self._move(line.sku, _HOLD, line.quantity)
        self._uow.tables.check()
        return Claim(claimed=True, short=short)

    async def claim_and_hold_same_sku(
        self,
        sku: str,
        orders: Sequence[SingleLineOrder],
        claimed_as: ReservationState,
        if_short: ReservationState,
        reason: str,
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        self._uow.claims["claim_and_hold_same_sku"] += 1
        # What claim_and_hold does for each order in turn: one conditional UPDATE each.
        claimed = {
            o.order_id for o in orders if self._claim(o.order_id, claimed_as, o.user_id, o.total)
        }
        held: set[uuid.UUID] = set()
        for order in (o for o in orders if o.order_id in claimed):
            self._add_line(order.order_id, sku, order.quantity)
            if self._fits(sku, order.quantity):
                self._move(sku, _HOLD, order.quantity)
                held.add(order.order_id)
        for order_id in claimed - held:
            row = self._rows[order_id]
            if row.state is claimed_as:
                row.state, row.reason, row.updated_at = if_short, reason, _now()
        self._uow.tables.check()
        return claimed, held

    async def reject(
        self,
        order_id: uuid.UUID,
        claimed_as: ReservationState,
        to: ReservationState,
        reason: str,
    ) -> None:
        row = self._rows.get(order_id)
        if row is None or row.state is not claimed_as:
            raise RuntimeError(f"reservation {order_id} was not {claimed_as} after its claim")
        row.state, row.reason, row.updated_at = to, reason, _now()
        self._uow.tables.check()

    async def lock_or_create(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        state: ReservationState,
        reason: str,
    ) -> tuple[ReservationState | None, bool]:
        row = self._rows.get(order_id)
        if row is not None:
            return row.state, False
        now = _now()
        self._rows[order_id] = ReservationRow(state, user_id, None, reason, {}, now, now)
        self._uow.tables.check()
        return None, True

    async def advance(
        self, order_id: uuid.UUID, current: ReservationState, step: Step, reason: str
    ) -> bool:
        row = self._rows.get(order_id)
        if row is None or row.state is not current:
            return False
        row.state, row.reason, row.updated_at = step.to, reason, _now()
        for sku, quantity in row.lines.items():
            if sku not in self._stock:
                raise RuntimeError(f"reservation {order_id}: no stock row for {sku}")
            self._move(sku, step.move.value, quantity)
        self._uow.tables.check()
        return True

    async def get(self, order_id: uuid.UUID) -> Reservation | None:
        row = self._rows.get(order_id)
        if row is None:
            return None
        return Reservation(
            order_id=order_id,
            state=row.state,
            user_id=row.user_id,
            total=row.total,
            reason=row.reason,
            lines=tuple(Line(sku, row.lines[sku]) for sku in sorted(row.lines)),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class FakeInventoryUnitOfWork(FakeUnitOfWork):
    """One set of tables across every ``async with``, as one database; a block that
    raises leaves them as they were (rollback)."""

    REPOSITORIES = ("tables",)

    def __init__(self) -> None:
        super().__init__(publishing=publication)
        self.tables = InventoryTables()
        # Each lock_in_order call: the stock rows it locked, in order.
        self.locked: list[list[str]] = []
        # How often each claim was made: the number of statements the SQL would run follows.
        self.claims: Counter[str] = Counter()

    @property
    def stock(self) -> FakeStockRepository:
        return FakeStockRepository(self)

    @property
    def reservations(self) -> FakeReservationRepository:
        return FakeReservationRepository(self)

    def factory(self) -> FakeInventoryUnitOfWork:
        """Itself, as the RPCs' unit-of-work factory."""
        return self
