"""The audit: every invariant of the brief, checked against the running system's data.

It reads each service's database (read-only transactions; no service API is
used, so it also sees what the APIs hide) and joins across them in Python,
since no service may read another's database but an auditor may. The system
is eventually consistent: with ``settle`` > 0 the audit re-runs until it is
clean or the time is up, which is how tests wait for a saga to come to rest.

`make audit` runs it over a local stack's databases (devstack/audit.py); the smoke and
load Jobs over a cluster's, as the read-only auditor role.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

MAX_LISTED = 10  # violations printed per invariant; the count is always exact


@dataclass
class Check:
    name: str
    what: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class AuditReport:
    checks: list[Check]
    info: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [asdict(c) | {"ok": c.ok} for c in self.checks],
            "info": self.info,
        }

    def render(self) -> str:
        lines = []
        for c in self.checks:
            status = "ok  " if c.ok else "FAIL"
            lines.append(f"{status} {c.name:<28} {c.what} [{c.checked} checked]")
            for v in c.violations[:MAX_LISTED]:
                lines.append(f"       - {v}")
            if len(c.violations) > MAX_LISTED:
                lines.append(f"       ... and {len(c.violations) - MAX_LISTED} more")
        lines.append("info " + ", ".join(f"{k}={v}" for k, v in self.info.items()))
        lines.append(
            f"audit: {'ok' if self.ok else 'FAILED'} "
            f"({sum(not c.ok for c in self.checks)} of {len(self.checks)} invariants "
            "violated)"
        )
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def read_only(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn
    finally:
        await conn.close()


async def collect(dsns: Mapping[str, str]) -> dict[str, list[asyncpg.Record]]:
    queries = {
        "inventory": {
            "stock": "SELECT sku, available, reserved, sold, total_received FROM stock",
            "reserved_lines": "SELECT l.sku, sum(l.quantity) AS q FROM reservation_lines l"
            " JOIN reservations r USING (order_id) WHERE r.state = 'reserved'"
            " GROUP BY l.sku",
            "reservations": "SELECT order_id, state FROM reservations",
            "inventory_outbox": "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
        },
        "order": {
            "orders": "SELECT order_id, status, extract(epoch FROM now() - created_at) AS age,"
            " total_minor, currency, priced_from_cache FROM orders",
            "confirmed_lines": "SELECT i.sku, sum(i.quantity) AS q FROM order_items i"
            " JOIN orders o USING (order_id) WHERE o.status = 'confirmed'"
            " GROUP BY i.sku",
            "order_outbox": "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
        },
        "payment": {
            "wallets": "SELECT w.user_id, w.balance_minor, coalesce(sum(CASE e.kind"
            " WHEN 'charge' THEN -e.amount_minor ELSE e.amount_minor END), 0) AS ledger"
            " FROM wallets w LEFT JOIN ledger_entries e USING (user_id)"
            " GROUP BY w.user_id, w.balance_minor",
            "order_entries": "SELECT order_id, kind, amount_minor, currency FROM ledger_entries"
            " WHERE kind <> 'topup'",
            "payment_outbox": "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
        },
    }
    data: dict[str, list[asyncpg.Record]] = {}
    for service, named in queries.items():
        async with read_only(dsns[service]) as conn:
            for name, sql in named.items():
                data[name] = await conn.fetch(sql)
    return data


def evaluate(data: Mapping[str, list[Any]], saga_timeout: float) -> AuditReport:
    stock = data["stock"]
    orders = {str(r["order_id"]): r for r in data["orders"]}
    entries: dict[str, Counter[str]] = defaultdict(Counter)
    # What each order was charged: (amount_minor, currency) per charge entry.
    charged: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in data["order_entries"]:
        entries[str(r["order_id"])][r["kind"]] += 1
        if r["kind"] == "charge":
            charged[str(r["order_id"])].append((int(r["amount_minor"]), str(r["currency"])))

    def check(name: str, what: str, items: list[Any], bad: Callable[[Any], str | None]) -> Check:
        result = Check(name, what, checked=len(items))
        result.violations = [v for item in items if (v := bad(item)) is not None]
        return result

    reserved_by_lines = {r["sku"]: int(r["q"]) for r in data["reserved_lines"]}
    confirmed_by_sku = {r["sku"]: int(r["q"]) for r in data["confirmed_lines"]}
    skus = sorted({r["sku"] for r in stock} | set(confirmed_by_sku))
    sold = {r["sku"]: r["sold"] for r in stock}
    confirmed = [o for o in orders.values() if o["status"] == "confirmed"]
    ended_unsold = [o for o in orders.values() if o["status"] in ("cancelled", "rejected")]

    def charged_its_total(o: Any) -> str | None:
        # Priced live or from the last known catalog (degraded mode), an order is
        # charged exactly the total it shows its customer.
        total = (int(o["total_minor"]), str(o["currency"]))
        wrong = [c for c in charged[str(o["order_id"])] if c != total]
        if not wrong:
            return None
        how = "priced from the cache" if o["priced_from_cache"] else "priced live"
        paid = ", ".join(f"{amount} {currency}" for amount, currency in wrong)
        return f"order {o['order_id']} ({how}): total {total[0]} {total[1]}, charged {paid}"

    checks = [
        check(
            "stock_never_negative",
            "available >= 0 and reserved >= 0 per SKU",
            stock,
            lambda r: (
                None
                if r["available"] >= 0 and r["reserved"] >= 0
                else f"{r['sku']}: available={r['available']} reserved={r['reserved']}"
            ),
        ),
        check(
            "stock_ledger_balances",
            "available + reserved + sold == total received",
            stock,
            lambda r: (
                None
                if r["available"] + r["reserved"] + r["sold"] == r["total_received"]
                else f"{r['sku']}: {r['available']}+{r['reserved']}+{r['sold']}"
                f" != {r['total_received']}"
            ),
        ),
        check(
            "reserved_matches_holds",
            "reserved == units held by live reservations",
            stock,
            lambda r: (
                None
                if r["reserved"] == reserved_by_lines.get(r["sku"], 0)
                else f"{r['sku']}: reserved={r['reserved']}"
                f" held={reserved_by_lines.get(r['sku'], 0)}"
            ),
        ),
        check(
            "sold_matches_confirmed",
            "sold == units of CONFIRMED orders, per SKU",
            skus,
            lambda s: (
                None
                if sold.get(s, 0) == confirmed_by_sku.get(s, 0)
                else f"{s}: sold={sold.get(s, 0)} confirmed={confirmed_by_sku.get(s, 0)}"
            ),
        ),
        check(
            "confirmed_charged_once",
            "CONFIRMED: exactly one charge, no refund",
            confirmed,
            lambda o: (
                None
                if entries[str(o["order_id"])] == Counter(charge=1)
                else f"order {o['order_id']}: {dict(entries[str(o['order_id'])])}"
            ),
        ),
        check(
            "unsold_charge_refunded",
            "CANCELLED/REJECTED: charged => exactly one refund",
            ended_unsold,
            lambda o: (
                None
                if entries[str(o["order_id"])]["charge"]
                == entries[str(o["order_id"])]["refund"]
                <= 1
                else f"order {o['order_id']} ({o['status']}): {dict(entries[str(o['order_id'])])}"
            ),
        ),
        check(
            "charge_matches_total",
            "every charge == its order's total, priced from the cache or not",
            [o for o in orders.values() if str(o["order_id"]) in charged],
            charged_its_total,
        ),
        check(
            "no_orphan_ledger_entries",
            "every charge/refund belongs to a known order",
            list(entries),
            lambda oid: None if oid in orders else f"order {oid} unknown",
        ),
        check(
            "wallets_never_negative",
            "balance >= 0",
            data["wallets"],
            lambda w: (
                None if w["balance_minor"] >= 0 else f"wallet {w['user_id']}: {w['balance_minor']}"
            ),
        ),
        check(
            "wallets_match_ledger",
            "balance == top-ups + refunds - charges",
            data["wallets"],
            lambda w: (
                None
                if w["balance_minor"] == w["ledger"]
                else f"wallet {w['user_id']}: balance={w['balance_minor']} ledger={w['ledger']}"
            ),
        ),
        check(
            "orders_terminal_in_time",
            f"no order PENDING longer than {saga_timeout:g}s",
            list(orders.values()),
            lambda o: (
                None
                if o["status"] != "pending" or o["age"] <= saga_timeout
                else f"order {o['order_id']} pending for {float(o['age']):.0f}s"
            ),
        ),
    ]
    states = Counter(r["state"] for r in data["reservations"])
    info = {
        "orders": dict(Counter(o["status"] for o in orders.values())),
        "priced_from_cache": sum(bool(o["priced_from_cache"]) for o in orders.values()),
        "reservations": dict(states),
        "outbox_unsent": sum(
            data[k][0]["n"] for k in ("inventory_outbox", "order_outbox", "payment_outbox")
        ),
    }
    return AuditReport(checks, info)


async def audit(
    dsns: Mapping[str, str], *, saga_timeout: float = 40.0, settle: float = 0.0
) -> AuditReport:
    """Runs until clean or ``settle`` seconds have passed; returns the last report."""
    deadline = time.monotonic() + settle
    while True:
        report = evaluate(await collect(dsns), saga_timeout)
        if report.ok or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(0.5)
