"""The storefront's view data: money from minor units, amounts from forms, the saga's
steps as the order page colours them."""

from __future__ import annotations

import pytest

from gateway.storefront import csrf, views
from shop.common.v1 import money_pb2
from shop.order.v1 import order_pb2


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency="USD")


@pytest.mark.parametrize(
    ("minor", "text"),
    [
        (0, "0.00 USD"),
        (5, "0.05 USD"),
        (1999, "19.99 USD"),
        (123456789, "1,234,567.89 USD"),
        (-250, "-2.50 USD"),
    ],
)
def test_money_is_formatted_from_minor_units(minor: int, text: str) -> None:
    assert views.money(usd(minor)) == text


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("12", 1200),
        ("12.5", 1250),
        (" 0.01 ", 1),
        ("1e2", 10000),
        ("0", None),
        ("-3", None),
        ("1.001", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        ("12,50", None),
        ("abc", None),
    ],
)
def test_a_form_amount_is_read_exactly_or_refused(text: str, minor: int | None) -> None:
    assert views.parse_amount(text) == minor


def order(status: order_pb2.OrderStatus.ValueType, reason: str = "") -> order_pb2.Order:
    return order_pb2.Order(
        order_id="0" * 8 + "-1", status=status, status_reason=reason, total=usd(1000)
    )


def test_a_confirmed_order_has_every_step_done() -> None:
    view = views.order_view(order(order_pb2.ORDER_STATUS_CONFIRMED))
    assert [s.state for s in view["steps"]] == ["done"] * len(views.STEPS)
    assert view["final"] and not view["cancellable"] and view["status_label"] == "Confirmed"


def test_a_rejected_order_shows_where_it_failed_and_why() -> None:
    view = views.order_view(order(order_pb2.ORDER_STATUS_REJECTED, "out of stock: SKU-1"))
    states = [s.state for s in view["steps"]]
    assert states[0] == "done" and "failed" in states and "done" not in states[1:]
    assert view["status_reason"] == "out of stock: SKU-1" and view["final"]


def test_a_pending_order_can_be_cancelled_and_is_not_final() -> None:
    view = views.order_view(order(order_pb2.ORDER_STATUS_PENDING))
    assert view["cancellable"] and not view["final"] and view["short_id"] == "00000000"


def test_csrf_tokens_match_only_their_secret() -> None:
    secret = csrf.new_secret()
    assert csrf.matches(secret, secret)
    assert not csrf.matches(secret, csrf.new_secret())
    assert not csrf.matches(None, secret) and not csrf.matches(secret, "")


def test_the_steps_follow_the_saga_as_it_goes() -> None:
    pending = order(order_pb2.ORDER_STATUS_PENDING)
    seen = []
    for step in (
        order_pb2.ORDER_STEP_PLACED,
        order_pb2.ORDER_STEP_RESERVED,
        order_pb2.ORDER_STEP_CHARGED,
    ):
        pending.step = step
        seen.append([s.state for s in views.steps(pending)].count("done"))
    assert seen == [1, 2, 3]
    cancelled = order(order_pb2.ORDER_STATUS_CANCELLED, "payment failed: declined")
    cancelled.step = order_pb2.ORDER_STEP_RESERVED
    assert [s.state for s in views.steps(cancelled)] == ["done", "done", "failed", ""]
