"""The order's rules: state machine, request validation, pricing, idempotent replay."""

from __future__ import annotations

import itertools
import uuid

import pytest

from services.order.domain import (
    MAX_ITEMS,
    TRANSITIONS,
    CatalogEntry,
    Order,
    OrderStatus,
    order_request,
    place_order,
    replay,
)
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.money import Money
from shared.validation import MAX_IDEMPOTENCY_KEY

USER = uuid.uuid4()


def entry(
    price: int = 250, currency: str = "USD", *, sku: str | None = None, sellable: bool = True
) -> CatalogEntry:
    product_id = uuid.uuid4()
    return CatalogEntry(
        product_id, sku or f"SKU-{product_id.hex[:8].upper()}", Money(price, currency), sellable
    )


def catalog_of(*entries: CatalogEntry) -> dict[uuid.UUID, CatalogEntry]:
    return {e.product_id: e for e in entries}


def pending_order() -> Order:
    product = entry()
    request = order_request("key-1", [(str(product.product_id), 1)])
    return place_order(user_id=USER, request=request, catalog=catalog_of(product))


def in_status(status: OrderStatus) -> Order:
    order = pending_order()
    if status is OrderStatus.PENDING:
        return order
    return order.transition(status, "" if status is OrderStatus.CONFIRMED else "because")


# --- the state machine -------------------------------------------------------------------

LEGAL = {
    (OrderStatus.PENDING, OrderStatus.CONFIRMED),
    (OrderStatus.PENDING, OrderStatus.REJECTED),
    (OrderStatus.PENDING, OrderStatus.CANCELLED),
}
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))


def test_transition_table_is_exactly_the_legal_pairs() -> None:
    table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert table == LEGAL
    assert set(TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize(("src", "dst"), sorted(LEGAL))
def test_legal_transition(src: OrderStatus, dst: OrderStatus) -> None:
    order = in_status(src)
    reason = "" if dst is OrderStatus.CONFIRMED else "out of stock"
    moved = order.transition(dst, reason)
    assert moved.status is dst
    assert moved.status_reason == reason
    assert moved.order_id == order.order_id and moved.items == order.items
    assert moved.updated_at >= order.updated_at
    assert order.status is src  # the original is untouched
    assert moved.is_final


@pytest.mark.parametrize(("src", "dst"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition(src: OrderStatus, dst: OrderStatus) -> None:
    order = in_status(src)
    # A valid reason either way, so only the state machine can refuse.
    reason = "" if dst in (OrderStatus.CONFIRMED, OrderStatus.PENDING) else "late"
    with pytest.raises(FailedPrecondition, match=f"is {src}; it cannot become {dst}"):
        order.transition(dst, reason)


@pytest.mark.parametrize("status", [s for s in OrderStatus if s is not OrderStatus.PENDING])
def test_terminal_states_have_no_exits(status: OrderStatus) -> None:
    order = in_status(status)
    assert order.is_final
    for method in (order.confirm, lambda: order.reject("x"), lambda: order.cancel("x")):
        with pytest.raises(FailedPrecondition):
            method()


def test_named_transitions() -> None:
    assert pending_order().confirm().status is OrderStatus.CONFIRMED
    rejected = pending_order().reject("payment declined")
    assert (rejected.status, rejected.status_reason) == (OrderStatus.REJECTED, "payment declined")
    cancelled = pending_order().cancel("  customer changed their mind ")
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.status_reason == "customer changed their mind"
    assert not pending_order().is_final


@pytest.mark.parametrize("dst", [OrderStatus.REJECTED, OrderStatus.CANCELLED])
@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_reject_and_cancel_need_a_reason(dst: OrderStatus, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        pending_order().transition(dst, reason)
    assert caught.value.field == "reason"


def test_confirm_carries_no_reason() -> None:
    with pytest.raises(InvalidArgument) as caught:
        pending_order().transition(OrderStatus.CONFIRMED, "why not")
    assert caught.value.field == "reason"


# --- request validation -----------------------------------------------------------------


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_valid_request() -> None:
    a, b = ids(2)
    request = order_request("k", [(a, 1), (b, 100)])
    assert request.idempotency_key == "k"
    assert request.quantities == {uuid.UUID(a): 1, uuid.UUID(b): 100}
    assert request.product_ids == [uuid.UUID(a), uuid.UUID(b)]


def test_request_bounds_are_inclusive() -> None:
    request = order_request("k" * MAX_IDEMPOTENCY_KEY, [(i, 1) for i in ids(MAX_ITEMS)])
    assert len(request.items) == MAX_ITEMS


@pytest.mark.parametrize(
    ("key", "items", "field"),
    [
        ("", [(str(uuid.uuid4()), 1)], "idempotency_key"),
        ("k" * 65, [(str(uuid.uuid4()), 1)], "idempotency_key"),
        ("k", [], "items"),
        ("k", [(i, 1) for i in ids(51)], "items"),
        ("k", [("", 1)], "items[0].product_id"),
        ("k", [(str(uuid.uuid4()), 1), ("not-a-uuid", 1)], "items[1].product_id"),
        ("k", [(str(uuid.uuid4()), 0)], "items[0].quantity"),
        ("k", [(str(uuid.uuid4()), -1)], "items[0].quantity"),
        ("k", [(str(uuid.uuid4()), 1), (str(uuid.uuid4()), 101)], "items[1].quantity"),
    ],
)
def test_invalid_request_names_the_field(
    key: str, items: list[tuple[str, int]], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        order_request(key, items)
    assert caught.value.field == field


def test_duplicate_product_names_the_repeat() -> None:
    a, b = ids(2)
    with pytest.raises(InvalidArgument) as caught:
        order_request("k", [(a, 1), (b, 2), (a.upper(), 3)])
    assert caught.value.field == "items[2].product_id"
    assert "repeats items[0]" in caught.value.message


def test_idempotency_key_is_not_trimmed() -> None:
    assert order_request(" k ", [(ids(1)[0], 1)]).idempotency_key == " k "


# --- pricing ----------------------------------------------------------------------------


def test_place_order_prices_items_and_totals() -> None:
    a, b = entry(250, sku="B-2"), entry(1999, sku="A-1")
    request = order_request("k", [(str(a.product_id), 3), (str(b.product_id), 2)])
    order = place_order(user_id=USER, request=request, catalog=catalog_of(a, b))
    assert order.status is OrderStatus.PENDING
    assert order.status_reason == ""
    assert order.user_id == USER and order.idempotency_key == "k"
    assert order.total == Money(3 * 250 + 2 * 1999, "USD")
    assert [i.sku for i in order.items] == ["A-1", "B-2"]  # canonical order, by sku
    assert [(i.quantity, i.unit_price) for i in order.items] == [
        (2, Money(1999, "USD")),
        (3, Money(250, "USD")),
    ]
    assert order.created_at == order.updated_at


def test_unknown_products_are_not_found_by_id() -> None:
    known = entry()
    unknown = uuid.uuid4()
    request = order_request("k", [(str(known.product_id), 1), (str(unknown), 1)])
    with pytest.raises(NotFound, match=str(unknown)):
        place_order(user_id=USER, request=request, catalog=catalog_of(known))


def test_unsellable_products_are_named() -> None:
    ok, archived = entry(), entry(sellable=False)
    request = order_request("k", [(str(ok.product_id), 1), (str(archived.product_id), 1)])
    with pytest.raises(FailedPrecondition, match=str(archived.product_id)) as caught:
        place_order(user_id=USER, request=request, catalog=catalog_of(ok, archived))
    assert str(ok.product_id) not in caught.value.message


def test_mixed_currencies_are_refused() -> None:
    usd, eur = entry(100, "USD"), entry(100, "EUR")
    request = order_request("k", [(str(usd.product_id), 1), (str(eur.product_id), 1)])
    with pytest.raises(FailedPrecondition, match="EUR, USD"):
        place_order(user_id=USER, request=request, catalog=catalog_of(usd, eur))


def test_each_order_gets_its_own_id() -> None:
    product = entry()
    request = order_request("k", [(str(product.product_id), 1)])
    first = place_order(user_id=USER, request=request, catalog=catalog_of(product))
    second = place_order(user_id=USER, request=request, catalog=catalog_of(product))
    assert first.order_id != second.order_id


# --- idempotent replay ------------------------------------------------------------------


def test_replay_returns_the_first_order_for_the_same_items_in_any_order() -> None:
    a, b = entry(), entry()
    first = order_request("k", [(str(a.product_id), 1), (str(b.product_id), 2)])
    order = place_order(user_id=USER, request=first, catalog=catalog_of(a, b))
    retry = order_request("k", [(str(b.product_id), 2), (str(a.product_id), 1)])
    assert replay(order, retry) is order


@pytest.mark.parametrize("change", ["quantity", "product", "extra item"])
def test_replay_with_different_items_is_refused(change: str) -> None:
    a, b = entry(), entry()
    order = place_order(
        user_id=USER, request=order_request("k", [(str(a.product_id), 1)]), catalog=catalog_of(a, b)
    )
    items = {
        "quantity": [(str(a.product_id), 2)],
        "product": [(str(b.product_id), 1)],
        "extra item": [(str(a.product_id), 1), (str(b.product_id), 1)],
    }[change]
    with pytest.raises(FailedPrecondition, match=str(order.order_id)):
        replay(order, order_request("k", items))
