"""Typed event subscriptions: what a service reacts to, in one list.

A service declares ``subscribe(OrderCreated, use_cases.reserve)``: the handler
receives the unpacked message, typed, inside the consumer's unit of work. The
topics the consumer reads follow from the event types (each event's proto file
names its topic), so they cannot drift from the handlers; an event type with no
subscription on a topic read for another is skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from shared.messaging.envelope import Event, topic_of

UowT = TypeVar("UowT")
# A subscription made for a unit-of-work Protocol serves any unit of work that has it.
UowT_contra = TypeVar("UowT_contra", contravariant=True)
E = TypeVar("E", bound=Message)

# What the consumer calls, on the envelope: adapters around the typed handlers below.
EventHandler = Callable[[UowT, Event], Awaitable[None]]
EventBatchHandler = Callable[[UowT, list[Event]], Awaitable[None]]
EventPreparer = Callable[[list[Event]], Awaitable[None]]
# Runs first in the transaction with every new message of the batch: takes the row
# locks the batch's handlers will need, all at once and in one canonical order (see
# consumer.py). A message it cannot read it skips; the handler decides about it.
RowLocks = Callable[[UowT, list[Message]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription(Generic[UowT_contra]):
    event_type: type[Message]
    handle: EventHandler[UowT_contra]
    handle_batch: EventBatchHandler[UowT_contra] | None = None
    prepare: EventPreparer | None = None

    @property
    def type_name(self) -> str:
        return self.event_type.DESCRIPTOR.full_name


def subscribe(
    event_type: type[E],
    handler: Callable[[UowT, E], Awaitable[None]],
    *,
    batch: Callable[[UowT, list[E]], Awaitable[None]] | None = None,
    prepare: Callable[[list[E]], Awaitable[None]] | None = None,
) -> Subscription[UowT]:
    """``handler`` takes one event; ``batch`` (optional) a run of consecutive events of
    this type at once, so it can merge their writes, and must end exactly as
    ``handler`` applied to each in turn; ``prepare`` (optional) runs before the
    transaction, outside it, for work that must not hold row locks while it waits (a
    call to an outside system): it sees events again whenever their handling is
    retried, so it must be safe to repeat."""
    if topic_of(event_type) is None:
        name = event_type.DESCRIPTOR.full_name
        raise ValueError(f"{name} is not an event: its proto file names no topic")

    def payload(event: Event) -> E:
        if not isinstance(event.payload, event_type):  # the consumer dispatches by type name
            raise TypeError(f"{event.type} delivered to the {event_type.__name__} handler")
        return event.payload

    async def handle(uow: UowT, event: Event) -> None:
        await handler(uow, payload(event))

    async def handle_batch(uow: UowT, events: list[Event]) -> None:
        assert batch is not None
        await batch(uow, [payload(event) for event in events])

    async def run_prepare(events: list[Event]) -> None:
        assert prepare is not None
        await prepare([payload(event) for event in events])

    return Subscription(
        event_type,
        handle,
        handle_batch if batch is not None else None,
        run_prepare if prepare is not None else None,
    )


@dataclass(frozen=True)
class Subscriptions(Generic[UowT_contra]):
    """A service's subscriptions, and the row locks its batches take first."""

    subscriptions: Sequence[Subscription[UowT_contra]]
    row_locks: RowLocks[UowT_contra] | None = None

    def __post_init__(self) -> None:
        names = [s.type_name for s in self.subscriptions]
        if len(names) != len(set(names)):
            raise ValueError(f"an event type is subscribed twice: {sorted(names)}")

    @property
    def topics(self) -> list[str]:
        return sorted({topic for s in self.subscriptions if (topic := topic_of(s.event_type))})

    @property
    def handlers(self) -> dict[str, EventHandler[UowT_contra]]:
        return {s.type_name: s.handle for s in self.subscriptions}

    @property
    def batch_handlers(self) -> dict[str, EventBatchHandler[UowT_contra]]:
        return {s.type_name: s.handle_batch for s in self.subscriptions if s.handle_batch}

    @property
    def preparers(self) -> dict[str, EventPreparer]:
        return {s.type_name: s.prepare for s in self.subscriptions if s.prepare}

    def lock_rows(self) -> EventBatchHandler[UowT_contra] | None:
        """The row locks as the consumer calls them, on the batch's envelopes."""
        row_locks = self.row_locks
        if row_locks is None:
            return None

        async def lock(uow: UowT_contra, events: list[Event]) -> None:
            await row_locks(uow, [event.payload for event in events])

        return lock
