"""The product service's catalog cache: its rules (pure), and the read path over it
with a fake pool, including the read that races a write."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from services.product.domain import ProductStatus, new_product
from services.product.persistence import ProductReads
from services.product.persistence.catalog_cache import CatalogCache
from shared.money import Money


def product(price: int = 100) -> Any:
    return new_product(
        sku="SKU-1", title="t", description="", price=Money(price, "USD"),
        status=ProductStatus.ACTIVE,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def live_cache(capacity: int = 10, max_age: float = 60, clock: Clock | None = None) -> CatalogCache:
    cache = CatalogCache(capacity, max_age, clock or Clock())
    cache.go_live()
    return cache


def test_a_dark_cache_keeps_and_serves_nothing() -> None:
    cache = CatalogCache(10, 60)
    p = product()
    assert not cache.fill(p, cache.ticket())
    assert cache.get(p.product_id) is None
    cache.go_live()
    assert cache.fill(p, cache.ticket()) and cache.get(p.product_id) == p
    cache.go_dark()
    assert cache.get(p.product_id) is None and len(cache) == 0


def test_a_fill_after_an_invalidation_is_refused() -> None:
    cache = live_cache()
    p = product()
    ticket = cache.ticket()
    cache.invalidate(uuid.uuid4())  # any product: the epoch is the whole cache's
    assert not cache.fill(p, ticket)
    assert cache.get(p.product_id) is None


def test_an_invalidation_after_the_fill_removes_the_entry() -> None:
    cache = live_cache()
    p = product()
    assert cache.fill(p, cache.ticket())
    cache.invalidate(p.product_id)
    assert cache.get(p.product_id) is None


def test_going_live_again_forgets_what_was_kept_before() -> None:
    cache = live_cache()
    p = product()
    ticket = cache.ticket()
    cache.go_live()  # a reconnect: what was heard before it cannot be trusted
    assert not cache.fill(p, ticket)


def test_entries_expire_and_the_least_recently_used_goes_first() -> None:
    clock = Clock()
    cache = live_cache(capacity=2, max_age=5, clock=clock)
    a, b, c = product(1), product(2), product(3)
    for p in (a, b):
        cache.fill(p, cache.ticket())
    assert cache.get(a.product_id) == a  # a is now the most recent
    cache.fill(c, cache.ticket())
    assert cache.get(b.product_id) is None and cache.get(a.product_id) == a
    clock.now = 5.1
    assert cache.get(a.product_id) is None and cache.get(c.product_id) is None


class FakePool:
    """Answers SELECTs from ``rows``; ``gate`` (when set) holds a read after it took its
    snapshot, the way a slow statement would."""

    def __init__(self, rows: dict[uuid.UUID, Any]) -> None:
        self.rows = rows
        self.selects = 0
        self.gate: asyncio.Event | None = None

    async def fetch(self, _sql: str, ids: list[uuid.UUID]) -> list[Any]:
        snapshot = [self.rows[i] for i in ids if i in self.rows]
        self.selects += 1
        if self.gate is not None:
            await self.gate.wait()
        return [as_row(p) for p in snapshot]


def as_row(p: Any) -> dict[str, Any]:
    return {
        "product_id": p.product_id, "sku": p.sku, "title": p.title,
        "description": p.description, "price_minor": p.price.amount_minor,
        "currency": p.price.currency, "status": p.status.value,
        "created_at": p.created_at, "updated_at": p.updated_at,
    }  # fmt: skip


async def test_reads_are_served_from_the_cache_once_filled() -> None:
    p = product()
    pool = FakePool({p.product_id: p})
    reads = ProductReads(pool, live_cache())  # type: ignore[arg-type]
    assert await reads.get(p.product_id) == p
    assert await reads.get(p.product_id) == p
    assert pool.selects == 1
    missing = uuid.uuid4()
    assert {x.product_id for x in await reads.get_many([p.product_id, missing])} == {p.product_id}
    assert pool.selects == 2  # only the missing one was asked for (and is not cached)


async def test_a_read_that_raced_a_write_does_not_leave_the_old_row_cached() -> None:
    old = product(100)
    new = replace(old, price=Money(200, "USD"))
    pool = FakePool({old.product_id: old})
    cache = live_cache()
    reads = ProductReads(pool, cache)  # type: ignore[arg-type]
    pool.gate = asyncio.Event()
    slow_read = asyncio.create_task(reads.get(old.product_id))
    while pool.selects == 0:  # the read has its (old) snapshot
        await asyncio.sleep(0)
    pool.rows[old.product_id] = new  # the write commits ...
    cache.invalidate(old.product_id)  # ... and its notification arrives
    pool.gate.set()
    pool.gate = None
    assert await slow_read == old  # that read began before the write: it may say so
    assert await reads.get(old.product_id) == new  # but it did not stay in the cache


async def test_without_a_cache_every_read_goes_to_the_database() -> None:
    p = product()
    pool = FakePool({p.product_id: p})
    reads = ProductReads(pool, None)  # type: ignore[arg-type]
    for _ in range(3):
        assert await reads.get(p.product_id) == p
    assert pool.selects == 3
