"""OrderService over gRPC: validate, call the domain, map back. Nothing else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import grpc

from services.order.catalog import ProductCatalog
from services.order.domain import (
    Order,
    OrderItem,
    OrderStatus,
    cancel_by_customer,
    order_request,
    place_order,
    replay,
)
from services.order.events import order_cancelled, order_created
from services.order.persistence import OrderUnitOfWork
from services.order.watch import OrderStatusHub
from shared.auth.identity import Identity, current_identity
from shared.errors import InvalidArgument, NotFound
from shared.logs import journal
from shared.messaging.topics import ORDERS
from shared.messaging.unit_of_work import UnitOfWorkFactory
from shared.rpc.convert import money_to_proto, timestamp
from shared.rpc.interceptors import AccessPolicy
from shared.validation import decode_page_token, encode_page_token, page_size, parse_uuid
from shop.order.v1 import order_pb2, order_pb2_grpc

# Every RPC needs a valid token; which orders a caller sees is decided per order.
ACCESS = AccessPolicy({})

# A watcher re-reads its order this often even without a notification, in case
# one was missed (the hub's listener reconnecting, say).
WATCH_RECHECK_SECONDS = 2.0

_STATUS_TO_PROTO = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.REJECTED: order_pb2.ORDER_STATUS_REJECTED,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
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
    )


def _page_cursor(token: str) -> tuple[datetime, uuid.UUID] | None:
    cursor = decode_page_token(token)
    if cursor is None:
        return None
    moment, order_id = cursor.get("t"), cursor.get("id")
    try:
        if not isinstance(moment, str) or not isinstance(order_id, str):
            raise ValueError("cursor fields must be strings")
        after = datetime.fromisoformat(moment)
        if after.tzinfo is None:
            raise ValueError("cursor time must carry its offset")
        # In UTC, as the driver would send it: a time near year 1 or 9999 may not fit
        # (OverflowError), and no token this service issued holds one.
        return after.astimezone(UTC), uuid.UUID(order_id)
    except (ValueError, OverflowError):
        raise InvalidArgument("page_token", "is not a token this service issued") from None


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory[OrderUnitOfWork],
        catalog: ProductCatalog,
        hub: OrderStatusHub,
    ) -> None:
        self._uow = unit_of_work
        self._catalog = catalog
        self.hub = hub

    async def PlaceOrder(
        self, request: order_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.PlaceOrderResponse:
        user_id = current_identity().user_id
        wanted = order_request(
            request.idempotency_key, [(i.product_id, i.quantity) for i in request.items]
        )
        # A retry is answered from our own table, so it succeeds even while the catalog is down.
        async with self._uow(read_only=True) as uow:
            existing = await uow.orders.by_idempotency_key(user_id, wanted.idempotency_key)
        if existing is not None:
            return order_pb2.PlaceOrderResponse(order=order_to_proto(replay(existing, wanted)))
        # While product is unreachable, this may be the last known catalog (degraded mode).
        found = await self._catalog.lookup_with_fallback(wanted.product_ids, context)
        order = place_order(
            user_id=user_id,
            request=wanted,
            catalog=found.entries,
            priced_from_cache=found.from_cache,
        )
        async with self._uow() as uow:
            stored = await uow.orders.add(order)
            # Only the call that created the order starts its saga; a concurrent
            # duplicate that lost the race got the winner's order back.
            if stored.order_id == order.order_id:
                uow.outbox.add(ORDERS, order_created(stored), str(stored.order_id))
        journal("order %s placed by %s: %d lines", stored.order_id, user_id, len(stored.items))
        return order_pb2.PlaceOrderResponse(order=order_to_proto(replay(stored, wanted)))

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.GetOrderResponse:
        caller = current_identity()
        order_id = parse_uuid(request.order_id, "order_id")
        return order_pb2.GetOrderResponse(order=order_to_proto(await self._read(order_id, caller)))

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CancelOrderResponse:
        user_id = current_identity().user_id
        order_id = parse_uuid(request.order_id, "order_id")
        async with self._uow() as uow:
            # Locked: an event handler or the saga timeout may be settling it right now.
            order = await uow.orders.get(order_id, for_update=True)
            # Only the owner cancels; to anyone else the order does not exist.
            if order is None or order.user_id != user_id:
                raise _not_found(order_id)
            cancelled = cancel_by_customer(order)
            if cancelled is not order:  # a retry of a done cancel announces nothing
                await uow.orders.save(cancelled)
                uow.outbox.add(ORDERS, order_cancelled(cancelled), str(order_id))
        return order_pb2.CancelOrderResponse(order=order_to_proto(cancelled))

    async def WatchOrder(
        self, request: order_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        caller = current_identity()
        order_id = parse_uuid(request.order_id, "order_id")
        # Watching before the first read: a change committed in between still wakes us.
        with self.hub.watch(order_id) as watch:
            order = await self._read(order_id, caller)
            yield order_pb2.WatchOrderResponse(order=order_to_proto(order))
            while not order.is_final:
                await watch.wait(WATCH_RECHECK_SECONDS)
                latest = await self._read(order_id, caller)
                if latest.status is not order.status:
                    yield order_pb2.WatchOrderResponse(order=order_to_proto(latest))
                order = latest

    async def _read(self, order_id: uuid.UUID, caller: Identity) -> Order:
        """The order as ``caller`` may see it: their own, or any for an admin."""
        async with self._uow(read_only=True) as uow:
            order = await uow.orders.get(order_id)
        # Another user's order reads exactly like a missing one: ids leak nothing.
        if order is None or (order.user_id != caller.user_id and not caller.is_admin):
            raise _not_found(order_id)
        return order

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        user_id = current_identity().user_id
        limit = page_size(request.page_size)
        before = _page_cursor(request.page_token)
        async with self._uow(read_only=True) as uow:
            # One extra row tells whether another page exists.
            orders = await uow.orders.list_page(user_id=user_id, limit=limit + 1, before=before)
        next_token = ""
        if len(orders) > limit:
            orders = orders[:limit]
            last = orders[-1]
            next_token = encode_page_token(
                {"t": last.created_at.isoformat(), "id": str(last.order_id)}
            )
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in orders], next_page_token=next_token
        )


def _not_found(order_id: uuid.UUID) -> NotFound:
    return NotFound(f"order {order_id} does not exist")


def unit_of_work_factory(pool: asyncpg.Pool) -> UnitOfWorkFactory[OrderUnitOfWork]:
    return lambda read_only=False: OrderUnitOfWork(pool, read_only=read_only)
