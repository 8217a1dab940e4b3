"""Inventory's rules without I/O: SKU format, the available range, batches, the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.inventory.domain import (
    MAX_AVAILABLE,
    MAX_BATCH,
    Stock,
    parse_sku,
    parse_skus,
    require_available,
)
from shared.errors import InvalidArgument


@pytest.mark.parametrize("sku", ["AB", "SKU-1", "0-0", "A" * 64, "9ABC-DEF-123"])
def test_valid_skus_pass_unchanged(sku: str) -> None:
    assert parse_sku(sku) == sku


@pytest.mark.parametrize(
    "sku",
    ["", "A", "-AB", "ab", "AB_C", "AB C", "A" * 65, "AB\n", "\nAB", "AB\x00", "ÄB"],
)
def test_malformed_skus_are_rejected_naming_the_field(sku: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_sku(sku, "skus[3]")
    assert error.value.field == "skus[3]"


@pytest.mark.parametrize("value", [0, 1, MAX_AVAILABLE])
def test_available_within_range(value: int) -> None:
    assert require_available(value) == value


@pytest.mark.parametrize("value", [-1, MAX_AVAILABLE + 1, -(2**63)])
def test_available_out_of_range(value: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        require_available(value)
    assert error.value.field == "available"


def test_batch_is_deduplicated_in_request_order() -> None:
    assert parse_skus(["BB", "AA", "BB", "CC"]) == ["BB", "AA", "CC"]


@pytest.mark.parametrize("skus", [[], [f"SKU-{i}" for i in range(MAX_BATCH + 1)]])
def test_batch_size_is_bounded(skus: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_skus(skus)
    assert error.value.field == "skus"


def test_one_bad_sku_rejects_the_batch_naming_its_index() -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_skus(["AA", "BB", "bad"])
    assert error.value.field == "skus[2]"


def test_full_batch_is_accepted() -> None:
    assert len(parse_skus([f"SKU-{i}" for i in range(MAX_BATCH)])) == MAX_BATCH


@pytest.mark.parametrize(
    ("available", "reserved", "sold", "total", "balanced"),
    [(5, 2, 3, 10, True), (0, 0, 0, 0, True), (5, 2, 3, 11, False)],
)
def test_ledger_balance(
    available: int, reserved: int, sold: int, total: int, balanced: bool
) -> None:
    stock = Stock("AB", available, reserved, sold, total, datetime.now(UTC))
    assert stock.balanced is balanced
