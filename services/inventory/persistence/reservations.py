"""Reservations over asyncpg: claim and hold, settle, move on; the stock rows they change.

Every stock change is a conditional UPDATE computed against the row as it is
when its lock is taken, never a value read earlier and written back. The
statements themselves are in reservation_statements.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from asyncpg.pool import PoolConnectionProxy

from services.inventory.domain import (
    Line,
    Reservation,
    ReservationState,
    Step,
    first_fit,
    first_short,
)
from services.inventory.persistence.reservation_statements import (
    ADVANCE,
    CLAIM,
    CLAIM_AND_HOLD_ONE,
    CLAIM_MANY,
    HOLD_MANY,
    LOCK_OR_CREATE,
    SETTLE_SAME_SKU,
)
from services.inventory.use_cases import Claim, SingleLineOrder
from shared.money import Money


class PostgresReservationRepository:
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
                CLAIM_MANY,
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
            SETTLE_SAME_SKU,
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
                CLAIM_AND_HOLD_ONE,
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
            CLAIM,
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
                HOLD_MANY, [line.sku for line in lines], [line.quantity for line in lines]
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
            row = await self._conn.fetchrow(LOCK_OR_CREATE, order_id, state.value, user_id, reason)
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
            ADVANCE,
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
