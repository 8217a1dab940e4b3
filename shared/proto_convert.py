"""Conversions between domain values and the shared protobuf types."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import InvalidArgument
from shared.money import MAX_AMOUNT_MINOR, Money
from shared.validation import require_currency
from shop.common.v1 import money_pb2


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def money_to_proto(money: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)


def money_from_proto(message: money_pb2.Money, field: str, *, allow_zero: bool = False) -> Money:
    """Validates as it converts: positive, bounded, and a real currency code."""
    require_currency(message.currency, f"{field}.currency")
    low = 0 if allow_zero else 1
    if not low <= message.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidArgument(
            f"{field}.amount_minor",
            f"must be between {low} and {MAX_AMOUNT_MINOR}, got {message.amount_minor}",
        )
    return Money(message.amount_minor, message.currency)
