"""Handling one poll's records: in one transaction, exactly once, each partition in order.

Every event id is recorded in ``processed_events`` (unique per consumer group) and
its handler applied, all in one database transaction; a redelivered event finds its
id already there and changes nothing. One transaction for many events is what lets a
hot SKU go faster than one commit per reservation (and consecutive events of one type
can be merged by a batch handler). If the transaction fails, its records are retried
one by one, so one bad record cannot hold the others back; a record that still fails
after ``attempts`` tries, or cannot be read at all, goes to the dead-letter topic with
its error. A database outage is not a bad record: it is raised, and the consumer
(consumer.py) reads the poll again later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

import asyncpg
from aiokafka.structs import ConsumerRecord
from tenacity import (
    AsyncRetrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from shared.errors import Unavailable
from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.envelope import (
    Event,
    MalformedEvent,
    foreign_event,
    unwrap,
)
from shared.messaging.spans import handling_spans
from shared.messaging.unit_of_work import PostgresUnitOfWork

log = logging.getLogger(__name__)

UowT = TypeVar("UowT", bound=PostgresUnitOfWork)

# Failures of the database connection itself: the whole batch waits and is read again.
INFRASTRUCTURE_ERRORS = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    # What the unit of work reports a connection lost at BEGIN or COMMIT as.
    Unavailable,
)
Handler = Callable[[UowT, Event], Awaitable[None]]
# Takes a run of consecutive events of one type at once, so that it can merge their
# writes (e.g. many reservations of one hot SKU in one UPDATE). Must behave exactly
# as the per-event handler applied to each event in order.
BatchHandler = Callable[[UowT, list[Event]], Awaitable[None]]
# Runs before the transaction that handles the events, outside it, for work that must not
# hold row locks while it waits (a call to an outside system, such as a payment provider).
# It sees events before deduplication and again whenever their handling is retried, so it
# must be safe to repeat; what it learns, the handler reads inside the transaction.
Preparer = Callable[[list[Event]], Awaitable[None]]
# Runs first in the transaction: takes the row locks the batch's handlers will need, all
# at once and in one canonical order (stock by SKU, wallets by user). Handlers lock rows
# event by event, so two instances' batches would otherwise lock shared rows in different
# orders and deadlock (PostgreSQL breaks that only after deadlock_timeout, a second).
# It sees the batch's new events; a payload it cannot read it skips (the handler decides).
RowLocks = Callable[[UowT, list[Event]], Awaitable[None]]


class EventHandling(Generic[UowT]):
    def __init__(
        self,
        name: str,
        *,
        unit_of_work: Callable[[], UowT],
        handlers: Mapping[str, Handler[UowT]],
        batch_handlers: Mapping[str, BatchHandler[UowT]] | None,
        preparers: Mapping[str, Preparer] | None,
        row_locks: RowLocks[UowT] | None,
        dead_letters: DeadLetterPublisher,
        attempts: int,
    ) -> None:
        self.name = name  # the consumer group: processed ids are unique per group
        self._uow = unit_of_work
        self._handlers = dict(handlers)
        self._batch_handlers = dict(batch_handlers or {})
        self._preparers = dict(preparers or {})
        self._row_locks = row_locks
        self._dead_letters = dead_letters
        self._attempts = attempts
        self.handled = 0
        self.duplicates = 0
        self.dead_lettered = 0

    async def process(self, records: list[ConsumerRecord]) -> None:
        """Handles the records, each partition's in order."""
        events: list[tuple[ConsumerRecord, Event]] = []
        for record in records:
            try:
                event = unwrap(record.value or b"")
            except MalformedEvent as exc:
                await self._give_up(record, f"malformed: {exc}")
                continue
            refused = foreign_event(record.topic, type(event.payload))
            if refused is not None:
                await self._give_up(record, refused)
                continue
            if event.type in self._handlers:
                events.append((record, event))
        if events:
            try:
                with handling_spans(self.name, events):
                    await self._prepare(events)
                    await self._apply(events)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:
                log.warning(
                    "%s: batch of %d failed (%r); retrying one by one", self.name, len(events), exc
                )
                for record, event in events:
                    await self._apply_with_retries(record, event)

    async def _prepare(self, events: list[tuple[ConsumerRecord, Event]]) -> None:
        by_type: dict[str, list[Event]] = {}
        for _, event in events:
            if event.type in self._preparers:
                by_type.setdefault(event.type, []).append(event)
        for event_type, of_type in by_type.items():
            await self._preparers[event_type](of_type)

    async def _apply(self, events: list[tuple[ConsumerRecord, Event]]) -> None:
        handled = 0
        async with self._uow() as uow:
            # One statement records the whole batch; what it returns is what is new.
            fresh = {
                row["event_id"]
                for row in await uow.connection.fetch(
                    "INSERT INTO processed_events (consumer, event_id)"
                    " SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
                    self.name,
                    [event.event_id for _, event in events],
                )
            }
            todo: list[tuple[ConsumerRecord, Event]] = []
            for record, event in events:
                if event.event_id in fresh:  # else seen before, or twice in this batch
                    fresh.discard(event.event_id)
                    todo.append((record, event))
            if todo and self._row_locks is not None:
                await self._row_locks(uow, [event for _, event in todo])
            for run in runs_of_one_type(todo):
                batch_handler = self._batch_handlers.get(run[0][1].type)
                if batch_handler is not None:
                    await batch_handler(uow, [event for _, event in run])
                else:
                    for _, event in run:
                        await self._handlers[event.type](uow, event)
                handled += len(run)
        self.handled += handled
        self.duplicates += len(events) - handled

    async def _apply_with_retries(self, record: ConsumerRecord, event: Event) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            # An outage is not the event's fault: never dead-letter an event for one.
            retry=retry_if_not_exception_type(INFRASTRUCTURE_ERRORS),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt, handling_spans(self.name, [(record, event)]):
                    await self._prepare([(record, event)])
                    await self._apply([(record, event)])
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            await self._give_up(record, f"{event.type} failed {self._attempts} times: {exc!r}")

    async def _give_up(self, record: ConsumerRecord, error: str) -> None:
        await self._dead_letters.publish(record, consumer=self.name, error=error)
        self.dead_lettered += 1


def runs_of_one_type(
    events: list[tuple[ConsumerRecord, Event]],
) -> list[list[tuple[ConsumerRecord, Event]]]:
    """Consecutive events of the same type, in order: [[a, a], [b], [a]]."""
    runs: list[list[tuple[ConsumerRecord, Event]]] = []
    for item in events:
        if runs and runs[-1][0][1].type == item[1].type:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs
