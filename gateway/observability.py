"""Every request traced, counted and timed; and no failure leaks out as a stack.

``Observe`` (the outermost middleware) opens the request's server span, continuing
the caller's W3C ``traceparent`` if it sent one; the gRPC calls made under it carry it
on (the kit's client interceptors inject the current context), so one checkout is one
trace through the gateway and every service it reaches. It records the RED metrics per
route template (never the raw path: the label set stays bounded) on the Prometheus
port, as the services do. ``ErrorGuard`` turns any exception that escaped the routes'
problem handlers into a 500 "internal error" problem with an error id and the trace id,
and logs the same ids with the traceback.
"""

from __future__ import annotations

import logging
import time
import uuid

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers

from gateway.limits import ASGIApp, Message, Receive, Scope, Send, send_problem
from gateway.problems import internal_error
from shared.observability.trace_context import current_trace_id
from shared.observability.tracing import tracer

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "gateway_http_requests",
    "HTTP requests answered by the gateway, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "gateway_http_request_seconds",
    "Time from a request's arrival to its response's last byte, by route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
)
_propagator = TraceContextTextMapPropagator()
UNMATCHED = "unmatched"


def route_of(scope: Scope) -> str:
    """The route template (``/api/v1/orders/{order_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        started = time.perf_counter()
        status = 500
        parent = _propagator.extract(dict(Headers(scope=scope).items()))
        with tracer().start_as_current_span(
            f"{method} {scope['path']}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:

            async def recorded(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, recorded)
            finally:
                route = route_of(scope)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


class ErrorGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception(
                "unexpected failure of %s %s; error id %s, trace %s",
                scope["method"],
                scope["path"],
                error_id,
                current_trace_id() or "-",
            )
            trace.get_current_span().set_status(Status(StatusCode.ERROR))
            if started:  # too late for a problem: the connection is cut
                raise
            await send_problem(send, internal_error(error_id), scope["path"])
