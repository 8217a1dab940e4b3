"""Money and request-field validation."""

from __future__ import annotations

import pytest

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import Money
from shared.validation import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_batch,
    require_currency,
    require_text,
)


def test_money_adds_and_multiplies_in_minor_units() -> None:
    assert Money(199, "USD").times(3) + Money(3, "USD") == Money(600, "USD")


def test_money_refuses_to_mix_currencies() -> None:
    with pytest.raises(FailedPrecondition):
        Money(1, "USD") + Money(1, "EUR")


def test_invalid_argument_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^order_id: must be a UUID"):
        parse_uuid("nope", "order_id")


@pytest.mark.parametrize("value", ["", "   "])
def test_required_text_rejects_blank(value: str) -> None:
    with pytest.raises(InvalidArgument, match="title"):
        require_text(value, "title", max_len=10)


def test_required_text_rejects_oversized() -> None:
    with pytest.raises(InvalidArgument, match="at most 10"):
        require_text("x" * 11, "title", max_len=10)


@pytest.mark.parametrize("code", ["usd", "US", "USDX", ""])
def test_currency_must_be_three_capitals(code: str) -> None:
    with pytest.raises(InvalidArgument):
        require_currency(code, "price.currency")


def test_batch_bounds_and_dedup() -> None:
    assert require_batch(["a", "b", "a"], "ids", max_items=3) == ["a", "b"]
    with pytest.raises(InvalidArgument):
        require_batch([], "ids", max_items=3)
    with pytest.raises(InvalidArgument):
        require_batch(["a"] * 4, "ids", max_items=3)


def test_page_size_defaults_and_bounds() -> None:
    assert page_size(0) == 20
    assert page_size(100) == 100
    for bad in (-1, 101):
        with pytest.raises(InvalidArgument):
            page_size(bad)


def test_page_token_round_trips_and_rejects_forgeries() -> None:
    cursor = {"t": "2026-01-01T00:00:00+00:00", "id": "x"}
    assert decode_page_token(encode_page_token(cursor)) == cursor
    assert decode_page_token("") is None
    for bad in ("%%%", "bm90IGpzb24=", "WzFd"):
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_page_token(bad)
