"""The scenarios: their seeded plans, their catalog, and what one arrival does.

A plan is fixed by the settings and the seed before anything runs: arrival
``i`` always makes the same call for the same buyer and products, so two runs
with the same seed ask the system for the same things. Times are not in the
plan: arrivals are evenly spaced at the run's rate.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import grpc

from loadgen.buyers import SETUP_PARALLEL, Buyer, bounded
from loadgen.calls import Calls
from loadgen.settings import BROWSE, FLASH_SALE, STEADY_SAGA, ScenarioSettings
from ops.shop_client import ShopClient
from shared.rpc.client import ServiceClients
from shop.common.v1 import money_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

# Which service answers each kind of arrival (its first call); the baseline
# sends its bare Check to the same service for the same arrival.
SERVICE_OF = {
    "GetProduct": "product",
    "ListProducts": "product",
    "BatchGetProducts": "product",
    "PlaceOrder": "order",
    "GetBalance": "payment",
    "TopUp": "payment",
}
# The mixed shopper: ~80 % browsing, 15 % ordering, 5 % wallet.
MIXED_WEIGHTS = {
    "GetProduct": 40,
    "ListProducts": 20,
    "BatchGetProducts": 20,
    "PlaceOrder": 15,
    "GetBalance": 3,
    "TopUp": 2,
}
MIXED_PRODUCTS = 20
SAGA_PRODUCTS = 5
BATCH_SIZE = 5
LIST_PAGE = 20
TOP_UP_MINOR = 500
CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    kind: str  # the RPC this arrival starts with
    buyer: int  # index into the buyers
    items: tuple[tuple[int, int], ...] = ()  # (catalog index, quantity)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    product_id: str
    sku: str
    price_minor: int


def _buyer_order(rng: random.Random, users: int) -> list[int]:
    order = list(range(users))
    rng.shuffle(order)
    return order


def make_plan(settings: ScenarioSettings) -> list[Arrival]:
    rng = random.Random(f"{settings.scenario}:{settings.seed}")
    n, users = settings.arrivals, settings.users
    if settings.scenario == FLASH_SALE:
        # Every buyer tries once before anyone tries again, as in a real rush.
        turns = _buyer_order(rng, users)
        return [Arrival(i, "PlaceOrder", turns[i % users], ((0, 1),)) for i in range(n)]
    if settings.scenario == STEADY_SAGA:
        turns = _buyer_order(rng, users)
        return [
            Arrival(i, "PlaceOrder", turns[i % users], ((rng.randrange(SAGA_PRODUCTS), 1),))
            for i in range(n)
        ]
    if settings.scenario == BROWSE:
        return [
            Arrival(i, "GetProduct", rng.randrange(users), ((rng.randrange(MIXED_PRODUCTS), 1),))
            for i in range(n)
        ]
    kinds, weights = zip(*MIXED_WEIGHTS.items(), strict=True)
    plan = []
    for i, kind in enumerate(rng.choices(kinds, weights, k=n)):
        items: tuple[tuple[int, int], ...] = ()
        if kind == "GetProduct":
            items = ((rng.randrange(MIXED_PRODUCTS), 1),)
        elif kind == "BatchGetProducts":
            items = tuple((p, 1) for p in rng.sample(range(MIXED_PRODUCTS), BATCH_SIZE))
        elif kind == "PlaceOrder":
            picked = rng.sample(range(MIXED_PRODUCTS), rng.randint(1, 3))
            items = tuple((p, rng.randint(1, 2)) for p in picked)
        plan.append(Arrival(i, kind, rng.randrange(users), items))
    return plan


def intended_states(settings: ScenarioSettings) -> frozenset[str]:
    """Terminal states that are outcomes, not failures: a flash sale runs out of stock."""
    if settings.scenario == FLASH_SALE:
        return frozenset({"CONFIRMED", "REJECTED"})
    return frozenset({"CONFIRMED"})


def units_per_product(plan: Sequence[Arrival]) -> Counter[int]:
    units: Counter[int] = Counter()
    for arrival in plan:
        if arrival.kind == "PlaceOrder":
            for product, quantity in arrival.items:
                units[product] += quantity
    return units


def spend_per_buyer(plan: Sequence[Arrival], catalog: Sequence[CatalogItem]) -> dict[int, int]:
    spend: dict[int, int] = defaultdict(int)
    for arrival in plan:
        if arrival.kind == "PlaceOrder":
            for product, quantity in arrival.items:
                spend[arrival.buyer] += catalog[product].price_minor * quantity
    return dict(spend)


async def _ensure_product(
    admin: ShopClient, existing: dict[str, str], sku: str, title: str, price_minor: int
) -> CatalogItem:
    product_id = existing.get(sku)
    if product_id is None:
        product_id = (await admin.create_product(sku, title, price_minor)).product_id
        return CatalogItem(product_id, sku, price_minor)
    # Reused from an earlier run: its price is whatever the catalog says.
    product = await admin.get_product(product_id)
    return CatalogItem(product_id, sku, product.price.amount_minor)


async def _ensure_stock(admin: ShopClient, sku: str, units: int) -> None:
    try:
        available = (await admin.get_stock(sku)).available
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        available = 0
    if available < units:
        await admin.set_stock(sku, units)


async def prepare_catalog(
    settings: ScenarioSettings, plan: Sequence[Arrival], admin: ShopClient, run_id: str
) -> list[CatalogItem]:
    """The scenario's products and stock, created or topped up as admin."""
    if settings.scenario == FLASH_SALE:
        # A fresh hot SKU each run, so "sold exactly the stock" is checkable.
        sku = f"LOAD-FLASH-{run_id}".upper()
        product = await admin.create_product(sku, "Flash-sale load-test item", 2_500)
        await admin.set_stock(sku, settings.stock)
        return [CatalogItem(product.product_id, sku, 2_500)]
    # The browsing and saga catalogs are reused across runs: the catalog stays small.
    existing = {p.sku: p.product_id for p in await admin.all_products()}
    if settings.scenario == STEADY_SAGA:
        specs = [(f"LOAD-SAGA-{i:02d}", 1_000) for i in range(SAGA_PRODUCTS)]
    else:  # mixed and browse share the browsing catalog
        specs = [(f"LOAD-MIX-{i:02d}", 500 + 250 * i) for i in range(MIXED_PRODUCTS)]
    catalog = [
        await _ensure_product(admin, existing, sku, f"Load-test item {sku}", price)
        for sku, price in specs
    ]
    units = units_per_product(plan)
    for index, item in enumerate(catalog):
        # Enough for every planned order, so only a fault can reject one.
        await _ensure_stock(admin, item.sku, units[index] + max(10, units[index] // 10))
    return catalog


class Operations:
    """What each kind of arrival does, measured from its scheduled time."""

    def __init__(
        self,
        settings: ScenarioSettings,
        calls: Calls,
        buyers: Sequence[Buyer],
        catalog: Sequence[CatalogItem],
        run_id: str,
    ) -> None:
        self._settings = settings
        self._calls = calls
        self._buyers = buyers
        self._catalog = catalog
        self._run_id = run_id
        self._intended = intended_states(settings)

    async def execute(self, arrival: Arrival, due: float) -> bool:
        token = self._buyers[arrival.buyer].token
        kind, calls = arrival.kind, self._calls
        if kind == "PlaceOrder":
            return await self.place_and_follow(arrival, token, due)
        if kind == "GetProduct":
            request: object = product_pb2.GetProductRequest(
                product_id=self._catalog[arrival.items[0][0]].product_id
            )
            stub: type = product_pb2_grpc.ProductServiceStub
        elif kind == "ListProducts":
            request = product_pb2.ListProductsRequest(page_size=LIST_PAGE)
            stub = product_pb2_grpc.ProductServiceStub
        elif kind == "BatchGetProducts":
            ids = [self._catalog[p].product_id for p, _ in arrival.items]
            request = product_pb2.BatchGetProductsRequest(product_ids=ids)
            stub = product_pb2_grpc.ProductServiceStub
        elif kind == "GetBalance":
            request = payment_pb2.GetBalanceRequest()
            stub = payment_pb2_grpc.PaymentServiceStub
        elif kind == "TopUp":
            request = payment_pb2.TopUpRequest(
                amount=money_pb2.Money(amount_minor=TOP_UP_MINOR, currency=CURRENCY),
                idempotency_key=f"load-{self._run_id}-{arrival.index}",
            )
            stub = payment_pb2_grpc.PaymentServiceStub
        else:
            raise ValueError(f"unknown arrival kind {kind!r}")
        reply = await calls.unary(SERVICE_OF[kind], stub, kind, request, token, started=due)
        return reply is not None

    async def place_and_follow(self, arrival: Arrival, token: str, due: float) -> bool:
        request = order_pb2.PlaceOrderRequest(
            items=[
                order_pb2.PlaceOrderItem(product_id=self._catalog[p].product_id, quantity=q)
                for p, q in arrival.items
            ],
            idempotency_key=f"load-{self._run_id}-{arrival.index}",
        )
        reply = await self._calls.place_order(request, token, started=due)
        if reply is None:
            return False
        state = await self._calls.follow_order(
            reply.order.order_id, token, due, self._settings.saga_deadline
        )
        return state in self._intended


def new_run_id() -> str:
    """Readable and unique: it names the run's SKU and idempotency keys."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]


async def fund_buyers(
    plan: Sequence[Arrival],
    catalog: Sequence[CatalogItem],
    buyers: Sequence[Buyer],
    clients: ServiceClients,
    key: str,
) -> int:
    """Tops up each buyer's wallet by what its planned orders cost; returns the total."""
    spend = spend_per_buyer(plan, catalog)

    async def fund(buyer: Buyer, amount: int) -> None:
        # Idempotent: a retried setup cannot fund twice.
        await ShopClient(clients, token=buyer.token).top_up(amount, idempotency_key=key)

    jobs = [partial(fund, buyers[b], amount) for b, amount in spend.items() if amount > 0]
    await bounded(SETUP_PARALLEL, jobs)
    return sum(spend.values())
