"""An order's status as Server-Sent Events, from the order service's WatchOrder stream.

``GET /orders/{id}/events`` answers ``text/event-stream``: an ``event: status`` with
the order as JSON at once, then one per change; a comment line (``: keep-alive``)
whenever ``sse_keepalive_seconds`` pass in silence, so proxies keep the connection;
and the stream ends after a final status (confirmed, rejected, cancelled). A failure of
the watch once the stream has begun ends it with an ``event: error`` whose data is the
problem document; one before it (an unknown order, a bad token) is a plain problem
response. The watch is opened again on another order instance when one stops under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from gateway.api.common import errors
from gateway.api.models import FINAL_ORDER_STATUSES, Order
from gateway.auth import Caller, scoped
from gateway.problems import as_problem, internal_error
from gateway.state import GatewayDep
from shared.auth.scopes import ORDERS_READ
from shop.order.v1 import order_pb2

router = APIRouter(tags=["orders"])
Reader = Annotated[Caller, Depends(scoped(ORDERS_READ))]
MEDIA_TYPE = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One event: its name, its id, and its data as one line of JSON."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


def status_frame(order: order_pb2.Order, event_id: int) -> tuple[bytes, bool]:
    """The frame, and whether it is the last (a final status)."""
    view = Order.of(order)
    return frame("status", view.model_dump(mode="json"), event_id), (
        view.status in FINAL_ORDER_STATUSES
    )


def error_frame(error: BaseException, path: str) -> bytes:
    problem = as_problem(error) or internal_error("stream")
    return frame("error", problem.body(path))


async def frames(
    first: order_pb2.Order,
    rest: AsyncIterator[order_pb2.Order],
    keepalive: float,
    path: str,
) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for order in rest:
                await queue.put(("status", order))
            await queue.put(("end", None))
        except Exception as error:
            await queue.put(("error", error))

    data, last = status_frame(first, 1)
    yield data
    if last:
        return
    task = asyncio.create_task(pump(), name="order watch")
    try:
        event_id = 1
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield KEEPALIVE
                continue
            if kind == "status":
                event_id += 1
                data, last = status_frame(value, event_id)
                yield data
                if last:
                    return
            elif kind == "error":
                yield error_frame(value, path)
                return
            else:
                return
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@router.get(
    "/orders/{order_id}/events",
    summary="Follow an order's status (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "`event: status` frames (data: the order as JSON) until a final"
            " status; `: keep-alive` comments; `event: error` (data: a problem) on a failure",
        },
        **errors(401, 403, 404, 422, 503, 504),
    },
)
async def order_events(order_id: str, gateway: GatewayDep, caller: Reader) -> StreamingResponse:
    """Scope `orders:read`. Ends after `confirmed`, `rejected` or `cancelled`."""
    settings = gateway.settings
    stream = gateway.backends.watch_order(caller.metadata, order_id, settings.sse_max_seconds)
    try:
        first = await anext(stream)
    except BaseException:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
        raise
    path = f"/api/v1/orders/{order_id}/events"
    return StreamingResponse(
        frames(first, stream, settings.sse_keepalive_seconds, path),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
