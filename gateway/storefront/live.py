"""The order page's live part: the order service's WatchOrder as server-sent events.

Each change of the order (a saga step, its final status) is the status fragment
rendered again and sent as one ``status`` event, which htmx's SSE extension swaps into
the page; a final status is followed by ``done``, which closes the stream. A comment
line every few seconds keeps proxies from closing an idle stream. A failure of the
watch ends the stream with a friendly fragment, not an error page inside the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from gateway.storefront import views
from gateway.storefront.render import TEMPLATES
from gateway.storefront.web_session import Visit, shopper
from shop.order.v1 import order_pb2

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
ShopperDep = Annotated[Visit, Depends(shopper)]


def event(name: str, html: str) -> str:
    """One SSE event; every line of the data gets its own ``data:`` field."""
    lines = html.strip().splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def fragment(order: order_pb2.Order, csrf_token: str) -> str:
    template = TEMPLATES.get_template("_order_status.html")
    return template.render(order=views.order_view(order), csrf_token=csrf_token)


UNAVAILABLE = (
    '<p class="notice warn" id="live-lost">Live updates stopped; reload the page to see the'
    " order's latest status.</p>"
)


async def order_events(current: Visit, order_id: str, csrf_token: str) -> AsyncIterator[str]:
    settings = current.gateway.settings
    stream = current.gateway.backends.watch_order(
        current.auth, order_id, settings.sse_max_seconds
    ).__aiter__()
    next_order: asyncio.Task[order_pb2.Order] | None = None
    try:
        while True:
            next_order = asyncio.ensure_future(stream.__anext__())
            while True:
                done, _ = await asyncio.wait({next_order}, timeout=settings.sse_keepalive_seconds)
                if done:
                    break
                yield ": still watching\n\n"
            try:
                order = next_order.result()
            except StopAsyncIteration:
                break
            yield event("status", fragment(order, csrf_token))
            if views.order_view(order)["final"]:
                break
    except Exception:
        log.info("watch of order %s ended early", order_id, exc_info=True)
        yield event("status", UNAVAILABLE)
    finally:
        if next_order is not None and not next_order.done():
            next_order.cancel()
            with contextlib.suppress(BaseException):
                await next_order
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    yield event("done", "")


@router.get("/orders/{order_id}/live")
async def live(request: Request, current: ShopperDep, order_id: str) -> StreamingResponse:
    csrf_token = str(getattr(request.state, "csrf_token", ""))
    return StreamingResponse(
        order_events(current, order_id, csrf_token),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
