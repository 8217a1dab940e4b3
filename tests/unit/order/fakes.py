"""In-memory stand-ins for the order's ports (services/order/use_cases.py), faithful to
what the SQL in services/order/persistence.py does where a use case can tell:

- ``add`` answers a reused (user, idempotency key) with the order that holds it, as
  the UNIQUE constraint and the savepoint do;
- ``list_page`` is the same keyset: newest first by (created_at, order_id);
- ``lock_overdue`` picks pending orders by the saga clock or the wall-clock ceiling,
  oldest first, skipping rows another transaction holds (SKIP LOCKED);
- ``save`` writes only the status, its reason, the saga step and updated_at;
- changes and recorded events survive only a block that ends without an exception,
  and a committed change of status or step wakes the order's watchers (the NOTIFY
  trigger).

A single task cannot wait on a row lock, so the fake refuses instead of waiting: a
row marked as held elsewhere raises ``RowLockWouldWait`` when locked. It is also
stricter than PostgreSQL in one place: a read-only unit of work refuses writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from services.order import use_cases
from services.order.domain import CatalogEntry, Order, OrderStatus
from services.order.publishing import publication
from services.order.use_cases import CatalogLookup, Credentials
from shared.auth.identity import Identity, Role
from shared.errors import AlreadyExists
from shared.money import Money
from tests.support.fake_unit_of_work import FakeUnitOfWork


class RowLockWouldWait(AssertionError):
    """The use case locked a row another transaction holds: PostgreSQL would wait here."""


class FakeClock:
    """The database's two clocks: wall time (``now()``) and the saga clock's seconds."""

    def __init__(self) -> None:
        self.wall = datetime.now(UTC)
        self.saga_seconds = 0.0

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float, *, saga_moves: bool = True) -> None:
        """``seconds`` of wall time pass; the saga clock counts them unless it is paused."""
        self.wall += timedelta(seconds=seconds)
        if saga_moves:
            self.saga_seconds += seconds


class FakeOrderRepository:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.rows: dict[uuid.UUID, Order] = {}
        # The saga clock's value when each order was placed (the placed_clock column).
        self.placed_clock: dict[uuid.UUID, float] = {}
        # Rows another transaction has locked (an event handler, another instance).
        self.held_elsewhere: set[uuid.UUID] = set()
        # Orders whose status or step this transaction changed: watchers wake on commit.
        self.status_changed: list[uuid.UUID] = []
        self.writable = True

    def __deepcopy__(self, memo: dict[int, object]) -> FakeOrderRepository:
        # The snapshot a rollback restores: the rows, on the same clock (orders are frozen).
        copy = FakeOrderRepository(self._clock)
        copy.rows = dict(self.rows)
        copy.placed_clock = dict(self.placed_clock)
        copy.held_elsewhere = set(self.held_elsewhere)
        return copy

    async def add(self, order: Order) -> Order:
        self._check_writable()
        existing = await self.by_idempotency_key(order.user_id, order.idempotency_key)
        if existing is not None:
            return existing
        if order.order_id in self.rows:
            raise AlreadyExists(f"order {order.order_id} already exists")
        self.rows[order.order_id] = order
        self.placed_clock[order.order_id] = self._clock.saga_seconds
        return order

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        if for_update and order_id in self.held_elsewhere:
            raise RowLockWouldWait(f"order {order_id} is locked by another transaction")
        return self.rows.get(order_id)

    async def by_idempotency_key(self, user_id: uuid.UUID, key: str) -> Order | None:
        return next(
            (o for o in self.rows.values() if o.user_id == user_id and o.idempotency_key == key),
            None,
        )

    async def list_page(
        self, *, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
    ) -> list[Order]:
        mine = [
            o
            for o in self.rows.values()
            if o.user_id == user_id and (before is None or (o.created_at, o.order_id) < before)
        ]
        mine.sort(key=lambda o: (o.created_at, o.order_id), reverse=True)
        return mine[:limit]

    async def lock_overdue(
        self, *, timeout_seconds: float, ceiling_seconds: float, limit: int
    ) -> list[Order]:
        clock_due = self._clock.saga_seconds - timeout_seconds
        wall_due = self._clock.now() - timedelta(seconds=ceiling_seconds)
        overdue = [
            o
            for o in self.rows.values()
            if o.status is OrderStatus.PENDING
            and (self.placed_clock[o.order_id] < clock_due or o.created_at < wall_due)
            and o.order_id not in self.held_elsewhere  # SKIP LOCKED
        ]
        overdue.sort(key=lambda o: o.created_at)
        return overdue[:limit]

    async def save(self, order: Order) -> None:
        self._check_writable()
        stored = self.rows.get(order.order_id)
        if stored is None:  # an UPDATE that matches no row changes nothing
            return
        self.rows[order.order_id] = replace(
            stored,
            status=order.status,
            status_reason=order.status_reason,
            step=order.step,
            updated_at=order.updated_at,
        )
        if (order.status, order.step) != (stored.status, stored.step):
            self.status_changed.append(order.order_id)

    def _check_writable(self) -> None:
        if not self.writable:
            raise RuntimeError("a read-only unit of work writes nothing")


class FakeWatch:
    def __init__(self, order_id: uuid.UUID) -> None:
        self.order_id = order_id
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()


class FakeStatusHub:
    """The watch hub without a LISTEN connection: woken by the fake unit of work's commits."""

    def __init__(self) -> None:
        self.watches: dict[uuid.UUID, list[FakeWatch]] = {}

    @property
    def watcher_count(self) -> int:
        return sum(len(watches) for watches in self.watches.values())

    @contextlib.contextmanager
    def watch(self, order_id: uuid.UUID) -> Iterator[FakeWatch]:
        watch = FakeWatch(order_id)
        self.watches.setdefault(order_id, []).append(watch)
        try:
            yield watch
        finally:
            self.watches[order_id].remove(watch)
            if not self.watches[order_id]:
                del self.watches[order_id]

    def wake(self, order_id: uuid.UUID) -> None:
        for watch in self.watches.get(order_id, ()):
            watch.wake()


class FakeOrderUnitOfWork(FakeUnitOfWork):
    """The order database in memory, and its own factory: ``uow(read_only=...)`` opens
    it (one block at a time, as each use case step does)."""

    REPOSITORIES = ("orders",)

    def __init__(self, clock: FakeClock | None = None, hub: FakeStatusHub | None = None) -> None:
        super().__init__(publishing=publication)
        self.clock = clock or FakeClock()
        self.hub = hub
        self.orders = FakeOrderRepository(self.clock)
        self.read_only = False
        self.read_only_opens = 0
        self.traces: list[tuple[str, list[uuid.UUID]]] = []  # continuing_traces' calls
        self._open = False

    def __call__(self, *, read_only: bool = False) -> Self:
        if self._open:
            raise RuntimeError("the fake unit of work is already open")
        self.read_only = read_only
        return self

    def record(self, *events: object) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work stages no events")
        super().record(*events)

    @contextlib.asynccontextmanager
    async def continuing_traces(
        self, name: str, order_ids: Sequence[uuid.UUID]
    ) -> AsyncIterator[None]:
        self.traces.append((name, list(order_ids)))
        yield

    async def __aenter__(self) -> Self:
        if self._open:
            raise RuntimeError("the fake unit of work is already open")
        self._open = True
        self.read_only_opens += self.read_only
        await super().__aenter__()
        self.orders.writable = not self.read_only
        self.orders.status_changed = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        changed = self.orders.status_changed
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            self._open = False
            self.read_only = False
            self.orders.writable = True
            self.orders.status_changed = []
        if exc_type is None and self.hub is not None:
            for order_id in changed:
                self.hub.wake(order_id)


@dataclass
class FakeCatalog:
    """The product catalog: ``entries`` by product id; ``failure`` raised instead, if set;
    ``during_lookup`` runs while the catalog "is asked" (another call can commit then)."""

    entries: dict[uuid.UUID, CatalogEntry]
    from_cache: bool = False
    failure: Exception | None = None
    during_lookup: Callable[[], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        self.lookups: list[tuple[list[uuid.UUID], Credentials]] = []

    async def lookup_with_fallback(
        self, product_ids: Sequence[uuid.UUID], credentials: Credentials
    ) -> CatalogLookup:
        self.lookups.append((list(product_ids), credentials))
        if self.during_lookup is not None:
            await self.during_lookup()
        if self.failure is not None:
            raise self.failure
        found = {i: e for i, e in self.entries.items() if i in product_ids}
        return CatalogLookup(found, from_cache=self.from_cache)


CUSTOMER = Identity(uuid.UUID(int=1), Role.CUSTOMER)
ADMIN = Identity(uuid.UUID(int=2), Role.ADMIN)
CREDENTIALS: Credentials = (("authorization", "Bearer customer"),)


@dataclass
class World:
    """A catalog of three USD products and one EUR product, and an empty order database."""

    uow: FakeOrderUnitOfWork
    catalog: FakeCatalog
    hub: FakeStatusHub
    usd: list[CatalogEntry]
    eur: CatalogEntry

    @classmethod
    def new(cls) -> World:
        hub = FakeStatusHub()
        usd = [catalog_entry(price) for price in (250, 1999, 5)]
        eur = catalog_entry(100, "EUR")
        catalog = FakeCatalog({e.product_id: e for e in [*usd, eur]})
        return cls(FakeOrderUnitOfWork(hub=hub), catalog, hub, usd, eur)

    async def place(
        self,
        items: Sequence[tuple[CatalogEntry, int]] | None = None,
        *,
        key: str | None = None,
        user: Identity = CUSTOMER,
    ) -> Order:
        if items is None:
            items = [(self.usd[0], 1)]
        return await use_cases.place(
            self.uow,
            self.catalog,
            user_id=user.user_id,
            idempotency_key=key or f"key-{uuid.uuid4().hex}",
            items=[(str(e.product_id), q) for e, q in items],
            credentials=CREDENTIALS,
        )

    def stored(self, order_id: uuid.UUID) -> Order:
        return self.uow.orders.rows[order_id]


def catalog_entry(price: int, currency: str = "USD", *, sellable: bool = True) -> CatalogEntry:
    product_id = uuid.uuid4()
    return CatalogEntry(
        product_id, f"S-{product_id.hex[:8].upper()}", Money(price, currency), sellable
    )
