"""Wrapping event messages in the EventEnvelope, and unwrapping them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from shared.messaging.topics import INVENTORY, ORDERS, PAYMENTS
from shared.rpc.convert import timestamp
from shop.events.v1 import envelope_pb2, inventory_events_pb2, order_events_pb2, payment_events_pb2

_EVENT_MODULES = (order_events_pb2, inventory_events_pb2, payment_events_pb2)
# full proto name -> message class, for every event type of the saga
EVENT_TYPES: dict[str, type[Message]] = {
    descriptor.full_name: getattr(module, name)
    for module in _EVENT_MODULES
    for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
}


def _type_names(module: ModuleType) -> frozenset[str]:
    return frozenset(d.full_name for d in module.DESCRIPTOR.message_types_by_name.values())


# topic -> the event types its owner publishes. Only the owner may write its topic
# (ops/trust/rights.py); consumers refuse any other type on it, so a service that
# may write cannot pass off another service's events (a forged InventoryReserved on
# its own topic would be as good as one on shop.inventory.v1 otherwise).
TOPIC_EVENT_TYPES: dict[str, frozenset[str]] = {
    ORDERS: _type_names(order_events_pb2),
    INVENTORY: _type_names(inventory_events_pb2),
    PAYMENTS: _type_names(payment_events_pb2),
}


def foreign_event(topic: str, event_type: str) -> str | None:
    """Why ``event_type`` may not be read from ``topic``, or None if it may (a topic
    outside the saga's has no owner to check against)."""
    allowed = TOPIC_EVENT_TYPES.get(topic)
    if allowed is None or event_type in allowed:
        return None
    return f"event type {event_type} is not published on {topic}"


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
    message_type = EVENT_TYPES.get(envelope.type)
    if message_type is None:
        raise MalformedEvent(f"unknown event type {envelope.type!r}")
    payload = message_type()
    if not envelope.payload.Unpack(payload):
        raise MalformedEvent(f"payload is {envelope.payload.type_url}, not {envelope.type}")
    return Event(envelope, payload)
