"""An order's status as Server-Sent Events: the framing, keep-alives, the end, errors."""

from __future__ import annotations

import json
import uuid

import grpc

from gateway.api.events import frame
from shop.order.v1 import order_pb2
from tests.unit.gateway.fakes import FakeGateway, rpc_error

PENDING, CONFIRMED = order_pb2.ORDER_STATUS_PENDING, order_pb2.ORDER_STATUS_CONFIRMED


def parse(stream: str) -> list[dict[str, str]]:
    """Each event as its fields (a comment is {"comment": ...}); every event ends with a
    blank line, as the SSE format wants."""
    assert stream.endswith("\n\n")
    events = []
    for block in stream.split("\n\n")[:-1]:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name or "comment"] = value
        events.append(fields)
    return events


def an_order(gw: FakeGateway, *updates: object) -> str:
    order = order_pb2.Order(order_id=str(uuid.uuid4()), status=PENDING)
    gw.backends.orders[order.order_id] = order
    gw.backends.updates[order.order_id] = list(updates)  # type: ignore[arg-type]
    return order.order_id


def test_a_frame_is_one_event_with_one_line_of_json() -> None:
    data = {"status": "confirmed", "note": "two\nlines"}
    assert frame("status", data, 3) == (
        b'event: status\nid: 3\ndata: {"status":"confirmed","note":"two\\nlines"}\n\n'
    )


async def test_statuses_stream_until_a_final_one(gw: FakeGateway) -> None:
    order_id = an_order(gw, PENDING, CONFIRMED, PENDING)  # nothing after the final one
    reply = await gw.client.get(f"/api/v1/orders/{order_id}/events", headers=gw.customer())
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-store"
    events = parse(reply.text)
    assert [e["event"] for e in events] == ["status", "status", "status"]
    assert [e["id"] for e in events] == ["1", "2", "3"]
    assert [json.loads(e["data"])["status"] for e in events] == ["pending", "pending", "confirmed"]
    assert json.loads(events[0]["data"])["order_id"] == order_id


async def test_quiet_streams_say_they_are_alive(gw: FakeGateway) -> None:
    gw.gateway.settings.sse_keepalive_seconds = 0.05
    order_id = an_order(gw, 0.3, CONFIRMED)
    reply = await gw.client.get(f"/api/v1/orders/{order_id}/events", headers=gw.customer())
    events = parse(reply.text)
    assert {"comment": "keep-alive"} in events
    assert json.loads(events[-1]["data"])["status"] == "confirmed"


async def test_a_failure_mid_stream_ends_it_with_an_error_event(gw: FakeGateway) -> None:
    failure = rpc_error(
        grpc.StatusCode.UNAVAILABLE, "order is stopping", error_reason="SHUTTING_DOWN"
    )
    order_id = an_order(gw, failure)
    reply = await gw.client.get(f"/api/v1/orders/{order_id}/events", headers=gw.customer())
    assert reply.status_code == 200
    events = parse(reply.text)
    assert [e["event"] for e in events] == ["status", "error"]
    problem = json.loads(events[-1]["data"])
    assert problem["status"] == 503 and problem["reason"] == "SHUTTING_DOWN"


async def test_an_order_that_is_not_there_is_a_problem_not_a_stream(gw: FakeGateway) -> None:
    reply = await gw.client.get(f"/api/v1/orders/{uuid.uuid4()}/events", headers=gw.customer())
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"


async def test_the_stream_needs_orders_read(gw: FakeGateway) -> None:
    order_id = an_order(gw, CONFIRMED)
    reply = await gw.client.get(
        f"/api/v1/orders/{order_id}/events", headers=gw.customer(scopes=["wallet:read"])
    )
    assert reply.status_code == 403
