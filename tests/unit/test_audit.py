"""The audit's judgement on hand-made data: clean data passes, each kind of damage is named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ops.audit import evaluate

O1, O2, O3 = (
    "11111111-0000-0000-0000-000000000001",
    "22222222-0000-0000-0000-000000000002",
    "33333333-0000-0000-0000-000000000003",
)
U = "99999999-0000-0000-0000-000000000009"


def order(
    order_id: str, status: str, total: int, *, priced_from_cache: bool = False
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "status": status,
        "age": 5.0,
        "total_minor": total,
        "currency": "USD",
        "priced_from_cache": priced_from_cache,
    }


def clean() -> dict[str, list[dict[str, Any]]]:
    """A flash sale at rest: O1 confirmed, O2 cancelled and refunded, O3 rejected.

    O1 was priced from the last known catalog (degraded mode), the others live.
    """
    return {
        "stock": [{"sku": "HOT", "available": 7, "reserved": 0, "sold": 3, "total_received": 10}],
        "reserved_lines": [],
        "reservations": [
            {"order_id": O1, "state": "committed"},
            {"order_id": O2, "state": "released"},
            {"order_id": O3, "state": "rejected"},
        ],
        "orders": [
            order(O1, "confirmed", 300, priced_from_cache=True),
            order(O2, "cancelled", 500),
            order(O3, "rejected", 200),
        ],
        "confirmed_lines": [{"sku": "HOT", "q": 3}],
        "wallets": [{"user_id": U, "balance_minor": 700, "ledger": 700}],
        "order_entries": [
            {"order_id": O1, "kind": "charge", "amount_minor": 300, "currency": "USD"},
            {"order_id": O2, "kind": "charge", "amount_minor": 500, "currency": "USD"},
            {"order_id": O2, "kind": "refund", "amount_minor": 500, "currency": "USD"},
        ],
        "inventory_outbox": [{"n": 0}],
        "order_outbox": [{"n": 0}],
        "payment_outbox": [{"n": 0}],
    }


def failing(report: Any) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def test_clean_data_passes() -> None:
    report = evaluate(clean(), saga_timeout=30)
    assert report.ok, report.render()
    assert "audit: ok" in report.render()
    assert report.info["priced_from_cache"] == 1


def damage(path: str, value: Any) -> dict[str, list[dict[str, Any]]]:
    data = copy.deepcopy(clean())
    table, index, column = path.split(".")
    data[table][int(index)][column] = value
    return data


@pytest.mark.parametrize(
    ("data", "broken"),
    [
        (damage("stock.0.available", -1), {"stock_never_negative", "stock_ledger_balances"}),
        (damage("stock.0.sold", 4), {"stock_ledger_balances", "sold_matches_confirmed"}),
        (damage("stock.0.reserved", 1), {"stock_ledger_balances", "reserved_matches_holds"}),
        (damage("confirmed_lines.0.q", 2), {"sold_matches_confirmed"}),
        (damage("order_entries.2.kind", "charge"), {"unsold_charge_refunded"}),
        (damage("order_entries.0.kind", "refund"), {"confirmed_charged_once"}),
        (
            damage("order_entries.0.order_id", "00000000-0000-0000-0000-00000000dead"),
            {"confirmed_charged_once", "no_orphan_ledger_entries"},
        ),
        (damage("wallets.0.balance_minor", -5), {"wallets_never_negative", "wallets_match_ledger"}),
        (damage("wallets.0.ledger", 699), {"wallets_match_ledger"}),
        (damage("orders.1.status", "pending") | {}, set()),  # young pending order: fine
    ],
)
def test_each_kind_of_damage_is_reported(data: Any, broken: set[str]) -> None:
    assert failing(evaluate(data, saga_timeout=30)) == broken


def test_stuck_order_is_reported() -> None:
    data = damage("orders.1.age", 31.0)
    data["orders"][1]["status"] = "pending"
    report = evaluate(data, saga_timeout=30)
    assert failing(report) == {"orders_terminal_in_time"}
    assert O2 in report.render()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        # O1 was priced from the cache: it is charged its total all the same.
        ("order_entries.0.amount_minor", 299, f"order {O1} (priced from the cache)"),
        ("orders.0.total_minor", 301, f"order {O1} (priced from the cache)"),
        ("order_entries.1.amount_minor", 450, f"order {O2} (priced live)"),
        ("order_entries.1.currency", "EUR", f"order {O2} (priced live)"),
    ],
)
def test_a_charge_other_than_the_total_is_reported(path: str, value: Any, named: str) -> None:
    report = evaluate(damage(path, value), saga_timeout=30)
    assert failing(report) == {"charge_matches_total"}
    assert named in report.render()


def test_orders_never_charged_are_not_held_to_their_total() -> None:
    data = clean()
    data["orders"][2]["total_minor"] = 999_999  # O3 was rejected before any charge
    report = evaluate(data, saga_timeout=30)
    assert report.ok, report.render()
    checked = {c.name: c.checked for c in report.checks}
    assert checked["charge_matches_total"] == 2
