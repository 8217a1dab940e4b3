"""The saga timeout: cancels orders that stayed PENDING too long.

A lost event or a stuck service must not leave an order pending forever: every
instance checks about once a second and cancels what is overdue, announcing
OrderCancelled so inventory and payment undo their part. Instances share the
work through ``FOR UPDATE SKIP LOCKED``; each batch is one short transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.order.domain import time_out
from services.order.events import order_cancelled
from services.order.persistence import OrderUnitOfWork
from shared.messaging.topics import ORDERS
from shared.tasks import PeriodicTask

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0


class SagaTimeout:
    def __init__(
        self,
        unit_of_work: Callable[[], OrderUnitOfWork],
        *,
        timeout_seconds: float | Callable[[], float],
        batch_size: int,
        interval_seconds: float = CHECK_INTERVAL_SECONDS,
    ) -> None:
        self._uow = unit_of_work
        # A callable is read every round: the config center's knob, changed live.
        self._timeout = timeout_seconds if callable(timeout_seconds) else lambda: timeout_seconds
        self._batch_size = batch_size
        # A failed round (the database is down, say) is logged and the next one still
        # comes: this task is the only thing that ends a saga whose events were lost.
        self._task = PeriodicTask("saga timeout", self._check, interval=interval_seconds)
        self.cancelled = 0

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def cancel_overdue_batch(self) -> int:
        """Cancels up to one batch of overdue orders; returns how many."""
        async with self._uow() as uow:
            overdue = await uow.orders.lock_overdue(
                older_than_seconds=self._timeout(), limit=self._batch_size
            )
            for order in overdue:
                cancelled = time_out(order)
                await uow.orders.save(cancelled)
                uow.outbox.add(ORDERS, order_cancelled(cancelled), str(order.order_id))
        if overdue:
            log.info("saga timeout cancelled %d orders", len(overdue))
        self.cancelled += len(overdue)
        return len(overdue)

    async def _check(self) -> None:
        while await self.cancel_overdue_batch() == self._batch_size:
            pass  # a full batch: more may be waiting
