"""What a scenario's arrivals do over REST, and its setup through the gateway.

The plan is the one loadgen/scenarios.py makes (same seed, same arrivals); only the way
in differs: GetProduct is ``GET /products/{id}``, PlaceOrder ``POST /orders`` followed by
the order's event stream. The catalog and its stock are still made by the admin over
gRPC (setup is never measured, and the gateway has no admin token to offer a machine).
The one buyer's wallet is funded through the gateway, ``POST /wallet/top-ups``.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadgen.rest import API, RestCalls
from loadgen.scenarios import CURRENCY, Arrival, CatalogItem, intended_states, spend_per_buyer
from loadgen.settings import ScenarioSettings
from shared.money import MAX_AMOUNT_MINOR


class RestOperations:
    """Each kind of arrival over REST, measured from its scheduled time."""

    def __init__(
        self,
        settings: ScenarioSettings,
        calls: RestCalls,
        catalog: Sequence[CatalogItem],
        run_id: str,
    ) -> None:
        self._settings = settings
        self._calls = calls
        self._catalog = catalog
        self._run_id = run_id
        self._intended = intended_states(settings)

    async def execute(self, arrival: Arrival, due: float) -> bool:
        if arrival.kind == "GetProduct":
            product_id = self._catalog[arrival.items[0][0]].product_id
            return await self._calls.get_product(product_id, due)
        if arrival.kind == "PlaceOrder":
            return await self.place_and_follow(arrival, due)
        raise ValueError(f"{arrival.kind} has no REST form here")

    async def place_and_follow(self, arrival: Arrival, due: float) -> bool:
        body = {
            "items": [
                {"product_id": self._catalog[p].product_id, "quantity": q} for p, q in arrival.items
            ]
        }
        key = f"load-{self._run_id}-{arrival.index}"
        order_id = await self._calls.place_order(body, key, due)
        if order_id is None:
            return False
        state = await self._calls.follow_order(order_id, due, self._settings.saga_deadline)
        return state in self._intended


async def warm_rest(calls: RestCalls, catalog: Sequence[CatalogItem]) -> None:
    """One request per service a REST scenario reaches through the gateway, so its
    channels, the token's first verification and the connection are up before the clock."""
    await calls.get(f"{API}/wallet")
    await calls.get(f"{API}/products/{catalog[0].product_id}")
    await calls.get(f"{API}/orders?page_size=1")


async def fund_rest(
    calls: RestCalls, plan: Sequence[Arrival], catalog: Sequence[CatalogItem], key: str
) -> int:
    """Tops up the one buyer's wallet by what every planned order costs (in as few
    top-ups as the largest amount allows, each with its own Idempotency-Key)."""
    total = sum(spend_per_buyer(plan, catalog).values())
    left, part = total, 0
    while left > 0:
        amount = min(left, MAX_AMOUNT_MINOR)
        body = {"amount": {"amount_minor": amount, "currency": CURRENCY}}
        await calls.post(f"{API}/wallet/top-ups", body, f"{key}-{part}")
        left, part = left - amount, part + 1
    return total
