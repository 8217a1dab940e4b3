"""ProductService over gRPC: validate, call the domain, map back. Nothing else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import grpc

from services.product.adapters.catalog_cache import CatalogCache
from services.product.domain import Product, ProductStatus, new_product
from services.product.persistence import ProductReads, ProductUnitOfWork
from shared.errors import InvalidArgument, NotFound
from shared.rpc.convert import money_from_proto, money_to_proto, timestamp
from shared.rpc.interceptors import OPERATOR, OPERATOR_ONLY, Access, AccessPolicy
from shared.validation import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_batch,
)
from shop.product.v1 import product_pb2, product_pb2_grpc

_SERVICE = "/shop.product.v1.ProductService/"
ACCESS = AccessPolicy(
    {
        _SERVICE + "CreateProduct": Access.ADMIN,
        _SERVICE + "UpdateProduct": Access.ADMIN,
    },
    parties={
        _SERVICE + "CreateProduct": OPERATOR_ONLY,
        _SERVICE + "UpdateProduct": OPERATOR_ONLY,
        # Of the services, only order prices lines; people and tools may look too.
        _SERVICE + "BatchGetProducts": frozenset({"order", OPERATOR}),
    },
)

_STATUS_FROM_PROTO = {
    product_pb2.PRODUCT_STATUS_DRAFT: ProductStatus.DRAFT,
    product_pb2.PRODUCT_STATUS_ACTIVE: ProductStatus.ACTIVE,
    product_pb2.PRODUCT_STATUS_ARCHIVED: ProductStatus.ARCHIVED,
}
_STATUS_TO_PROTO = {v: k for k, v in _STATUS_FROM_PROTO.items()}
MAX_BATCH = 100


def product_to_proto(p: Product) -> product_pb2.Product:
    return product_pb2.Product(
        product_id=str(p.product_id),
        sku=p.sku,
        title=p.title,
        description=p.description,
        price=money_to_proto(p.price),
        status=_STATUS_TO_PROTO[p.status],
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
    )


def _status(value: int, field: str = "status") -> ProductStatus | None:
    if value == product_pb2.PRODUCT_STATUS_UNSPECIFIED:
        return None
    status = _STATUS_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if status is None:
        raise InvalidArgument(field, f"unknown status {value}")
    return status


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, unit_of_work: Callable[[], ProductUnitOfWork], reads: ProductReads) -> None:
        self._uow = unit_of_work
        self._reads = reads

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.CreateProductResponse:
        product = new_product(
            sku=request.sku,
            title=request.title,
            description=request.description,
            price=money_from_proto(request.price, "price"),
            status=_status(request.status) or ProductStatus.ACTIVE,
        )
        async with self._uow() as uow:
            await uow.products.add(product)
        return product_pb2.CreateProductResponse(product=product_to_proto(product))

    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.UpdateProductResponse:
        product_id = parse_uuid(request.product_id, "product_id")
        price = money_from_proto(request.price, "price") if request.HasField("price") else None
        status = _status(request.status)
        async with self._uow() as uow:
            product = await uow.products.get(product_id, for_update=True)
            if product is None:
                raise NotFound(f"product {product_id} does not exist")
            product = product.revise(
                title=request.title if request.HasField("title") else None,
                description=request.description if request.HasField("description") else None,
                price=price,
                status=status,
            )
            await uow.products.save(product)
        return product_pb2.UpdateProductResponse(product=product_to_proto(product))

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.GetProductResponse:
        product_id = parse_uuid(request.product_id, "product_id")
        product = await self._reads.get(product_id)
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        return product_pb2.GetProductResponse(product=product_to_proto(product))

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.BatchGetProductsResponse:
        raw_ids = require_batch(request.product_ids, "product_ids", max_items=MAX_BATCH)
        ids = [parse_uuid(raw, f"product_ids[{i}]") for i, raw in enumerate(raw_ids)]
        products = await self._reads.get_many(ids)
        found = {p.product_id for p in products}
        return product_pb2.BatchGetProductsResponse(
            products=[product_to_proto(p) for p in products],
            missing_product_ids=[str(i) for i in ids if i not in found],
        )

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListProductsResponse:
        limit = page_size(request.page_size)
        status = _status(request.status)
        cursor = decode_page_token(request.page_token)
        after = None
        if cursor is not None:
            try:
                moment = datetime.fromisoformat(cursor["t"])
                if moment.tzinfo is None:
                    raise ValueError("cursor time must carry its offset")
                # In UTC, as the driver would send it: a time near year 1 or 9999 may not
                # fit (OverflowError), and no token this service issued holds one.
                after = (moment.astimezone(UTC), parse_uuid(cursor["id"], "page_token"))
            except (KeyError, TypeError, ValueError, OverflowError):
                raise InvalidArgument("page_token", "is not a token this service issued") from None
        async with self._uow() as uow:
            # One extra row tells whether another page exists.
            products = await uow.products.list_page(limit=limit + 1, status=status, after=after)
        next_token = ""
        if len(products) > limit:
            products = products[:limit]
            last = products[-1]
            next_token = encode_page_token(
                {"t": last.created_at.isoformat(), "id": str(last.product_id)}
            )
        return product_pb2.ListProductsResponse(
            products=[product_to_proto(p) for p in products], next_page_token=next_token
        )


def unit_of_work_factory(
    pool: asyncpg.Pool, cache: CatalogCache | None = None
) -> Callable[[], ProductUnitOfWork]:
    return lambda: ProductUnitOfWork(pool, cache)
