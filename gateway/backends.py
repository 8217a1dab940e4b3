"""The gRPC calls the gateway makes: one async method per RPC it uses.

Every call goes through the kit's ``ServiceClients.call`` (discovery, a deadline for
all attempts, the breaker per service, retries of UNAVAILABLE, mutual TLS as
``gateway``), and carries the caller's own bearer token as ``authorization`` metadata:
each service checks it again (defence in depth), so the gateway never calls with more
authority than the person who asked. Reads are marked idempotent (a late answer may be
asked for again); writes are retried only when refused, and PlaceOrder and TopUp carry
the client's Idempotency-Key, so even that retry is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import grpc

from shared.rpc.client import ServiceClients
from shop.common.v1 import money_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

log = logging.getLogger(__name__)

Auth = tuple[tuple[str, str], ...]
ReplyT = TypeVar("ReplyT")
# A watch that ends with UNAVAILABLE (the order instance is stopping) is opened again
# on another instance this many times: the order service asks its watchers to do so.
WATCH_RECONNECTS = 3


class Backends(Protocol):
    """What the routes need of the services (the unit tests give a fake of it)."""

    async def list_products(
        self, auth: Auth, page_size: int, page_token: str, status: int, query: str = ""
    ) -> product_pb2.ListProductsResponse: ...
    async def get_product(self, auth: Auth, product_id: str) -> product_pb2.Product: ...
    async def create_product(
        self, auth: Auth, request: product_pb2.CreateProductRequest
    ) -> product_pb2.Product: ...
    async def update_product(
        self, auth: Auth, request: product_pb2.UpdateProductRequest
    ) -> product_pb2.Product: ...
    async def get_stock(
        self, auth: Auth, sku: str, timeout: float | None = None
    ) -> inventory_pb2.Stock: ...
    async def set_stock(self, auth: Auth, sku: str, available: int) -> inventory_pb2.Stock: ...
    async def place_order(
        self, auth: Auth, items: Sequence[tuple[str, int]], idempotency_key: str
    ) -> order_pb2.Order: ...
    async def get_order(self, auth: Auth, order_id: str) -> order_pb2.Order: ...
    async def list_orders(
        self, auth: Auth, page_size: int, page_token: str
    ) -> order_pb2.ListOrdersResponse: ...
    async def cancel_order(self, auth: Auth, order_id: str) -> order_pb2.Order: ...
    def watch_order(
        self, auth: Auth, order_id: str, max_seconds: float
    ) -> AsyncIterator[order_pb2.Order]: ...
    async def get_balance(self, auth: Auth) -> payment_pb2.Wallet: ...
    async def top_up(
        self, auth: Auth, amount: money_pb2.Money, idempotency_key: str
    ) -> payment_pb2.Wallet: ...


class GrpcBackends:
    """``Backends`` on the real services."""

    def __init__(self, clients: ServiceClients, timeout: float) -> None:
        self.clients = clients
        self.timeout = timeout

    async def _call(
        self,
        service: str,
        stub_type: Callable[[grpc.aio.Channel], Any],
        invoke: Callable[[Any, float], Any],
        *,
        idempotent: bool,
        timeout: float | None = None,
    ) -> Any:
        # grpc's stub types describe the sync API; on an aio channel each call is awaitable.
        def awaitable(stub: Any, left: float) -> Awaitable[Any]:
            return cast(Awaitable[Any], invoke(stub, left))

        return await self.clients.call(
            service,
            stub_type,
            awaitable,
            timeout=timeout if timeout is not None else self.timeout,
            idempotent=idempotent,
        )

    # --- product ---------------------------------------------------------------------------

    async def list_products(
        self, auth: Auth, page_size: int, page_token: str, status: int, query: str = ""
    ) -> product_pb2.ListProductsResponse:
        request = product_pb2.ListProductsRequest(
            page_size=page_size,
            page_token=page_token,
            status=status,  # type: ignore[arg-type]
            query=query,
        )
        reply: product_pb2.ListProductsResponse = await self._call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.ListProducts(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return reply

    async def get_product(self, auth: Auth, product_id: str) -> product_pb2.Product:
        request = product_pb2.GetProductRequest(product_id=product_id)
        reply = await self._call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.GetProduct(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return cast(product_pb2.Product, reply.product)

    async def create_product(
        self, auth: Auth, request: product_pb2.CreateProductRequest
    ) -> product_pb2.Product:
        reply = await self._call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.CreateProduct(request, timeout=t, metadata=auth),
            idempotent=False,
        )
        return cast(product_pb2.Product, reply.product)

    async def update_product(
        self, auth: Auth, request: product_pb2.UpdateProductRequest
    ) -> product_pb2.Product:
        reply = await self._call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.UpdateProduct(request, timeout=t, metadata=auth),
            idempotent=False,
        )
        return cast(product_pb2.Product, reply.product)

    # --- inventory -------------------------------------------------------------------------

    async def get_stock(
        self, auth: Auth, sku: str, timeout: float | None = None
    ) -> inventory_pb2.Stock:
        request = inventory_pb2.GetStockRequest(sku=sku)
        reply = await self._call(
            "inventory",
            inventory_pb2_grpc.InventoryServiceStub,
            lambda s, t: s.GetStock(request, timeout=t, metadata=auth),
            idempotent=True,
            timeout=timeout,
        )
        return cast(inventory_pb2.Stock, reply.stock)

    async def set_stock(self, auth: Auth, sku: str, available: int) -> inventory_pb2.Stock:
        request = inventory_pb2.SetStockRequest(sku=sku, available=available)
        reply = await self._call(
            "inventory",
            inventory_pb2_grpc.InventoryServiceStub,
            # Setting an absolute level twice leaves it where once would.
            lambda s, t: s.SetStock(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return cast(inventory_pb2.Stock, reply.stock)

    # --- order -----------------------------------------------------------------------------

    async def place_order(
        self, auth: Auth, items: Sequence[tuple[str, int]], idempotency_key: str
    ) -> order_pb2.Order:
        request = order_pb2.PlaceOrderRequest(
            items=[order_pb2.PlaceOrderItem(product_id=p, quantity=q) for p, q in items],
            idempotency_key=idempotency_key,
        )
        reply = await self._call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.PlaceOrder(request, timeout=t, metadata=auth),
            idempotent=False,
        )
        return cast(order_pb2.Order, reply.order)

    async def get_order(self, auth: Auth, order_id: str) -> order_pb2.Order:
        request = order_pb2.GetOrderRequest(order_id=order_id)
        reply = await self._call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.GetOrder(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return cast(order_pb2.Order, reply.order)

    async def list_orders(
        self, auth: Auth, page_size: int, page_token: str
    ) -> order_pb2.ListOrdersResponse:
        request = order_pb2.ListOrdersRequest(page_size=page_size, page_token=page_token)
        reply: order_pb2.ListOrdersResponse = await self._call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            lambda s, t: s.ListOrders(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return reply

    async def cancel_order(self, auth: Auth, order_id: str) -> order_pb2.Order:
        request = order_pb2.CancelOrderRequest(order_id=order_id)
        reply = await self._call(
            "order",
            order_pb2_grpc.OrderServiceStub,
            # Cancelling a cancelled order returns it unchanged: safe to repeat.
            lambda s, t: s.CancelOrder(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return cast(order_pb2.Order, reply.order)

    async def watch_order(
        self, auth: Auth, order_id: str, max_seconds: float
    ) -> AsyncIterator[order_pb2.Order]:
        """The order now, then each change, until a final status (the stream ends) or
        ``max_seconds``. Opened again on another instance when one stops under it."""
        request = order_pb2.WatchOrderRequest(order_id=order_id)
        deadline = asyncio.get_running_loop().time() + max_seconds
        for attempt in range(WATCH_RECONNECTS + 1):
            instance = self.clients.directory.pick("order")
            stub = order_pb2_grpc.OrderServiceStub(self.clients.channel(instance))
            left = max(0.001, deadline - asyncio.get_running_loop().time())
            call = cast(Any, stub.WatchOrder(request, timeout=left, metadata=auth))
            try:
                async for reply in call:
                    yield reply.order
                return
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE or attempt == WATCH_RECONNECTS:
                    raise
                log.info("watch of order %s ended UNAVAILABLE; watching again", order_id)
                self.clients.directory.cache.eject(instance, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    call.cancel()

    # --- payment ---------------------------------------------------------------------------

    async def get_balance(self, auth: Auth) -> payment_pb2.Wallet:
        request = payment_pb2.GetBalanceRequest()
        reply = await self._call(
            "payment",
            payment_pb2_grpc.PaymentServiceStub,
            lambda s, t: s.GetBalance(request, timeout=t, metadata=auth),
            idempotent=True,
        )
        return cast(payment_pb2.Wallet, reply.wallet)

    async def top_up(
        self, auth: Auth, amount: money_pb2.Money, idempotency_key: str
    ) -> payment_pb2.Wallet:
        request = payment_pb2.TopUpRequest(amount=amount, idempotency_key=idempotency_key)
        reply = await self._call(
            "payment",
            payment_pb2_grpc.PaymentServiceStub,
            lambda s, t: s.TopUp(request, timeout=t, metadata=auth),
            idempotent=False,
        )
        return cast(payment_pb2.Wallet, reply.wallet)
