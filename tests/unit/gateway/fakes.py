"""The gateway on fakes: services answering from memory, stores in memory, real tokens.

``FakeBackends`` holds a catalog, stock, orders and wallets, records each call with
the metadata it carried, and can be told to fail a method (``fail``) with any gRPC
status and trailers, as a service or the kit's client would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import create_app
from gateway.auth import Authenticator
from gateway.backends import Auth
from gateway.carts import MAX_LINES, CartLine, too_many_lines
from gateway.idempotency import STALE_AFTER, Claim, Outcome
from gateway.sessions import Session, new_session_id
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from shared.auth.identity import Role
from shared.auth.keys import key_id
from shared.auth.tokens import TokenIssuer, TokenVerifier
from shared.rpc.status import REASON_KEY, local_error
from shared.settings import DEFAULT_ISSUER
from shop.common.v1 import money_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_pb2
from shop.product.v1 import product_pb2

AUDIENCE = "shop"


def rpc_error(code: grpc.StatusCode, details: str = "", **trailers: str) -> grpc.aio.AioRpcError:
    pairs = tuple((k.replace("_", "-"), v) for k, v in trailers.items())
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*pairs), details=details, debug_error_string=""
    )


class Keys:
    """A signing key of the test's own, its verifier, and tokens."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = key_id(self.private.public_key())

    def verifier(self) -> TokenVerifier:
        return TokenVerifier([self.private.public_key()], DEFAULT_ISSUER, AUDIENCE)

    def token(
        self,
        role: Role = Role.CUSTOMER,
        *,
        user_id: uuid.UUID | None = None,
        scopes: Sequence[str] | None = None,
        ttl: timedelta = timedelta(minutes=5),
        client_id: str = "test-client",
    ) -> str:
        issuer = TokenIssuer(self.private, DEFAULT_ISSUER, AUDIENCE, timedelta(hours=1))
        return issuer.issue(
            user_id or uuid.uuid4(), role, scopes=scopes, client_id=client_id, ttl=ttl
        )[0]


def money(amount: int, currency: str = "USD") -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency=currency)


@dataclass
class FakeBackends:
    products: dict[str, product_pb2.Product] = field(default_factory=dict)
    stock: dict[str, inventory_pb2.Stock] = field(default_factory=dict)
    orders: dict[str, order_pb2.Order] = field(default_factory=dict)
    # order id -> the statuses WatchOrder streams after the current one
    updates: dict[str, list[int]] = field(default_factory=dict)
    wallets: dict[str, payment_pb2.Wallet] = field(default_factory=dict)
    calls: list[tuple[str, Auth]] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)
    # a pause before a method answers (a slow service)
    delays: dict[str, float] = field(default_factory=dict)
    placed: list[str] = field(default_factory=list)

    def fail(self, method: str, error: BaseException) -> None:
        self.failures[method] = error

    async def _enter(self, method: str, auth: Auth, timeout: float | None = None) -> None:
        self.calls.append((method, auth))
        if (delay := self.delays.get(method)) is not None:
            if timeout is not None and delay > timeout:
                await asyncio.sleep(timeout)
                raise local_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "too slow"
                )
            await asyncio.sleep(delay)
        if (error := self.failures.get(method)) is not None:
            raise error

    def add_product(
        self, sku: str, title: str = "A thing", price: int = 999, status: int = 2
    ) -> product_pb2.Product:
        product = product_pb2.Product(
            product_id=str(uuid.uuid4()),
            sku=sku,
            title=title,
            price=money(price),
            status=status,  # type: ignore[arg-type]
        )
        product.created_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
        self.products[product.product_id] = product
        return product

    async def list_products(
        self, auth: Auth, page_size: int, page_token: str, status: int, query: str = ""
    ) -> product_pb2.ListProductsResponse:
        await self._enter("ListProducts", auth)
        words = query.lower().split()  # the product service's rule (domain.matches)
        chosen = [
            p
            for p in self.products.values()
            if (not status or p.status == status)
            and all(w in p.title.lower() or w in p.sku.lower() for w in words)
        ]
        start = int(page_token or 0)
        page = chosen[start : start + page_size]
        more = start + page_size < len(chosen)
        return product_pb2.ListProductsResponse(
            products=page, next_page_token=str(start + page_size) if more else ""
        )

    async def get_product(self, auth: Auth, product_id: str) -> product_pb2.Product:
        await self._enter("GetProduct", auth)
        if product_id not in self.products:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "no such product", error_reason="NOT_FOUND")
        return self.products[product_id]

    async def create_product(
        self, auth: Auth, request: product_pb2.CreateProductRequest
    ) -> product_pb2.Product:
        await self._enter("CreateProduct", auth)
        return self.add_product(request.sku, request.title, request.price.amount_minor)

    async def update_product(
        self, auth: Auth, request: product_pb2.UpdateProductRequest
    ) -> product_pb2.Product:
        await self._enter("UpdateProduct", auth)
        product = self.products[request.product_id]
        if request.HasField("title"):
            product.title = request.title
        return product

    async def get_stock(
        self, auth: Auth, sku: str, timeout: float | None = None
    ) -> inventory_pb2.Stock:
        await self._enter("GetStock", auth, timeout)
        if sku not in self.stock:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "no stock", error_reason="NOT_FOUND")
        return self.stock[sku]

    async def set_stock(self, auth: Auth, sku: str, available: int) -> inventory_pb2.Stock:
        await self._enter("SetStock", auth)
        self.stock[sku] = inventory_pb2.Stock(sku=sku, available=available)
        return self.stock[sku]

    async def place_order(
        self, auth: Auth, items: Sequence[tuple[str, int]], idempotency_key: str
    ) -> order_pb2.Order:
        await self._enter("PlaceOrder", auth)
        self.placed.append(idempotency_key)
        order = order_pb2.Order(
            order_id=str(uuid.uuid4()),
            status=order_pb2.ORDER_STATUS_PENDING,
            items=[
                order_pb2.OrderItem(
                    product_id=p, sku=self.products[p].sku, quantity=q, unit_price=money(999)
                )
                for p, q in items
            ],
            total=money(999 * sum(q for _, q in items)),
        )
        self.orders[order.order_id] = order
        return order

    async def get_order(self, auth: Auth, order_id: str) -> order_pb2.Order:
        await self._enter("GetOrder", auth)
        if order_id not in self.orders:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "no such order", error_reason="NOT_FOUND")
        return self.orders[order_id]

    async def list_orders(
        self, auth: Auth, page_size: int, page_token: str
    ) -> order_pb2.ListOrdersResponse:
        await self._enter("ListOrders", auth)
        orders = list(self.orders.values())
        start = int(page_token or 0)
        more = start + page_size < len(orders)
        return order_pb2.ListOrdersResponse(
            orders=orders[start : start + page_size],
            next_page_token=str(start + page_size) if more else "",
        )

    async def cancel_order(self, auth: Auth, order_id: str) -> order_pb2.Order:
        await self._enter("CancelOrder", auth)
        order = self.orders[order_id]
        order.status = order_pb2.ORDER_STATUS_CANCELLED
        return order

    async def watch_order(
        self, auth: Auth, order_id: str, max_seconds: float
    ) -> AsyncIterator[order_pb2.Order]:
        await self._enter("WatchOrder", auth)
        order = await self.get_order(auth, order_id)
        yield order
        for status in self.updates.get(order_id, []):
            if isinstance(status, BaseException):
                raise status
            if isinstance(status, float):  # a pause
                await asyncio.sleep(status)
                continue
            order = order_pb2.Order()
            order.CopyFrom(self.orders[order_id])
            order.status = status  # type: ignore[assignment]
            yield order

    async def get_balance(self, auth: Auth) -> payment_pb2.Wallet:
        await self._enter("GetBalance", auth)
        return payment_pb2.Wallet(balance=money(5000))

    async def top_up(
        self, auth: Auth, amount: money_pb2.Money, idempotency_key: str
    ) -> payment_pb2.Wallet:
        await self._enter("TopUp", auth)
        self.placed.append(idempotency_key)
        return payment_pb2.Wallet(balance=money(5000 + amount.amount_minor))


class MemorySessions:
    def __init__(self, ttl: timedelta = timedelta(hours=1)) -> None:
        self.rows: dict[str, Session] = {}
        self.ttl = ttl
        self.locks: dict[str, asyncio.Lock] = {}

    async def create(self, data: Mapping[str, Any] | None = None) -> Session:
        session = Session(new_session_id(), datetime.now(UTC) + self.ttl, dict(data or {}))
        self.rows[session.id] = session
        return session

    async def get(self, session_id: str) -> Session | None:
        session = self.rows.get(session_id)
        return session if session and session.expires_at > datetime.now(UTC) else None

    async def update(self, session_id: str, data: Mapping[str, Any]) -> Session | None:
        if await self.get(session_id) is None:
            return None
        self.rows[session_id] = Session(session_id, datetime.now(UTC) + self.ttl, dict(data))
        return self.rows[session_id]

    async def rotate(self, session_id: str) -> Session | None:
        session = await self.get(session_id)
        if session is None:
            return None
        del self.rows[session_id]
        renewed = replace(session, id=new_session_id())
        self.rows[renewed.id] = renewed
        return renewed

    async def delete(self, session_id: str) -> None:
        self.rows.pop(session_id, None)

    @asynccontextmanager
    async def refreshing(self, session_id: str) -> AsyncIterator[None]:
        async with self.locks.setdefault(session_id, asyncio.Lock()):
            yield

    async def purge_expired(self) -> int:
        expired = [k for k, s in self.rows.items() if s.expires_at <= datetime.now(UTC)]
        for key in expired:
            del self.rows[key]
        return len(expired)


class MemoryCarts:
    def __init__(self) -> None:
        self.carts: dict[uuid.UUID, dict[str, CartLine]] = {}

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        return list(self.carts.get(user_id, {}).values())

    async def put(self, user_id: uuid.UUID, line: CartLine) -> None:
        cart = self.carts.setdefault(user_id, {})
        if line.sku not in cart and len(cart) >= MAX_LINES:
            raise too_many_lines()
        cart[line.sku] = line

    async def replace(self, user_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        if len(lines) > MAX_LINES:
            raise too_many_lines()
        self.carts[user_id] = {line.sku: line for line in lines}

    async def remove(self, user_id: uuid.UUID, sku: str) -> bool:
        return self.carts.get(user_id, {}).pop(sku, None) is not None

    async def clear(self, user_id: uuid.UUID) -> None:
        self.carts.pop(user_id, None)


@dataclass
class Row:
    fingerprint: str
    created: datetime
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    done: bool = False


class MemoryIdempotency:
    """The semantics of PostgresIdempotencyStore, in memory."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    async def claim(self, user: str, key: str, fingerprint: str) -> Claim:
        row = self.rows.get((user, key))
        now = datetime.now(UTC)
        if row is None or (not row.done and now - row.created > STALE_AFTER):
            self.rows[(user, key)] = Row(fingerprint, now)
            return Claim(Outcome.NEW)
        if row.fingerprint != fingerprint:
            return Claim(Outcome.MISMATCH)
        if not row.done:
            return Claim(Outcome.IN_FLIGHT)
        return Claim(Outcome.REPLAY, row.status, json.loads(json.dumps(row.body)), row.headers)

    async def complete(
        self, user: str, key: str, status: int, body: Any, headers: Mapping[str, str]
    ) -> None:
        row = self.rows[(user, key)]
        row.status, row.body, row.headers, row.done = status, body, dict(headers), True

    async def release(self, user: str, key: str) -> None:
        row = self.rows.get((user, key))
        if row is not None and not row.done:
            del self.rows[(user, key)]

    async def purge(self) -> int:
        return 0


@dataclass
class FakeGateway:
    """The app on fakes, and an httpx client of it (no network)."""

    keys: Keys
    backends: FakeBackends
    gateway: Gateway
    client: httpx.AsyncClient

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def customer(self, user_id: uuid.UUID | None = None, **kwargs: Any) -> dict[str, str]:
        return self.bearer(self.keys.token(Role.CUSTOMER, user_id=user_id, **kwargs))

    def admin(self, **kwargs: Any) -> dict[str, str]:
        return self.bearer(self.keys.token(Role.ADMIN, **kwargs))


def fake_gateway(keys: Keys, **settings: Any) -> FakeGateway:
    gateway_settings = GatewaySettings(
        **{"pg_dsn": "postgresql://unused", "rate_limit_burst": 10_000, **settings}
    )
    backends = FakeBackends()
    gateway = Gateway(
        settings=gateway_settings,
        auth=Authenticator(keys.verifier()),
        backends=backends,
        sessions=MemorySessions(),
        carts=MemoryCarts(),
        idempotency=MemoryIdempotency(),
        anonymous_token=None,
    )
    app = create_app(gateway_settings, gateway)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
    return FakeGateway(keys, backends, gateway, client)


REASON = REASON_KEY
