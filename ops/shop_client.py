"""A small client of the whole shop, finding every service through etcd.

The seeder, the `shopctl` CLI and the e2e tests use it; it is also the
shortest example of how a caller outside the cluster talks to the system.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.common.v1 import money_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

# Each call's own deadline, for all its attempts together (ServiceClients.call).
# Reads are marked idempotent (DEADLINE_EXCEEDED may be retried too); writes are
# retried on UNAVAILABLE only (refused or never received), never when merely late.
DEADLINE = 5.0


@dataclass
class ShopClient:
    clients: ServiceClients
    token: str = ""

    @property
    def _auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def register(self, email: str, password: str) -> user_pb2.User:
        reply = await self.clients.call(
            "user",
            user_pb2_grpc.UserServiceStub,
            lambda s, t: s.Register(
                user_pb2.RegisterRequest(email=email, password=password), timeout=t
            ),
            timeout=DEADLINE,
        )
        return reply.user

    async def login(self, email: str, password: str) -> user_pb2.LoginResponse:
        reply = await self.clients.call(
            "user",
            user_pb2_grpc.UserServiceStub,
            lambda s, t: s.Login(user_pb2.LoginRequest(email=email, password=password), timeout=t),
            timeout=DEADLINE,
        )
        self.token = reply.access_token
        return reply

    async def register_or_login(self, email: str, password: str) -> user_pb2.LoginResponse:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.register(email, password)
        return await self.login(email, password)

    async def rotate_signing_key(self) -> list[user_pb2.SigningKey]:
        """Admin: a new key signs from now on; returns the published keys, newest first."""
        reply = await self.clients.call(
            "user",
            user_pb2_grpc.UserServiceStub,
            lambda s, t: s.RotateSigningKey(
                user_pb2.RotateSigningKeyRequest(), timeout=t, metadata=self._auth
            ),
            timeout=DEADLINE,
        )
        return list(reply.keys)

    async def list_signing_keys(self) -> list[user_pb2.SigningKey]:
        reply = await self.clients.call(
            "user",
            user_pb2_grpc.UserServiceStub,
            lambda s, t: s.ListSigningKeys(
                user_pb2.ListSigningKeysRequest(), timeout=t, metadata=self._auth
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return list(reply.keys)

    async def create_product(
        self, sku: str, title: str, price_minor: int, currency: str = "USD"
    ) -> product_pb2.Product:
        request = product_pb2.CreateProductRequest(
            sku=sku,
            title=title,
            price=money_pb2.Money(amount_minor=price_minor, currency=currency),
            status=product_pb2.PRODUCT_STATUS_ACTIVE,
        )
        reply = await self.clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.CreateProduct(request, timeout=t, metadata=self._auth),
            timeout=DEADLINE,
        )
        return reply.product

    async def get_product(self, product_id: str) -> product_pb2.Product:
        reply = await self.clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.GetProduct(
                product_pb2.GetProductRequest(product_id=product_id),
                timeout=t,
                metadata=self._auth,
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return reply.product

    async def all_products(self) -> list[product_pb2.Product]:
        products: list[product_pb2.Product] = []
        token = ""
        while True:
            request = product_pb2.ListProductsRequest(page_size=100, page_token=token)

            def list_page(
                stub: Any, timeout: float, request: product_pb2.ListProductsRequest = request
            ) -> Awaitable[product_pb2.ListProductsResponse]:
                # grpc's stub types describe the sync API; on an aio channel it is awaitable.
                return cast(
                    Awaitable[product_pb2.ListProductsResponse],
                    stub.ListProducts(request, timeout=timeout, metadata=self._auth),
                )

            reply = await self.clients.call(
                "product",
                product_pb2_grpc.ProductServiceStub,
                list_page,
                timeout=DEADLINE,
                idempotent=True,
            )
            products.extend(reply.products)
            token = reply.next_page_token
            if not token:
                return products

    async def set_stock(self, sku: str, available: int) -> inventory_pb2.Stock:
        reply = await self.clients.call(
            "inventory",
            inventory_pb2_grpc.InventoryServiceStub,
            lambda s, t: s.SetStock(
                inventory_pb2.SetStockRequest(sku=sku, available=available),
                timeout=t,
                metadata=self._auth,
            ),
            timeout=DEADLINE,
        )
        return reply.stock

    async def get_stock(self, sku: str) -> inventory_pb2.Stock:
        reply = await self.clients.call(
            "inventory",
            inventory_pb2_grpc.InventoryServiceStub,
            lambda s, t: s.GetStock(
                inventory_pb2.GetStockRequest(sku=sku), timeout=t, metadata=self._auth
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return reply.stock

    async def top_up(
        self, amount_minor: int, idempotency_key: str, currency: str = "USD"
    ) -> payment_pb2.Wallet:
        request = payment_pb2.TopUpRequest(
            amount=money_pb2.Money(amount_minor=amount_minor, currency=currency),
            idempotency_key=idempotency_key,
        )
        reply = await self.clients.call(
            "payment",
            payment_pb2_grpc.PaymentServiceStub,
            lambda s, t: s.TopUp(request, timeout=t, metadata=self._auth),
            # Retried on UNAVAILABLE like every call, and safe even if a first attempt did
            # land (its reply lost): the idempotency key makes a repeat a no-op.
            timeout=DEADLINE,
        )
        return reply.wallet

    async def balance(self) -> payment_pb2.Wallet:
        reply = await self.clients.call(
            "payment",
            payment_pb2_grpc.PaymentServiceStub,
            lambda s, t: s.GetBalance(
                payment_pb2.GetBalanceRequest(), timeout=t, metadata=self._auth
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return reply.wallet

    async def place_order(
        self, items: list[tuple[str, int]], idempotency_key: str
    ) -> order_pb2.Order:
        request = order_pb2.PlaceOrderRequest(
            items=[order_pb2.PlaceOrderItem(product_id=p, quantity=q) for p, q in items],
            idempotency_key=idempotency_key,
        )
        reply = await self.clients.call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.PlaceOrder(request, timeout=t, metadata=self._auth),
            # As TopUp: the idempotency key makes the retry on UNAVAILABLE safe.
            timeout=DEADLINE,
        )
        return reply.order

    async def get_order(self, order_id: str) -> order_pb2.Order:
        reply = await self.clients.call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.GetOrder(
                order_pb2.GetOrderRequest(order_id=order_id), timeout=t, metadata=self._auth
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return reply.order

    async def list_orders(self, page_size: int = 20) -> list[order_pb2.Order]:
        reply = await self.clients.call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.ListOrders(
                order_pb2.ListOrdersRequest(page_size=page_size),
                timeout=t,
                metadata=self._auth,
            ),
            timeout=DEADLINE,
            idempotent=True,
        )
        return list(reply.orders)


@contextlib.asynccontextmanager
async def connect(etcd_endpoint: str, tls_dir: Path) -> AsyncIterator[ServiceClients]:
    """Discovery plus channels, for as many ShopClients (users) as the caller wants.

    The channels are mTLS as the operator (``tls_dir``: ``ca.pem``, ``operator.pem``,
    ``operator-key.pem``), the identity of people and tools; the user is the token.
    """
    tls = ClientTLS.operator(tls_dir)
    etcd = etcd_client(etcd_endpoint, tls=tls)
    directory = ServiceDirectory(etcd)
    await directory.start()
    clients = ServiceClients(directory, tls)
    try:
        yield clients
    finally:
        await clients.close()
        await directory.stop()
        await etcd.close()
