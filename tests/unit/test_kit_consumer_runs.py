"""How the consumer cuts a batch into runs for batch handlers: order is kept."""

from __future__ import annotations

from typing import Any

from shared.messaging.envelope import Event, wrap
from shared.messaging.handling import runs_of_one_type
from shop.events.v1 import order_events_pb2


def event(kind: str, order_id: str) -> tuple[Any, Event]:
    payload = (
        order_events_pb2.OrderCreated(order_id=order_id)
        if kind == "created"
        else order_events_pb2.OrderCancelled(order_id=order_id)
    )
    return (None, Event(wrap(payload, order_id), payload))


def test_consecutive_events_of_a_type_form_one_run_and_order_is_kept() -> None:
    batch = [
        event("created", "1"),
        event("created", "2"),
        event("cancelled", "1"),
        event("created", "3"),
    ]
    runs = runs_of_one_type(batch)
    assert [[e.envelope.aggregate_id for _, e in run] for run in runs] == [["1", "2"], ["1"], ["3"]]


def test_empty_batch_has_no_runs() -> None:
    assert runs_of_one_type([]) == []
