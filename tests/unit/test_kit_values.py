"""Money and request-field validation."""

from __future__ import annotations

import base64

import pytest

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import Money
from shared.validation import (
    MAX_IDEMPOTENCY_KEY,
    MAX_STRING_BYTES,
    check_string,
    check_strings,
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_batch,
    require_currency,
    require_idempotency_key,
    require_text,
)
from shop.order.v1 import order_pb2


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


@pytest.mark.parametrize("key", ["k", " padded ", "x" * MAX_IDEMPOTENCY_KEY, "ключ-1", "🔑"])
def test_idempotency_keys_are_kept_verbatim(key: str) -> None:
    assert require_idempotency_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "   ", "x" * (MAX_IDEMPOTENCY_KEY + 1), "a\x00b", "a\nb", "a\u200fb", "a\u2028b"]
)
def test_bad_idempotency_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        require_idempotency_key(key)
    assert error.value.field == "idempotency_key"


@pytest.mark.parametrize("value", ["a\x00b", "\x07", "x\x1b[31m", "\x7f", "\x85", "\x9f"])
def test_every_string_refuses_control_characters(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^title: must not contain control characters"):
        check_string(value, "title")


@pytest.mark.parametrize(
    "value", ["tab\there", "two\nlines\r\n", "\u200f\u05e9\u05dc\u05d5\u05dd", "𝄞🛒"]
)
def test_every_string_allows_text(value: str) -> None:
    assert check_string(value, "description") == value


def test_every_string_is_bounded_in_bytes_not_only_characters() -> None:
    fits = "é" * (MAX_STRING_BYTES // 2)  # two bytes each
    assert check_string(fits, "f") == fits
    with pytest.raises(InvalidArgument, match="bytes"):
        check_string("🛒" * (MAX_STRING_BYTES // 4 + 1), "f")


def test_single_line_text_refuses_line_breaks_multiline_keeps_them() -> None:
    with pytest.raises(InvalidArgument, match="one line"):
        require_text("a\nb", "title", max_len=10)
    assert require_text(" a\nb ", "description", max_len=10, multiline=True) == "a\nb"


def test_currency_must_be_exactly_three_letters() -> None:
    with pytest.raises(InvalidArgument):
        require_currency("USD\n", "currency")


def test_check_strings_walks_nested_and_repeated_fields_naming_the_path() -> None:
    request = order_pb2.PlaceOrderRequest(
        items=[
            order_pb2.PlaceOrderItem(product_id="ok"),
            order_pb2.PlaceOrderItem(product_id="\x00"),
        ],
        idempotency_key="k",
    )
    with pytest.raises(InvalidArgument) as error:
        check_strings(request)
    assert error.value.field == "items[1].product_id"
    check_strings(order_pb2.PlaceOrderRequest(idempotency_key="fine"))


@pytest.mark.parametrize(
    "payload",
    [b"[" * 2001 + b"0" + b"]" * 2001, b"[" * 300 + b"]" * 300, b"x" * 400],
)
def test_a_page_token_we_did_not_issue_is_invalid_argument(payload: bytes) -> None:
    token = base64.urlsafe_b64encode(payload).decode()
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_page_token(token)
