"""The product service as the order service sees it: prices, SKUs, and whether it sells.

Reached through discovery (ServiceClients), on the caller's own token, within a
deadline. Whatever goes wrong downstream reaches our caller as UNAVAILABLE (retry
later), never as INTERNAL: the order service itself did nothing wrong.

Degraded mode (``lookup_with_fallback``): every entry a lookup returns is remembered
with the moment it was seen (``LastKnownCatalog``, bounded). While the product
service is unreachable and the order's ``degradation`` knob is on, a lookup whose
products all have an entry at most ``max_staleness_seconds`` old is answered from
those entries, and says so; otherwise it fails as before, saying why. A refused
token (UNAUTHENTICATED, PERMISSION_DENIED) is never answered from memory.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import grpc

from services.order.domain import CatalogEntry
from services.order.knobs import Degradation
from services.order.use_cases import CatalogLookup, Credentials
from shared.errors import DomainError, PermissionDenied, Unauthenticated, Unavailable
from shared.money import Money
from shared.rpc.client import ServiceClients
from shop.common.v1.error_reason_pb2 import ErrorReason
from shop.product.v1 import product_pb2, product_pb2_grpc

log = logging.getLogger(__name__)

PRODUCT_SERVICE = "product"


class CatalogUnavailable(Unavailable):
    """The product service could not answer in time; the caller may retry."""

    reason = ErrorReason.ERROR_REASON_CATALOG_UNAVAILABLE


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


# The last known entries kept for degraded mode: ~100,000 products of a few hundred
# bytes each, so tens of MB at most; the product seen least recently goes first.
LAST_KNOWN_MAX_ENTRIES = 100_000
# Products named one by one in a refusal's message; the rest are counted.
LISTED_IN_REFUSAL = 5


class LastKnownCatalog:
    """The last catalog entry seen for each product and when (the process's monotonic clock).

    Bounded: past ``max_entries`` the product seen least recently is forgotten.
    """

    def __init__(
        self,
        max_entries: int = LAST_KNOWN_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[uuid.UUID, tuple[CatalogEntry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, entries: Iterable[CatalogEntry]) -> None:
        now = self._clock()
        for entry in entries:
            self._seen[entry.product_id] = (entry, now)
            self._seen.move_to_end(entry.product_id)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def forget(self, product_ids: Iterable[uuid.UUID]) -> None:
        """Products the live catalog answered it does not know (any more)."""
        for product_id in product_ids:
            self._seen.pop(product_id, None)

    def age(self, product_id: uuid.UUID) -> float | None:
        """Seconds since ``product_id`` was last seen; None if it never was (or was evicted)."""
        seen = self._seen.get(product_id)
        return None if seen is None else self._clock() - seen[1]

    def fresh(
        self, product_ids: Sequence[uuid.UUID], max_age_seconds: float
    ) -> tuple[dict[uuid.UUID, CatalogEntry], list[str]]:
        """The entries at most ``max_age_seconds`` old, and why each other product has none."""
        now = self._clock()
        found: dict[uuid.UUID, CatalogEntry] = {}
        problems: list[str] = []
        for product_id in product_ids:
            seen = self._seen.get(product_id)
            if seen is None:
                problems.append(f"no price of product {product_id} is known")
            elif now - seen[1] > max_age_seconds:
                problems.append(
                    f"the last known price of product {product_id} is older than"
                    f" {max_age_seconds:g} s ({now - seen[1]:.0f} s)"
                )
            else:
                found[product_id] = seen[0]
        return found, problems


def refusal(error: Unavailable, why: str) -> Unavailable:
    """``error`` (the outage, as our caller sees it), saying why it was not degraded."""
    message = f"{error.message}; not priced from the last known prices: {why}"
    try:  # the same class, so the same error-reason reaches the caller
        return type(error)(message)
    except TypeError:  # a subclass built from other arguments
        return CatalogUnavailable(message)


class ProductCatalog:
    def __init__(
        self,
        clients: ServiceClients,
        *,
        deadline_seconds: float | Callable[[], float],
        degradation: Degradation | Callable[[], Degradation] | None = None,
        last_known: LastKnownCatalog | None = None,
    ) -> None:
        self._clients = clients
        # A callable is read on every lookup: the config center's knob, changed live.
        self._deadline_seconds = (
            deadline_seconds if callable(deadline_seconds) else lambda: deadline_seconds
        )
        # Read once per lookup that fails, like the deadline: the config center's knobs.
        fixed = degradation if isinstance(degradation, Degradation) else Degradation()
        self._degradation = degradation if callable(degradation) else lambda: fixed
        self.last_known = last_known if last_known is not None else LastKnownCatalog()

    async def lookup_with_fallback(
        self, product_ids: Sequence[uuid.UUID], credentials: Credentials
    ) -> CatalogLookup:
        """``lookup``, remembered; while product is unreachable, the last known entries
        if degradation is on and every product has one fresh enough.

        Raises ``lookup``'s errors; an outage not answered from memory stays
        UNAVAILABLE, its message saying why it was not.
        """
        try:
            entries = await self.lookup(product_ids, credentials)
        except Unavailable as error:  # CatalogUnavailable, or no instance registered
            return self._degraded(product_ids, error)
        self.last_known.remember(entries.values())
        self.last_known.forget(i for i in product_ids if i not in entries)
        return CatalogLookup(entries)

    def _degraded(self, product_ids: Sequence[uuid.UUID], error: Unavailable) -> CatalogLookup:
        degradation = self._degradation()  # once: one consistent view for this call
        if not degradation.enabled:
            raise refusal(error, "degradation is off") from error
        entries, problems = self.last_known.fresh(product_ids, degradation.max_staleness_seconds)
        if problems:
            listed = "; ".join(problems[:LISTED_IN_REFUSAL])
            if len(problems) > LISTED_IN_REFUSAL:
                listed += f"; and {len(problems) - LISTED_IN_REFUSAL} more products"
            raise refusal(error, listed) from error
        oldest = max((self.last_known.age(i) or 0.0) for i in product_ids)
        log.warning(
            "product unavailable (%s); priced %d products from the last known catalog"
            " (oldest seen %.1f s ago)", error.message, len(entries), oldest,
        )  # fmt: skip
        return CatalogLookup(entries, from_cache=True)

    async def lookup(
        self, product_ids: Sequence[uuid.UUID], credentials: Credentials
    ) -> dict[uuid.UUID, CatalogEntry]:
        """The found products by id; ids the catalog does not know are simply absent."""
        request = product_pb2.BatchGetProductsRequest(product_ids=[str(i) for i in product_ids])

        async def batch_get(
            stub: product_pb2_grpc.ProductServiceAsyncStub, timeout: float
        ) -> product_pb2.BatchGetProductsResponse:
            return await stub.BatchGetProducts(request, timeout=timeout, metadata=credentials)

        try:
            response = await self._clients.call(
                PRODUCT_SERVICE,
                product_pb2_grpc.ProductServiceStub,
                batch_get,
                # One deadline for all attempts, never past our own caller's (less the
                # margin): ServiceClients caps it and hands each attempt what is left.
                timeout=self._deadline_seconds(),
                idempotent=True,  # a read: a late answer may be asked for again
            )
        except grpc.aio.AioRpcError as error:
            raise catalog_error(error) from error
        return {entry.product_id: entry for entry in map(catalog_entry, response.products)}
