"""InventoryService over gRPC: proto to use case and back, and who may call what. Nothing else."""

from __future__ import annotations

import grpc

from services.inventory import use_cases
from services.inventory.domain import Stock
from services.inventory.use_cases import UnitOfWorkFactory
from shared.auth.scopes import CATALOG_READ, STOCK_ADMIN
from shared.proto_convert import timestamp
from shared.rpc.interceptors.auth import OPERATOR_OR_GATEWAY, Access, AccessPolicy
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

_SERVICE = "/shop.inventory.v1.InventoryService/"
ACCESS = AccessPolicy(
    {
        _SERVICE + "SetStock": Access.ADMIN,
    },
    # An admin's tool, or the storefront's admin page on the admin's behalf.
    parties={_SERVICE + "SetStock": OPERATOR_OR_GATEWAY},
    scopes={
        _SERVICE + "SetStock": STOCK_ADMIN,
        _SERVICE + "GetStock": CATALOG_READ,
        _SERVICE + "BatchGetStock": CATALOG_READ,
    },
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
    def __init__(self, unit_of_work: UnitOfWorkFactory) -> None:
        self._uow = unit_of_work

    async def SetStock(
        self, request: inventory_pb2.SetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.SetStockResponse:
        stock = await use_cases.set_stock(self._uow, request.sku, request.available)
        return inventory_pb2.SetStockResponse(stock=stock_to_proto(stock))

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.GetStockResponse:
        stock = await use_cases.get_stock(self._uow, request.sku)
        return inventory_pb2.GetStockResponse(stock=stock_to_proto(stock))

    async def BatchGetStock(
        self, request: inventory_pb2.BatchGetStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.BatchGetStockResponse:
        stocks, missing = await use_cases.batch_get_stock(self._uow, request.skus)
        return inventory_pb2.BatchGetStockResponse(
            stocks=[stock_to_proto(s) for s in stocks], missing_skus=missing
        )
