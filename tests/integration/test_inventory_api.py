"""InventoryService over gRPC against the real PostgreSQL and etcd: the stock ledger's SQL
under concurrency, access, and bad input refused on the wire without a write.

The RPCs' rules (the ledger booking, lookups, validation) are unit tests of the use
cases on a fake unit of work (tests/unit/inventory/test_stock.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.inventory.domain import MAX_AVAILABLE, MAX_BATCH
from services.inventory.main import SERVICE
from shared.auth.identity import Role
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceStub
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

if TYPE_CHECKING:
    # What InventoryServiceStub(aio channel) is; exists only for the type checker.
    from shop.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub

pytestmark = pytest.mark.integration

# Every table the service owns: the saga's tables and the outbox must not move either.
TABLES = ("stock", "reservations", "reservation_lines", "outbox")
# A row that exists before every bad-input call, so NOT_FOUND and writes are both observable.
SEEDED_SKU = "SEEDED-1"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "inventory")
    # Without the consumer: saga events other tests publish on the shared topics would
    # otherwise write reservations here while the row counts are being compared.
    async with run_service(SERVICE, stack, keys, consume_events=False) as running:
        stub = InventoryServiceStub(running.channel)
        await stub.SetStock(
            pb.SetStockRequest(sku=SEEDED_SKU, available=7), metadata=bearer(keys.token(Role.ADMIN))
        )
        yield running


@pytest.fixture
def stub(service: RunningService) -> InventoryServiceAsyncStub:
    return InventoryServiceStub(service.channel)


@pytest.fixture
def admin(keys: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(keys.token(Role.ADMIN))


async def stock_row(service: RunningService, sku: str) -> asyncpg.Record:
    """The row as PostgreSQL has it, with the ledger identity asserted from SQL."""
    conn = await asyncpg.connect(service.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT *, available + reserved + sold = total_received AS balanced"
            " FROM stock WHERE sku = $1",
            sku,
        )
    finally:
        await conn.close()
    assert row is not None, f"no stock row for {sku}"
    assert row["balanced"], dict(row)
    return row


async def execute(service: RunningService, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(service.dsn)
    try:
        return await conn.execute(sql, *args)
    finally:
        await conn.close()


# --- the RPCs over the wire -----------------------------------------------------------------------


async def test_increase_and_decrease_book_the_difference(stub, admin, service) -> None:
    await stub.SetStock(pb.SetStockRequest(sku="LEDGER-1", available=10), metadata=admin)
    # Stand-in for the saga: 3 units reserved and 2 sold out of the 10 received.
    await execute(
        service, "UPDATE stock SET available = 5, reserved = 3, sold = 2 WHERE sku = 'LEDGER-1'"
    )

    up = (
        await stub.SetStock(pb.SetStockRequest(sku="LEDGER-1", available=20), metadata=admin)
    ).stock
    assert (up.available, up.reserved, up.sold, up.total_received) == (20, 3, 2, 25)
    row = await stock_row(service, "LEDGER-1")
    assert (row["available"], row["reserved"], row["sold"], row["total_received"]) == (20, 3, 2, 25)

    down = (
        await stub.SetStock(pb.SetStockRequest(sku="LEDGER-1", available=4), metadata=admin)
    ).stock
    assert (down.available, down.reserved, down.sold, down.total_received) == (4, 3, 2, 9)

    zero = (
        await stub.SetStock(pb.SetStockRequest(sku="LEDGER-1", available=0), metadata=admin)
    ).stock
    assert (zero.available, zero.reserved, zero.sold, zero.total_received) == (0, 3, 2, 5)
    row = await stock_row(service, "LEDGER-1")
    assert (row["available"], row["reserved"], row["sold"], row["total_received"]) == (0, 3, 2, 5)


async def test_get_stock_for_any_valid_token(stub, keys) -> None:
    for role in (Role.CUSTOMER, Role.ADMIN):
        stock = (
            await stub.GetStock(
                pb.GetStockRequest(sku=SEEDED_SKU), metadata=bearer(keys.token(role))
            )
        ).stock
        assert (stock.sku, stock.available, stock.total_received) == (SEEDED_SKU, 7, 7)


async def test_batch_get_stock_takes_a_full_batch(stub, keys) -> None:
    skus = [SEEDED_SKU, *(f"ABSENT-{i}" for i in range(MAX_BATCH - 1))]
    response = await stub.BatchGetStock(
        pb.BatchGetStockRequest(skus=skus), metadata=bearer(keys.token())
    )
    assert [s.sku for s in response.stocks] == [SEEDED_SKU]
    assert len(response.missing_skus) == MAX_BATCH - 1


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_first_use_of_a_sku_makes_one_balanced_row(stub, admin, service) -> None:
    responses = await asyncio.gather(
        *(
            stub.SetStock(pb.SetStockRequest(sku="RACE-NEW", available=42), metadata=admin)
            for _ in range(50)
        )
    )
    assert all(r.stock.available == r.stock.total_received == 42 for r in responses)
    row = await stock_row(service, "RACE-NEW")
    assert (row["available"], row["reserved"], row["sold"], row["total_received"]) == (42, 0, 0, 42)


async def test_concurrent_set_stock_with_concurrent_reservations(stub, admin, service) -> None:
    """SetStock's delta must be taken from the row it locks, not from an earlier read.

    Reservations (the saga's job later; raw SQL here) move units from available
    to reserved while admins set stock. A read-then-write SetStock would lose
    them from total_received and trip the ledger CHECK.
    """
    sku = "RACE-MIX"
    await stub.SetStock(pb.SetStockRequest(sku=sku, available=100), metadata=admin)
    pool = await asyncpg.create_pool(service.dsn, min_size=5, max_size=10)
    assert pool is not None
    try:

        async def reserve_one() -> bool:
            status = await pool.execute(
                "UPDATE stock SET available = available - 1, reserved = reserved + 1,"
                " updated_at = now() WHERE sku = $1 AND available >= 1",
                sku,
            )
            return status == "UPDATE 1"

        values = list(range(51, 101))
        calls: list[Awaitable[Any]] = []
        for value in values:
            calls.append(
                stub.SetStock(pb.SetStockRequest(sku=sku, available=value), metadata=admin)
            )
            calls.append(reserve_one())
        results = await asyncio.gather(*calls)
    finally:
        await pool.close()

    reserved = sum(1 for r in results if r is True)
    set_responses = [r for r in results if isinstance(r, pb.SetStockResponse)]
    assert len(set_responses) == 50
    for r in set_responses:
        s = r.stock
        assert s.available + s.reserved + s.sold == s.total_received
    row = await stock_row(service, sku)
    assert row["reserved"] == reserved == 50
    assert row["sold"] == 0
    assert row["total_received"] == row["available"] + 50


async def test_concurrent_set_stock_on_many_skus(stub, admin, service) -> None:
    before = await service.count("stock")
    await asyncio.gather(
        *(
            stub.SetStock(pb.SetStockRequest(sku=f"MANY-{i}", available=i), metadata=admin)
            for i in range(50)
        )
    )
    assert await service.count("stock") == before + 50
    for i in (0, 17, 49):
        row = await stock_row(service, f"MANY-{i}")
        assert row["available"] == row["total_received"] == i


# --- bad input ----------------------------------------------------------------------------------

Call = Callable[["InventoryServiceAsyncStub", TestKeys], Awaitable[Any]]
Code = grpc.StatusCode
_NO_TOKEN: tuple[tuple[str, str], ...] = ()


def _admin(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.token(Role.ADMIN))


def _customer(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.token(Role.CUSTOMER))


def _set(sku: str, available: int, auth: Callable[[TestKeys], Any] = _admin) -> Call:
    return lambda s, k: s.SetStock(
        pb.SetStockRequest(sku=sku, available=available), metadata=auth(k)
    )


def _get(sku: str, auth: Callable[[TestKeys], Any] = _customer) -> Call:
    return lambda s, k: s.GetStock(pb.GetStockRequest(sku=sku), metadata=auth(k))


def _batch(skus: list[str], auth: Callable[[TestKeys], Any] = _customer) -> Call:
    return lambda s, k: s.BatchGetStock(pb.BatchGetStockRequest(skus=skus), metadata=auth(k))


def _expired(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.expired_token(Role.ADMIN))


def _not_bearer(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Basic {k.token(Role.ADMIN)}"),)


def _garbage(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer("not.a.jwt")


BAD_INPUT: list[tuple[str, Call, grpc.StatusCode]] = [
    # SetStock (admin; an unknown SKU is created, so it has no NOT_FOUND row)
    ("set-empty-sku", _set("", 5), Code.INVALID_ARGUMENT),
    ("set-lowercase-sku", _set("abc-1", 5), Code.INVALID_ARGUMENT),
    ("set-one-char-sku", _set("A", 5), Code.INVALID_ARGUMENT),
    ("set-oversized-sku", _set("A" * 65, 5), Code.INVALID_ARGUMENT),
    ("set-sku-trailing-newline", _set("ABC\n", 5), Code.INVALID_ARGUMENT),
    ("set-sku-nul", _set("AB\x00C", 5), Code.INVALID_ARGUMENT),
    ("set-negative-available", _set("FRESH-1", -1), Code.INVALID_ARGUMENT),
    ("set-negative-available-seeded", _set(SEEDED_SKU, -1), Code.INVALID_ARGUMENT),
    ("set-oversized-available", _set("FRESH-1", MAX_AVAILABLE + 1), Code.INVALID_ARGUMENT),
    ("set-int64-max-available", _set(SEEDED_SKU, 2**63 - 1), Code.INVALID_ARGUMENT),
    ("set-int64-min-available", _set(SEEDED_SKU, -(2**63)), Code.INVALID_ARGUMENT),
    ("set-missing-token", _set("FRESH-1", 5, lambda k: _NO_TOKEN), Code.UNAUTHENTICATED),
    ("set-expired-token", _set("FRESH-1", 5, _expired), Code.UNAUTHENTICATED),
    ("set-not-bearer", _set("FRESH-1", 5, _not_bearer), Code.UNAUTHENTICATED),
    ("set-garbage-token", _set("FRESH-1", 5, _garbage), Code.UNAUTHENTICATED),
    ("set-as-customer-new-sku", _set("FRESH-1", 5, _customer), Code.PERMISSION_DENIED),
    ("set-as-customer-seeded", _set(SEEDED_SKU, 500, _customer), Code.PERMISSION_DENIED),
    # GetStock (any valid token)
    ("get-empty-sku", _get(""), Code.INVALID_ARGUMENT),
    ("get-lowercase-sku", _get("seeded-1"), Code.INVALID_ARGUMENT),
    ("get-oversized-sku", _get("A" * 65), Code.INVALID_ARGUMENT),
    ("get-sku-trailing-newline", _get(SEEDED_SKU + "\n"), Code.INVALID_ARGUMENT),
    ("get-unknown-sku", _get("UNKNOWN-1"), Code.NOT_FOUND),
    ("get-missing-token", _get(SEEDED_SKU, lambda k: _NO_TOKEN), Code.UNAUTHENTICATED),
    ("get-expired-token", _get(SEEDED_SKU, _expired), Code.UNAUTHENTICATED),
    ("get-garbage-token", _get(SEEDED_SKU, _garbage), Code.UNAUTHENTICATED),
    # BatchGetStock (any valid token; unknown SKUs are reported in missing_skus)
    ("batch-empty", _batch([]), Code.INVALID_ARGUMENT),
    ("batch-oversized", _batch([f"SKU-{i}" for i in range(MAX_BATCH + 1)]), Code.INVALID_ARGUMENT),
    ("batch-one-empty-sku", _batch([SEEDED_SKU, ""]), Code.INVALID_ARGUMENT),
    ("batch-one-malformed-sku", _batch([SEEDED_SKU, "bad sku"]), Code.INVALID_ARGUMENT),
    ("batch-one-oversized-sku", _batch([SEEDED_SKU, "A" * 65]), Code.INVALID_ARGUMENT),
    ("batch-missing-token", _batch([SEEDED_SKU], lambda k: _NO_TOKEN), Code.UNAUTHENTICATED),
    ("batch-expired-token", _batch([SEEDED_SKU], _expired), Code.UNAUTHENTICATED),
    ("batch-garbage-token", _batch([SEEDED_SKU], _garbage), Code.UNAUTHENTICATED),
]


@pytest.mark.parametrize(
    ("call", "code"), [pytest.param(c, code, id=name) for name, c, code in BAD_INPUT]
)
async def test_bad_input_is_rejected_and_writes_nothing(
    service: RunningService,
    stub: InventoryServiceAsyncStub,
    keys: TestKeys,
    call: Call,
    code: grpc.StatusCode,
) -> None:
    before = {t: await service.count(t) for t in TABLES}
    seeded = await stock_row(service, SEEDED_SKU)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(stub, keys)
    assert error.value.code() == code, error.value.details()
    assert {t: await service.count(t) for t in TABLES} == before
    assert await stock_row(service, SEEDED_SKU) == seeded
