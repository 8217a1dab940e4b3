"""InventoryService over gRPC: validate, call the repository, map back. Nothing else."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import grpc

from services.inventory.domain import Stock, parse_sku, parse_skus, require_available
from services.inventory.persistence import InventoryUnitOfWork
from shared.errors import NotFound
from shared.proto_convert import timestamp
from shared.rpc.interceptors.auth import OPERATOR_ONLY, Access, AccessPolicy
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

_SERVICE = "/shop.inventory.v1.InventoryService/"
ACCESS = AccessPolicy(
    {
        _SERVICE + "SetStock": Access.ADMIN,
    },
    parties={_SERVICE + "SetStock": OPERATOR_ONLY},
)


def stock_to_proto(s: Stock) -> inventory_pb2.Stock:
    return inventory_pb2.Stock(
        sku=s.sku,
        available=s.available,
        reserved=s.reserved,
        sold=s.sold,
        total_received=s.total_received,
        updated_at=timestamp(s.updated_at),
    )


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, unit_of_work: Callable[[], InventoryUnitOfWork]) -> None:
        self._uow = unit_of_work

    async def SetStock(
        self, request: inventory_pb2.SetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.SetStockResponse:
        """Creates the SKU's row on first use, so an unknown SKU is not NOT_FOUND here."""
        sku = parse_sku(request.sku)
        available = require_available(request.available)
        async with self._uow() as uow:
            stock = await uow.stock.set_available(sku, available)
        return inventory_pb2.SetStockResponse(stock=stock_to_proto(stock))

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.GetStockResponse:
        sku = parse_sku(request.sku)
        async with self._uow() as uow:
            stock = await uow.stock.get(sku)
        if stock is None:
            raise NotFound(f"no stock is recorded for sku {sku!r}")
        return inventory_pb2.GetStockResponse(stock=stock_to_proto(stock))

    async def BatchGetStock(
        self, request: inventory_pb2.BatchGetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.BatchGetStockResponse:
        skus = parse_skus(request.skus)
        async with self._uow() as uow:
            stocks = await uow.stock.get_many(skus)
        found = {s.sku for s in stocks}
        return inventory_pb2.BatchGetStockResponse(
            stocks=[stock_to_proto(s) for s in stocks],
            missing_skus=[sku for sku in skus if sku not in found],
        )


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], InventoryUnitOfWork]:
    return lambda: InventoryUnitOfWork(pool)
