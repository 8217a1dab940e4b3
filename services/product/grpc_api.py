"""ProductService over gRPC: the access policy, and requests and replies mapped to and
from the use cases. Nothing else."""

from __future__ import annotations

import grpc

from services.product import use_cases
from services.product.domain import Product, ProductStatus
from services.product.use_cases import ProductReader, UnitOfWorkFactory
from shared.auth.scopes import CATALOG_ADMIN, CATALOG_READ
from shared.errors import InvalidArgument
from shared.proto_convert import money_from_proto, money_to_proto, timestamp
from shared.rpc.interceptors.auth import OPERATOR_OR_GATEWAY, Access, AccessPolicy
from shared.tls import OPERATOR
from shared.validation import page_size, parse_uuid, require_batch
from shop.product.v1 import product_pb2, product_pb2_grpc

_SERVICE = "/shop.product.v1.ProductService/"
ACCESS = AccessPolicy(
    {
        _SERVICE + "CreateProduct": Access.ADMIN,
        _SERVICE + "UpdateProduct": Access.ADMIN,
    },
    parties={
        # An admin's tool, or the storefront's admin page on the admin's behalf.
        _SERVICE + "CreateProduct": OPERATOR_OR_GATEWAY,
        _SERVICE + "UpdateProduct": OPERATOR_OR_GATEWAY,
        # Of the services, only order prices lines; people and tools may look too.
        _SERVICE + "BatchGetProducts": frozenset({"order", OPERATOR}),
    },
    scopes={
        _SERVICE + "CreateProduct": CATALOG_ADMIN,
        _SERVICE + "UpdateProduct": CATALOG_ADMIN,
        _SERVICE + "GetProduct": CATALOG_READ,
        _SERVICE + "BatchGetProducts": CATALOG_READ,
        _SERVICE + "ListProducts": CATALOG_READ,
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
    def __init__(self, unit_of_work: UnitOfWorkFactory, reads: ProductReader) -> None:
        self._uow = unit_of_work
        self._reads = reads

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.CreateProductResponse:
        product = await use_cases.create_product(
            self._uow,
            sku=request.sku,
            title=request.title,
            description=request.description,
            price=money_from_proto(request.price, "price"),
            status=_status(request.status),
        )
        return product_pb2.CreateProductResponse(product=product_to_proto(product))

    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.UpdateProductResponse:
        product_id = parse_uuid(request.product_id, "product_id")
        price = money_from_proto(request.price, "price") if request.HasField("price") else None
        product = await use_cases.update_product(
            self._uow,
            product_id,
            title=request.title if request.HasField("title") else None,
            description=request.description if request.HasField("description") else None,
            price=price,
            status=_status(request.status),
        )
        return product_pb2.UpdateProductResponse(product=product_to_proto(product))

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.GetProductResponse:
        product_id = parse_uuid(request.product_id, "product_id")
        product = await use_cases.get_product(self._reads, product_id)
        return product_pb2.GetProductResponse(product=product_to_proto(product))

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.BatchGetProductsResponse:
        raw_ids = require_batch(request.product_ids, "product_ids", max_items=MAX_BATCH)
        ids = [parse_uuid(raw, f"product_ids[{i}]") for i, raw in enumerate(raw_ids)]
        products, missing = await use_cases.batch_get_products(self._reads, ids)
        return product_pb2.BatchGetProductsResponse(
            products=[product_to_proto(p) for p in products],
            missing_product_ids=[str(i) for i in missing],
        )

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListProductsResponse:
        page = await use_cases.list_products(
            self._uow,
            limit=page_size(request.page_size),
            status=_status(request.status),
            page_token=request.page_token,
            query=request.query,
        )
        return product_pb2.ListProductsResponse(
            products=[product_to_proto(p) for p in page.products],
            next_page_token=page.next_page_token,
        )
