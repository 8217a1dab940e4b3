"""The order repository, the saga clock and the unit of work, over asyncpg."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter, Histogram

from services.order.domain import Order, OrderItem, OrderStatus, OrderStep
from services.order.publishing import publication
from shared.errors import AlreadyExists
from shared.messaging.outbox import first_traceparents
from shared.messaging.spans import aggregate_spans
from shared.messaging.unit_of_work import PostgresUnitOfWork, UnitOfWorkFactory
from shared.money import Money

# The saga's metrics: order alone sees an order reach its end, when the transaction that
# settles it commits. Served with the kit's (shared/observability/metrics.py); the rules
# over them are in deploy/k8s/observability/rules.yml.
SAGA_ORDERS = Counter(
    "shop_saga_orders", "Orders that reached a terminal state, by state.", ["state"]
)
SAGA_SECONDS = Histogram(
    "shop_saga_duration_seconds",
    "Time from PlaceOrder to the order's terminal state.",
    ["state"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0),
)

_IDEMPOTENCY_CONSTRAINT = "orders_user_idempotency_key"
_COLUMNS = (
    "order_id, user_id, status, total_minor, currency, idempotency_key, status_reason,"
    " created_at, updated_at, priced_from_cache, step"
)
_ITEM_COLUMNS = "order_id, product_id, sku, quantity, unit_price_minor, currency"


def _order(row: asyncpg.Record, items: Sequence[OrderItem]) -> Order:
    return Order(
        order_id=row["order_id"],
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        items=tuple(items),
        total=Money(row["total_minor"], row["currency"]),
        idempotency_key=row["idempotency_key"],
        status_reason=row["status_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        priced_from_cache=row["priced_from_cache"],
        step=OrderStep(row["step"]),
    )


def _item(row: asyncpg.Record) -> OrderItem:
    return OrderItem(
        product_id=row["product_id"],
        sku=row["sku"],
        quantity=row["quantity"],
        unit_price=Money(row["unit_price_minor"], row["currency"]),
    )


class OrderRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn
        # Orders this transaction brought to an end, for the saga metrics once it commits.
        self.settled: list[Order] = []

    async def add(self, order: Order) -> Order:
        """Stores a new order; returns it, or the caller's order that already holds its key.

        Two concurrent PlaceOrder calls with one key both get past the lookup;
        the UNIQUE constraint lets one insert win and the other read its order.
        """
        try:
            # A savepoint: the losing insert must not abort the caller's transaction.
            async with self._conn.transaction():
                await self._conn.execute(
                    f"INSERT INTO orders ({_COLUMNS}, placed_clock)"
                    f" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11, ({SagaClock.NOW}))",
                    order.order_id,
                    order.user_id,
                    order.status.value,
                    order.total.amount_minor,
                    order.total.currency,
                    order.idempotency_key,
                    order.status_reason,
                    order.created_at,
                    order.updated_at,
                    order.priced_from_cache,
                    order.step.value,
                )
                await self._conn.executemany(
                    f"INSERT INTO order_items ({_ITEM_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)",
                    [
                        (
                            order.order_id,
                            i.product_id,
                            i.sku,
                            i.quantity,
                            i.unit_price.amount_minor,
                            i.unit_price.currency,
                        )
                        for i in order.items
                    ],
                )
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name != _IDEMPOTENCY_CONSTRAINT:
                raise AlreadyExists(f"order {order.order_id} already exists") from None
            # The winner has committed (the insert waited for it), so this read sees it.
            existing = await self.by_idempotency_key(order.user_id, order.idempotency_key)
            if existing is None:  # only if the winner's order was deleted since
                raise AlreadyExists("the idempotency_key is taken; retry the call") from None
            return existing
        return order

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1{lock}", order_id
        )
        return (await self._with_items([row]))[0] if row else None

    async def by_idempotency_key(self, user_id: uuid.UUID, key: str) -> Order | None:
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2",
            user_id,
            key,
        )
        return (await self._with_items([row]))[0] if row else None

    async def list_page(
        self,
        *,
        user_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Order]:
        """Keyset pagination, newest first: (created_at, order_id) descending."""
        if before is None:
            rows = await self._conn.fetch(
                f"SELECT {_COLUMNS} FROM orders WHERE user_id = $1"
                " ORDER BY created_at DESC, order_id DESC LIMIT $2",
                user_id,
                limit,
            )
        else:
            rows = await self._conn.fetch(
                f"SELECT {_COLUMNS} FROM orders WHERE user_id = $1"
                " AND (created_at, order_id) < ($2, $3)"
                " ORDER BY created_at DESC, order_id DESC LIMIT $4",
                user_id,
                *before,
                limit,
            )
        return await self._with_items(rows)

    async def lock_overdue(
        self, *, timeout_seconds: float, ceiling_seconds: float, limit: int
    ) -> list[Order]:
        """Pending orders whose time is up, locked until the transaction ends.

        Up means the saga clock moved more than ``timeout_seconds`` since the order was
        placed, or, whatever the clock did, the order is older than ``ceiling_seconds``
        of wall time (the database's). SKIP LOCKED: rows another instance is cancelling
        (or a handler is settling) are left to it, so instances share the work and
        never both cancel one order.
        """
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE status = $1"
            " AND (placed_clock < (SELECT seconds FROM saga_clock) - $2"
            "      OR created_at < now() - make_interval(secs => $3))"
            " ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED",
            OrderStatus.PENDING.value,
            timeout_seconds,
            ceiling_seconds,
            limit,
        )
        return await self._with_items(rows)

    async def save(self, order: Order) -> None:
        """Writes a change of status or saga step; items and total never change after
        placing."""
        await self._conn.execute(
            "UPDATE orders SET status = $2, status_reason = $3, step = $4, updated_at = $5"
            " WHERE order_id = $1",
            order.order_id,
            order.status.value,
            order.status_reason,
            order.step.value,
            order.updated_at,
        )
        if order.status is not OrderStatus.PENDING:
            self.settled.append(order)

    async def _with_items(self, rows: Sequence[asyncpg.Record]) -> list[Order]:
        items: dict[uuid.UUID, list[OrderItem]] = {row["order_id"]: [] for row in rows}
        if items:
            # C collation sorts like Python does, so a stored order lists its items
            # exactly as the freshly placed one did.
            item_rows = await self._conn.fetch(
                f"SELECT {_ITEM_COLUMNS} FROM order_items WHERE order_id = ANY($1::uuid[])"
                ' ORDER BY sku COLLATE "C", product_id',
                list(items),
            )
            for item_row in item_rows:
                items[item_row["order_id"]].append(_item(item_row))
        return [_order(row, items[row["order_id"]]) for row in rows]


class SagaClock:
    """The one-row saga clock (migration 0004): seconds in which the saga could move."""

    # An order's placed_clock: the last value plus what the next advance will add for the
    # time since (capped as it will be), so the timeout never counts, for one order, more
    # than the wall time it has waited, and the clock's steps cost it nothing.
    NOW = (
        "SELECT seconds + GREATEST(0, LEAST("
        "extract(epoch FROM now() - advanced_at)::float8, cap_seconds)) FROM saga_clock"
    )

    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def advance(
        self, *, cap_seconds: float, min_gap_seconds: float, outbox_stale_seconds: float
    ) -> float | None:
        """Adds the wall time since the last advance, at most ``cap_seconds``; returns
        the new value, or None if nothing was added.

        Nothing is added when the clock advanced less than ``min_gap_seconds`` ago
        (another instance just did), when another instance holds the row (SKIP LOCKED:
        one paused mid-advance must not stall the others), or when the outbox holds an
        event older than ``outbox_stale_seconds`` (no relay is getting events out, so
        the saga cannot move). Every advance adds exactly the time since the previous
        one, all on the database's clock, so however many instances take turns the
        clock runs at the rate of one; only a gap longer than the cap (no instance
        could advance it: the database or every link down) is cut short.
        """
        value = await self._conn.fetchval(
            "WITH due AS ("
            "  SELECT only_row FROM saga_clock"
            "  WHERE advanced_at < now() - make_interval(secs => $2)"
            "  AND NOT EXISTS ("
            "    SELECT 1 FROM (SELECT created_at FROM outbox WHERE sent_at IS NULL"
            "                   ORDER BY id LIMIT 1) AS oldest"
            "    WHERE oldest.created_at < now() - make_interval(secs => $3))"
            "  FOR UPDATE SKIP LOCKED)"
            " UPDATE saga_clock AS c SET"
            "  seconds = c.seconds + GREATEST(0, LEAST("
            "    extract(epoch FROM now() - c.advanced_at)::float8, $1::float8)),"
            "  advanced_at = now(), cap_seconds = $1"
            " FROM due WHERE c.only_row = due.only_row RETURNING c.seconds",
            cap_seconds,
            min_gap_seconds,
            outbox_stale_seconds,
        )
        return None if value is None else float(value)


class PostgresOrderUnitOfWork(PostgresUnitOfWork):
    orders: OrderRepository
    clock: SagaClock

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.orders = OrderRepository(connection)
        self.clock = SagaClock(connection)

    @contextlib.asynccontextmanager
    async def continuing_traces(
        self, name: str, order_ids: Sequence[uuid.UUID]
    ) -> AsyncIterator[None]:
        keys = [str(order_id) for order_id in order_ids]
        traces = await first_traceparents(self.connection, keys) if keys else {}
        with aggregate_spans(name, {key: traces.get(key) for key in keys}):
            yield

    def committed(self) -> None:
        for order in self.orders.settled:  # orders this committed transaction ended
            SAGA_ORDERS.labels(order.status.value).inc()
            SAGA_SECONDS.labels(order.status.value).observe(
                (order.updated_at - order.created_at).total_seconds()
            )


def unit_of_work_factory(pool: asyncpg.Pool) -> UnitOfWorkFactory[PostgresOrderUnitOfWork]:
    def open_unit_of_work(*, read_only: bool = False) -> PostgresOrderUnitOfWork:
        return PostgresOrderUnitOfWork(pool, read_only=read_only, publishing=publication)

    return open_unit_of_work
