"""Asks the payment provider before the transaction that books its answers.

The consumer calls ``authorize`` (its preparer for InventoryReserved) with a
batch's events, outside any transaction: the batch's authorisations run
concurrently, at most ``concurrency`` at once, so no wallet row stays locked
while the provider thinks, and a slow provider costs one latency per batch, not
one per event. The handler inside the transaction then only reads the answer.

Charging at most once per order rests on two keys:

- the provider's idempotency key is the order id: a retry after an error or a
  lost reply, a redelivered event, a racing duplicate, all get the answer the
  provider recorded the first time, and no second charge;
- the shop's own record is one payment row per order, claimed in the handling
  transaction: whatever the provider says, the wallet is debited once.

A call that fails (ProviderUnavailable) or does not answer within ``timeout``
is asked again with the same key, ``attempts`` times in all. If it still has no
answer, the whole batch fails as an outage: the consumer reads it again later,
and nothing is charged, booked or dead-lettered meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict

from services.payment.adapters.provider import (
    PaymentProviderSimulator,
    ProviderTimeout,
    ProviderUnavailable,
)
from services.payment.domain import ProviderDecision
from shared.errors import InvalidArgument
from shared.money import Money
from shared.proto_convert import money_from_proto
from shared.validation import parse_uuid
from shop.events.v1 import inventory_events_pb2

log = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 0.05
# Answers kept for the handlers, the oldest forgotten first.
_KEPT_ANSWERS = 50_000


class AnswerNotPrepared(RuntimeError):
    """The handler found no provider answer for an order: a wiring bug, never I/O."""


class ProviderAuthorizer:
    def __init__(
        self,
        provider: PaymentProviderSimulator,
        *,
        concurrency: int = 32,
        timeout: float = 2.0,
        attempts: int = 3,
    ) -> None:
        self._provider = provider
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout
        self._attempts = attempts
        self._answers: OrderedDict[uuid.UUID, ProviderDecision] = OrderedDict()

    async def authorize(self, reservations: list[inventory_events_pb2.InventoryReserved]) -> None:
        """Asks the provider about every readable order of ``reservations``, concurrently."""
        asks: dict[uuid.UUID, Money] = {}
        for reserved in reservations:
            try:
                order_id = parse_uuid(reserved.order_id, "order_id")
                asks[order_id] = money_from_proto(reserved.total, "total")
            except InvalidArgument:
                continue  # unreadable: the handler raises, and the event is dead-lettered
        await asyncio.gather(*(self._ask(order_id, amount) for order_id, amount in asks.items()))

    def answer_for(self, order_id: uuid.UUID) -> ProviderDecision:
        """The provider's answer, asked for by ``authorize`` before this transaction."""
        # Kept, not popped: a duplicate handled concurrently reads the same answer.
        decision = self._answers.get(order_id)
        if decision is None:
            raise AnswerNotPrepared(f"no provider answer was prepared for order {order_id}")
        return decision

    async def _ask(self, order_id: uuid.UUID, amount: Money) -> None:
        async with self._slots:
            for attempt in range(1, self._attempts + 1):
                try:
                    async with asyncio.timeout(self._timeout):
                        decision = await self._provider.authorize(order_id, amount)
                except (ProviderUnavailable, TimeoutError) as exc:
                    if attempt == self._attempts:
                        raise ProviderTimeout(
                            f"payment provider gave no answer for order {order_id}"
                            f" in {attempt} attempts"
                        ) from exc
                    log.info("provider call %d for order %s failed (%s)", attempt, order_id, exc)
                    await asyncio.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1))
                    continue
                self._answers[order_id] = decision
                self._answers.move_to_end(order_id)
                while len(self._answers) > _KEPT_ANSWERS:
                    self._answers.popitem(last=False)
                return
