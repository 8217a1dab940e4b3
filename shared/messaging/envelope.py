"""Wrapping event messages in the EventEnvelope, and unwrapping them."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

import shop.events.v1 as events_package
from shared.proto_convert import timestamp
from shop.events.v1 import envelope_pb2, topic_pb2


def topic_of(event: type[Message] | Descriptor) -> str | None:
    """The topic an event type is published on, as its proto file declares it
    (``option (shop.events.v1.topic)``), or None for a message that is no event."""
    descriptor = event if isinstance(event, Descriptor) else event.DESCRIPTOR
    topic: str = descriptor.file.GetOptions().Extensions[topic_pb2.topic]
    return topic or None


@functools.cache
def event_catalog() -> dict[str, type[Message]]:
    """Every event type of the contract: the messages of each module of the event package
    (shop.events.v1) whose proto file names a topic, by full proto name. Read from the
    generated package itself, so a new event file needs no change here."""
    catalog: dict[str, type[Message]] = {}
    for module_info in pkgutil.iter_modules(events_package.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{events_package.__name__}.{module_info.name}")
        for name, descriptor in module.DESCRIPTOR.message_types_by_name.items():
            if topic_of(descriptor) is not None:
                catalog[descriptor.full_name] = getattr(module, name)
    return catalog


def event_type(name: str) -> type[Message] | None:
    """The event message class of a full proto name, or None if no event has it."""
    return event_catalog().get(name)


def event_topics() -> frozenset[str]:
    """The topics some event file names: each has an owner, the only party that may write it."""
    return frozenset(topic for cls in event_catalog().values() if (topic := topic_of(cls)))


def foreign_event(topic: str, event: type[Message]) -> str | None:
    """Why ``event`` may not be read from ``topic``, or None if it may.

    Only a topic's owner may write it (the broker's ACLs), so a consumer refuses any
    type the owner does not publish there: a service that may write its own topic
    cannot pass off another service's events (a forged InventoryReserved on
    shop.orders.v1 would otherwise be as good as one on shop.inventory.v1). A topic
    no event file names (the dead-letter topic, a test's) has no owner to check against."""
    if topic_of(event) == topic or topic not in event_topics():
        return None
    return f"event type {event.DESCRIPTOR.full_name} is not published on {topic}"


class MalformedEvent(ValueError):
    """The record cannot be understood; it belongs in the dead-letter topic."""


@dataclass(frozen=True)
class Event:
    envelope: envelope_pb2.EventEnvelope
    payload: Message

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.UUID(self.envelope.event_id)

    @property
    def type(self) -> str:
        return self.envelope.type


def wrap(payload: Message, aggregate_id: str) -> envelope_pb2.EventEnvelope:
    packed = any_pb2.Any()
    packed.Pack(payload)
    return envelope_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        type=payload.DESCRIPTOR.full_name,
        occurred_at=timestamp(datetime.now(UTC)),
        aggregate_id=aggregate_id,
        payload=packed,
    )


def unwrap(data: bytes) -> Event:
    try:
        envelope = envelope_pb2.EventEnvelope.FromString(data)
    except DecodeError as exc:
        raise MalformedEvent(f"not an EventEnvelope: {exc}") from None
    try:
        uuid.UUID(envelope.event_id)
    except ValueError:
        raise MalformedEvent(f"event_id {envelope.event_id!r} is not a UUID") from None
    message_type = event_type(envelope.type)
    if message_type is None:
        raise MalformedEvent(f"unknown event type {envelope.type!r}")
    payload = message_type()
    if not envelope.payload.Unpack(payload):
        raise MalformedEvent(f"payload is {envelope.payload.type_url}, not {envelope.type}")
    return Event(envelope, payload)
