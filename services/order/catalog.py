"""The product service as the order service sees it: prices, SKUs, and whether it sells.

Reached through discovery (ServiceClients), on the caller's own token, within a
deadline. Whatever goes wrong downstream reaches our caller as UNAVAILABLE (retry
later), never as INTERNAL: the order service itself did nothing wrong.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

import grpc

from services.order.domain import CatalogEntry
from shared.errors import DomainError, PermissionDenied, Unauthenticated, Unavailable
from shared.money import Money
from shared.rpc.client import ServiceClients, forwarded_credentials
from shop.product.v1 import product_pb2, product_pb2_grpc

log = logging.getLogger(__name__)

PRODUCT_SERVICE = "product"


class CatalogUnavailable(Unavailable):
    """The product service could not answer in time; the caller may retry."""

    reason = "CATALOG_UNAVAILABLE"


def catalog_error(error: grpc.aio.AioRpcError) -> DomainError:
    """What our caller should see when BatchGetProducts failed with ``error``."""
    code = error.code()
    # The product service rejected the caller's own token (e.g. it expired in between).
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(error.details() or "the token was rejected")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(error.details() or "the catalog refused this caller")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CatalogUnavailable("the product service did not answer in time; retry later")
    # UNAVAILABLE is an outage; INTERNAL/UNKNOWN usually are too (its database is down).
    # Anything else is a contract break we cannot fix by retrying, but it is still
    # not the caller's fault, so it is logged here and reported as unavailable.
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        log.warning("BatchGetProducts failed: %s %s", code, error.details())
    return CatalogUnavailable(f"the product service is unavailable ({code.name}); retry later")


def catalog_entry(product: product_pb2.Product) -> CatalogEntry:
    return CatalogEntry(
        product_id=uuid.UUID(product.product_id),
        sku=product.sku,
        price=Money(product.price.amount_minor, product.price.currency),
        sellable=product.status == product_pb2.PRODUCT_STATUS_ACTIVE,
    )


class ProductCatalog:
    def __init__(
        self, clients: ServiceClients, *, deadline_seconds: float | Callable[[], float]
    ) -> None:
        self._clients = clients
        # A callable is read on every lookup: the config center's knob, changed live.
        self._deadline_seconds = (
            deadline_seconds if callable(deadline_seconds) else lambda: deadline_seconds
        )

    async def lookup(
        self, product_ids: Sequence[uuid.UUID], context: grpc.aio.ServicerContext
    ) -> dict[uuid.UUID, CatalogEntry]:
        """The found products by id; ids the catalog does not know are simply absent."""
        loop = asyncio.get_running_loop()
        budget = self._deadline_seconds()
        remaining = context.time_remaining()
        if remaining is not None:  # never wait longer than our own caller will
            budget = min(budget, remaining)
        # One deadline for all attempts: ServiceClients may retry on another instance.
        deadline = loop.time() + budget
        request = product_pb2.BatchGetProductsRequest(product_ids=[str(i) for i in product_ids])
        metadata = forwarded_credentials(context)

        async def batch_get(
            stub: product_pb2_grpc.ProductServiceAsyncStub,
        ) -> product_pb2.BatchGetProductsResponse:
            timeout = max(deadline - loop.time(), 0.0)
            return await stub.BatchGetProducts(request, timeout=timeout, metadata=metadata)

        try:
            response = await self._clients.call(
                PRODUCT_SERVICE, product_pb2_grpc.ProductServiceStub, batch_get
            )
        except grpc.aio.AioRpcError as error:
            raise catalog_error(error) from error
        return {entry.product_id: entry for entry in map(catalog_entry, response.products)}
