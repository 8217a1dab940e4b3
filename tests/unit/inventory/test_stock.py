"""The stock RPCs' use cases on the fake unit of work: the ledger, lookups, bad input."""

from __future__ import annotations

import pytest

from services.inventory import use_cases
from services.inventory.domain import MAX_AVAILABLE, MAX_BATCH
from shared.errors import InvalidArgument, NotFound
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork
from tests.unit.inventory.saga import stock


async def test_set_stock_creates_the_row_as_received(uow: FakeInventoryUnitOfWork) -> None:
    created = await use_cases.set_stock(uow.factory, "NEW-1", 10)
    assert (created.sku, created.available, created.reserved, created.sold) == ("NEW-1", 10, 0, 0)
    assert created.total_received == 10 and created.balanced
    assert stock(uow, "NEW-1") == (10, 0, 0, 10)
    assert uow.commits == 1


async def test_setting_stock_books_the_difference_as_received_or_written_off(
    uow: FakeInventoryUnitOfWork,
) -> None:
    await use_cases.set_stock(uow.factory, "LEDGER-1", 10)
    # 3 units reserved and 2 sold out of the 10 received, as the saga would leave them.
    row = uow.tables.stock["LEDGER-1"]
    row.available, row.reserved, row.sold = 5, 3, 2

    for available, expected in [(20, (20, 3, 2, 25)), (4, (4, 3, 2, 9)), (0, (0, 3, 2, 5))]:
        s = await use_cases.set_stock(uow.factory, "LEDGER-1", available)
        assert (s.available, s.reserved, s.sold, s.total_received) == expected
        assert stock(uow, "LEDGER-1") == expected


@pytest.mark.parametrize("available", [MAX_AVAILABLE, 0])
async def test_set_stock_to_the_bounds(uow: FakeInventoryUnitOfWork, available: int) -> None:
    s = await use_cases.set_stock(uow.factory, "BOUNDS-1", available)
    assert s.available == s.total_received == available


@pytest.mark.parametrize(
    ("sku", "available", "field"),
    [
        ("", 5, "sku"),
        ("abc-1", 5, "sku"),
        ("ABC\n", 5, "sku"),
        ("FRESH-1", -1, "available"),
        ("FRESH-1", MAX_AVAILABLE + 1, "available"),
        ("FRESH-1", 2**63 - 1, "available"),
    ],
)
async def test_bad_set_stock_is_refused_before_any_transaction(
    uow: FakeInventoryUnitOfWork, sku: str, available: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await use_cases.set_stock(uow.factory, sku, available)
    assert error.value.field == field
    assert (uow.commits, uow.rollbacks) == (0, 0)
    assert uow.tables.stock == {}


async def test_get_stock(uow: FakeInventoryUnitOfWork) -> None:
    await use_cases.set_stock(uow.factory, "SEEDED-1", 7)
    s = await use_cases.get_stock(uow.factory, "SEEDED-1")
    assert (s.sku, s.available, s.total_received) == ("SEEDED-1", 7, 7)
    with pytest.raises(NotFound):
        await use_cases.get_stock(uow.factory, "UNKNOWN-1")
    with pytest.raises(InvalidArgument):
        await use_cases.get_stock(uow.factory, "seeded-1")


async def test_batch_get_stock_splits_found_and_missing(uow: FakeInventoryUnitOfWork) -> None:
    await use_cases.set_stock(uow.factory, "BATCH-2", 2)
    await use_cases.set_stock(uow.factory, "BATCH-1", 1)
    found, missing = await use_cases.batch_get_stock(
        uow.factory, ["NOPE-2", "BATCH-2", "BATCH-1", "NOPE-1", "BATCH-2"]
    )
    assert [(s.sku, s.available) for s in found] == [("BATCH-1", 1), ("BATCH-2", 2)]
    assert missing == ["NOPE-2", "NOPE-1"]  # request order, each once


async def test_batch_get_stock_takes_a_full_batch(uow: FakeInventoryUnitOfWork) -> None:
    await use_cases.set_stock(uow.factory, "SEEDED-1", 7)
    skus = ["SEEDED-1", *(f"ABSENT-{i}" for i in range(MAX_BATCH - 1))]
    found, missing = await use_cases.batch_get_stock(uow.factory, skus)
    assert [s.sku for s in found] == ["SEEDED-1"]
    assert len(missing) == MAX_BATCH - 1


@pytest.mark.parametrize(
    ("skus", "field"),
    [
        ([], "skus"),
        ([f"SKU-{i}" for i in range(MAX_BATCH + 1)], "skus"),
        (["SEEDED-1", ""], "skus[1]"),
        (["SEEDED-1", "bad sku"], "skus[1]"),
    ],
)
async def test_a_bad_batch_is_refused_whole(
    uow: FakeInventoryUnitOfWork, skus: list[str], field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await use_cases.batch_get_stock(uow.factory, skus)
    assert error.value.field == field
    assert (uow.commits, uow.rollbacks) == (0, 0)
