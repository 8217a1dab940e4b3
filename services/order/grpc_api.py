"""OrderService over gRPC: proto in, a use case, proto out; and who may call what."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.order import use_cases
from services.order.adapters.watch_hub import OrderStatusHub
from services.order.domain import Order, OrderItem, OrderStatus, OrderStep
from services.order.use_cases import Catalog, UnitOfWorkFactory
from shared.auth.identity import current_identity
from shared.auth.scopes import ORDERS_READ, ORDERS_WRITE
from shared.proto_convert import money_to_proto, timestamp
from shared.rpc.client import forwarded_credentials
from shared.rpc.interceptors.auth import AccessPolicy
from shop.order.v1 import order_pb2, order_pb2_grpc

_SERVICE = "/shop.order.v1.OrderService/"
# Every RPC needs a valid token with the scope of what it does; which orders a caller
# sees is decided per order.
ACCESS = AccessPolicy(
    {},
    scopes={
        _SERVICE + "PlaceOrder": ORDERS_WRITE,
        _SERVICE + "CancelOrder": ORDERS_WRITE,
        _SERVICE + "GetOrder": ORDERS_READ,
        _SERVICE + "ListOrders": ORDERS_READ,
        _SERVICE + "WatchOrder": ORDERS_READ,
    },
)

# A watcher re-reads its order this often even without a notification, in case
# one was missed (the hub's listener reconnecting, say).
WATCH_RECHECK_SECONDS = 2.0

_STATUS_TO_PROTO = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.REJECTED: order_pb2.ORDER_STATUS_REJECTED,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}
_STEP_TO_PROTO = {
    OrderStep.PLACED: order_pb2.ORDER_STEP_PLACED,
    OrderStep.RESERVED: order_pb2.ORDER_STEP_RESERVED,
    OrderStep.CHARGED: order_pb2.ORDER_STEP_CHARGED,
    OrderStep.COMMITTED: order_pb2.ORDER_STEP_COMMITTED,
}


def order_item_to_proto(item: OrderItem) -> order_pb2.OrderItem:
    return order_pb2.OrderItem(
        product_id=str(item.product_id),
        sku=item.sku,
        quantity=item.quantity,
        unit_price=money_to_proto(item.unit_price),
    )


def order_to_proto(order: Order) -> order_pb2.Order:
    return order_pb2.Order(
        order_id=str(order.order_id),
        user_id=str(order.user_id),
        status=_STATUS_TO_PROTO[order.status],
        items=[order_item_to_proto(i) for i in order.items],
        total=money_to_proto(order.total),
        created_at=timestamp(order.created_at),
        updated_at=timestamp(order.updated_at),
        status_reason=order.status_reason,
        priced_from_cache=order.priced_from_cache,
        step=_STEP_TO_PROTO[order.step],
    )


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(
        self, unit_of_work: UnitOfWorkFactory, catalog: Catalog, hub: OrderStatusHub
    ) -> None:
        self._uow = unit_of_work
        self._catalog = catalog
        self.hub = hub

    async def PlaceOrder(
        self, request: order_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.PlaceOrderResponse:
        order = await use_cases.place(
            self._uow,
            self._catalog,
            user_id=current_identity().user_id,
            idempotency_key=request.idempotency_key,
            items=[(i.product_id, i.quantity) for i in request.items],
            credentials=forwarded_credentials(context),
        )
        return order_pb2.PlaceOrderResponse(order=order_to_proto(order))

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.GetOrderResponse:
        order = await use_cases.get(self._uow, request.order_id, current_identity())
        return order_pb2.GetOrderResponse(order=order_to_proto(order))

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CancelOrderResponse:
        order = await use_cases.cancel(self._uow, request.order_id, current_identity().user_id)
        return order_pb2.CancelOrderResponse(order=order_to_proto(order))

    async def WatchOrder(
        self, request: order_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        changes = use_cases.watch(
            self._uow, self.hub, request.order_id, current_identity(), WATCH_RECHECK_SECONDS
        )
        async for order in changes:
            yield order_pb2.WatchOrderResponse(order=order_to_proto(order))

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        orders, next_token = await use_cases.list_page(
            self._uow, current_identity().user_id, request.page_size, request.page_token
        )
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in orders], next_page_token=next_token
        )
