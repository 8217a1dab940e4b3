"""The stock and reservation repositories and the unit of work over asyncpg.

Every stock change is a conditional UPDATE computed against the row as it is
when its lock is taken, never a value read earlier and written back.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.inventory.domain import (
    Line,
    Reservation,
    ReservationState,
    Step,
    Stock,
    first_fit,
    first_short,
)
from shared.messaging.unit_of_work import PostgresUnitOfWork
from shared.money import Money

_COLUMNS = "sku, available, reserved, sold, total_received, updated_at"


def _stock(row: asyncpg.Record) -> Stock:
    return Stock(
        sku=row["sku"],
        available=row["available"],
        reserved=row["reserved"],
        sold=row["sold"],
        total_received=row["total_received"],
        updated_at=row["updated_at"],
    )


class StockRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def set_available(self, sku: str, available: int) -> Stock:
        """Sets available units, booking the difference as received (or written off).

        One statement, so the delta is computed against the row as it is when
        the lock is taken: concurrent setters and reservations cannot slip in
        between a read and a write and unbalance the ledger.
        """
        row = await self._conn.fetchrow(
            f"INSERT INTO stock AS s ({_COLUMNS})"
            " VALUES ($1, $2, 0, 0, $2, now())"
            " ON CONFLICT (sku) DO UPDATE SET"
            "   total_received = s.total_received + (EXCLUDED.available - s.available),"
            "   available = EXCLUDED.available,"
            "   updated_at = EXCLUDED.updated_at"
            f" RETURNING {_COLUMNS}",
            sku,
            available,
        )
        assert row is not None  # an upsert with RETURNING always yields its row
        return _stock(row)

    async def get(self, sku: str) -> Stock | None:
        row = await self._conn.fetchrow(f"SELECT {_COLUMNS} FROM stock WHERE sku = $1", sku)
        return _stock(row) if row else None

    async def lock_in_order(self, skus: Collection[str], order_ids: Collection[uuid.UUID]) -> None:
        """Locks the stock rows of ``skus`` and of these orders' reservations, in SKU order:
        the one order every batch takes them in."""
        await self._conn.execute(
            "SELECT 1 FROM stock WHERE sku IN ("
            "   SELECT unnest($1::text[])"
            "   UNION SELECT sku FROM reservation_lines WHERE order_id = ANY($2::uuid[]))"
            " ORDER BY sku FOR UPDATE OF stock",
            sorted(skus),
            sorted(order_ids),
        )

    async def get_many(self, skus: list[str]) -> list[Stock]:
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku", skus
        )
        return [_stock(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Claim:
    # False: the order already had a reservation (or a tombstone); nothing was done.
    claimed: bool
    # The first SKU that could not be held, and then nothing is held; None: every line is.
    short: str | None = None


@dataclass(frozen=True, slots=True)
class SingleLineOrder:
    """An order of one SKU, as the merged (hot-SKU) reservation path takes it."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    total: Money
    quantity: int


class ReservationRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def claim_and_hold_same_sku(
        self,
        sku: str,
        orders: Sequence[SingleLineOrder],
        claimed_as: ReservationState,
        if_short: ReservationState,
        reason: str,
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Many single-line orders of one SKU in four statements: returns (claimed, held).

        The same outcome as claim_and_hold for each order in turn (first fit, in
        order), but the hot stock row is locked and updated once for all of them:
        this is what lets one SKU take more reservations per second than a
        one-UPDATE-per-transaction loop can.
        """
        claimed = {
            row["order_id"]
            for row in await self._conn.fetch(
                _CLAIM_MANY,
                [o.order_id for o in orders],
                claimed_as.value,
                [o.user_id for o in orders],
                [o.total.amount_minor for o in orders],
                [o.total.currency for o in orders],
            )
        }
        in_order = [o for o in orders if o.order_id in claimed]
        if not in_order:
            return set(), set()
        # The row lock is taken here and held to commit, so the units counted now are
        # the units the UPDATE below finds; its condition is the second guard, and the
        # CHECK (available >= 0) the third. (One statement doing both the locking read
        # and the write is not safe: under concurrent releases PostgreSQL re-evaluates
        # the UPDATE on a newer row than the one the read saw.)
        available = await self._conn.fetchval(
            "SELECT available FROM stock WHERE sku = $1 FOR UPDATE", sku
        )
        fits = first_fit(available or 0, [o.quantity for o in in_order])
        held = {o.order_id for o, fit in zip(in_order, fits, strict=True) if fit}
        units = sum(o.quantity for o, fit in zip(in_order, fits, strict=True) if fit)
        if units:
            moved = await self._conn.execute(
                "UPDATE stock SET available = available - $2, reserved = reserved + $2,"
                " updated_at = now() WHERE sku = $1 AND available >= $2",
                sku,
                units,
            )
            if moved != "UPDATE 1":
                raise RuntimeError(f"stock of {sku} changed under its row lock")
        await self._conn.execute(
            _SETTLE_SAME_SKU,
            sku,
            [o.order_id for o in in_order],
            [o.quantity for o in in_order],
            [o.order_id for o in in_order if o.order_id not in held],
            claimed_as.value,
            if_short.value,
            reason,
        )
        return claimed, held

    async def claim_and_hold(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        total: Money,
        lines: Sequence[Line],
        state: ReservationState,
    ) -> Claim:
        """Creates the order's reservation in ``state`` with its lines, then moves every
        line from available to reserved, or none of them.

        The claim comes first and is never undone: it is what makes a concurrent
        handler for the same order wait, and what a tombstone refuses (then nothing
        is held). ``lines`` must be sorted by SKU (domain.requested_lines): stock rows
        are locked in that order. An unknown SKU has no row, so it is short.
        """
        skus = [line.sku for line in lines]
        quantities = [line.quantity for line in lines]
        if len(lines) == 1:
            # One statement: the hot path (one SKU, many orders) pays one round trip,
            # and one conditional UPDATE of one row is all-or-nothing by itself.
            row = await self._conn.fetchrow(
                _CLAIM_AND_HOLD_ONE,
                order_id,
                state.value,
                user_id,
                total.amount_minor,
                total.currency,
                skus[0],
                quantities[0],
            )
            assert row is not None  # a SELECT of scalar subqueries always has its row
            if not row["claimed"]:
                return Claim(claimed=False)
            return Claim(claimed=True, short=None if row["held"] else skus[0])
        claimed = await self._conn.fetchval(
            _CLAIM,
            order_id,
            state.value,
            user_id,
            total.amount_minor,
            total.currency,
            skus,
            quantities,
        )
        if not claimed:
            return Claim(claimed=False)
        return Claim(claimed=True, short=await self._hold_all(lines))

    async def _hold_all(self, lines: Sequence[Line]) -> str | None:
        """Holds every line or none; returns the first short SKU, None when all were held."""
        # A SAVEPOINT: a short line must undo the lines held before it, without
        # touching the claim or the rest of the consumer's batch around it.
        savepoint = self._conn.transaction()
        await savepoint.start()
        try:
            rows = await self._conn.fetch(
                _HOLD_MANY, [line.sku for line in lines], [line.quantity for line in lines]
            )
        except BaseException:
            await savepoint.rollback()
            raise
        short = first_short(lines, {row["sku"] for row in rows})
        if short is None:
            await savepoint.commit()
        else:
            await savepoint.rollback()
        return short

    async def reject(
        self,
        order_id: uuid.UUID,
        claimed_as: ReservationState,
        to: ReservationState,
        reason: str,
    ) -> None:
        """Settles a claim whose stock could not be held, in the claim's own transaction.

        So no other transaction ever sees the claim in its first state.
        """
        status = await self._conn.execute(
            "UPDATE reservations SET state = $3, reason = $4, updated_at = now()"
            " WHERE order_id = $1 AND state = $2",
            order_id,
            claimed_as.value,
            to.value,
            reason,
        )
        if status != "UPDATE 1":
            raise RuntimeError(f"reservation {order_id} was not {claimed_as} after its claim")

    async def lock_or_create(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        state: ReservationState,
        reason: str,
    ) -> tuple[ReservationState | None, bool]:
        """Locks the order's reservation and returns (its state, False); if there is
        none, creates one without lines in ``state`` and returns (None, True)."""
        while True:
            row = await self._conn.fetchrow(_LOCK_OR_CREATE, order_id, state.value, user_id, reason)
            assert row is not None  # a SELECT of two scalar subqueries always has its row
            if row["existing"] is not None:
                return ReservationState(row["existing"]), False
            if row["created"]:
                return None, True
            # A concurrent transaction created it between our look and our insert, and
            # has committed by now (our insert waited for it): look again.

    async def advance(
        self, order_id: uuid.UUID, current: ReservationState, step: Step, reason: str
    ) -> bool:
        """Moves the reservation from ``current`` to ``step.to`` and its lines' stock by
        ``step.move``, as one statement; False (and nothing changed) if it was not in
        ``current``. The compare-and-set on the state is what decides, under the row's lock.
        """
        move = step.move
        row = await self._conn.fetchrow(
            _ADVANCE,
            order_id,
            current.value,
            step.to.value,
            reason,
            move.available,
            move.reserved,
            move.sold,
        )
        assert row is not None  # a SELECT of scalar subqueries always has its row
        if not row["moved"]:
            return False
        if row["changed"] != row["lines"]:
            # Stock rows are never deleted, so every line must have found its row.
            raise RuntimeError(
                f"reservation {order_id}: moved {row['changed']} of {row['lines']} stock rows"
            )
        return True

    async def get(self, order_id: uuid.UUID) -> Reservation | None:
        row = await self._conn.fetchrow(
            "SELECT order_id, state, user_id, total_minor, currency, reason, created_at,"
            " updated_at FROM reservations WHERE order_id = $1",
            order_id,
        )
        if row is None:
            return None
        lines = await self._conn.fetch(
            "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
            order_id,
        )
        total = Money(row["total_minor"], row["currency"]) if row["currency"] else None
        return Reservation(
            order_id=row["order_id"],
            state=ReservationState(row["state"]),
            user_id=row["user_id"],
            total=total,
            reason=row["reason"],
            lines=tuple(Line(r["sku"], r["quantity"]) for r in lines),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


_CLAIM_AND_HOLD_ONE = """
WITH claimed AS (
    INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), line AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT order_id, $6::text, $7::int FROM claimed
), held AS (
    UPDATE stock
    SET available = available - $7::int, reserved = reserved + $7::int, updated_at = now()
    WHERE sku = $6::text AND available >= $7::int AND EXISTS (SELECT FROM claimed)
    RETURNING sku
)
SELECT EXISTS (SELECT FROM claimed) AS claimed, EXISTS (SELECT FROM held) AS held
"""
_CLAIM_MANY = """
INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
SELECT o, $2, u, t, c
FROM unnest($1::uuid[], $3::uuid[], $4::bigint[], $5::text[]) AS x (o, u, t, c)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""
# The lines of every claimed order, and the claims that got nothing settled as rejected.
_SETTLE_SAME_SKU = """
WITH lines AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT order_id, $1::text, qty FROM unnest($2::uuid[], $3::int[]) AS r (order_id, qty)
)
UPDATE reservations SET state = $6, reason = $7, updated_at = now()
WHERE order_id = ANY($4::uuid[]) AND state = $5
"""
_CLAIM = """
WITH claimed AS (
    INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), lines AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT claimed.order_id, line.sku, line.quantity
    FROM claimed, unnest($6::text[], $7::int[]) AS line (sku, quantity)
)
SELECT count(*) FROM claimed
"""
# The rows are locked in SKU order first (the CTE), then each is held only if it
# still has enough available; RETURNING says which ones were.
_HOLD_MANY = """
WITH line AS (
    SELECT * FROM unnest($1::text[], $2::int[]) AS line (sku, quantity)
), locked AS (
    SELECT stock.sku, line.quantity
    FROM stock JOIN line USING (sku)
    ORDER BY stock.sku
    FOR UPDATE OF stock
)
UPDATE stock
SET available = stock.available - locked.quantity,
    reserved = stock.reserved + locked.quantity,
    updated_at = now()
FROM locked
WHERE stock.sku = locked.sku AND stock.available >= locked.quantity
RETURNING stock.sku
"""
# FOR UPDATE, not a plain read: the decision taken on this state holds until commit.
_LOCK_OR_CREATE = """
WITH existing AS (
    SELECT state FROM reservations WHERE order_id = $1::uuid FOR UPDATE
), created AS (
    INSERT INTO reservations (order_id, state, user_id, reason)
    SELECT $1::uuid, $2::text, $3::uuid, $4::text
    WHERE NOT EXISTS (SELECT FROM existing)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
SELECT (SELECT state FROM existing) AS existing, EXISTS (SELECT FROM created) AS created
"""
# The reservation row first, then its stock rows in SKU order: the order in which
# every handler takes its locks, so two events cannot deadlock each other.
_ADVANCE = """
WITH moved AS (
    UPDATE reservations SET state = $3, reason = $4, updated_at = now()
    WHERE order_id = $1 AND state = $2
    RETURNING order_id
), locked AS (
    SELECT stock.sku, line.quantity
    FROM moved
    JOIN reservation_lines AS line USING (order_id)
    JOIN stock USING (sku)
    ORDER BY stock.sku
    FOR UPDATE OF stock
), changed AS (
    UPDATE stock
    SET available = stock.available + $5::int * locked.quantity,
        reserved = stock.reserved + $6::int * locked.quantity,
        sold = stock.sold + $7::int * locked.quantity,
        updated_at = now()
    FROM locked
    WHERE stock.sku = locked.sku
    RETURNING stock.sku
)
SELECT EXISTS (SELECT FROM moved) AS moved,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM reservation_lines WHERE order_id = $1) AS lines
"""


class InventoryUnitOfWork(PostgresUnitOfWork):
    stock: StockRepository
    reservations: ReservationRepository

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.stock = StockRepository(connection)
        self.reservations = ReservationRepository(connection)
