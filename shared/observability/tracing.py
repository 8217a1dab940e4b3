"""OpenTelemetry traces: one provider per process, exported to the trace backend (Zipkin).

A service process calls ``start_tracing`` once; the gRPC interceptors (server and
client, from ``opentelemetry-instrumentation-grpc``) and asyncpg's instrumentation
then record spans, and the messaging kit carries the context through the outbox and
Kafka (shared/observability/trace_context.py), so one PlaceOrder is one trace.

Sampling is parent-based: a span follows its parent's decision, so a trace is kept
whole or not at all. A trace starts (a root span) only where a request enters the
system: an RPC's server span, or the client span of a tool's RPC (shopctl, the load
harness), or a tool's own span around its calls, at the ratio the config center gives
(``tracing.sample_ratio``), read live.
Any other root (a database query of a polling loop, a relay publish of an event
stored without a trace) is dropped: those would fill the backend with one-span traces.

Zipkin takes its own JSON, not OTLP, so spans go through the Zipkin exporter
(``opentelemetry-exporter-zipkin-json``), batched off the event loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

TRACER_NAME = "shop"
# Health probes and reflection are neither requests nor worth a span each second.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# A root span with this attribute true is kept whatever the ratio: a person asked to
# follow this request (`make demo-trace`, `shopctl place-order`).
ALWAYS_SAMPLE = "shop.trace.always"

_provider: TracerProvider | None = None


# Got once: get_tracer builds a new tracer per call, and the consumer asks for one per
# event. Before start_tracing this is OpenTelemetry's proxy, which follows the provider
# set later.
_tracer = trace.get_tracer(TRACER_NAME)


def tracer() -> trace.Tracer:
    return _tracer


def enabled() -> bool:
    """Whether this process records spans (``start_tracing`` ran)."""
    return _provider is not None


class LiveRatioSampler(Sampler):
    """Parent-based; roots of ``root_kinds`` (client ones only if RPCs) sampled at
    ``ratio()``, a root marked ``ALWAYS_SAMPLE`` kept, other roots dropped.

    ``ratio`` is called for each root, so a change in the config center applies to
    the next request without a restart.
    """

    def __init__(
        self,
        ratio: Callable[[], float],
        root_kinds: frozenset[SpanKind] = frozenset({SpanKind.SERVER}),
    ) -> None:
        self._ratio = ratio
        self._root_kinds = root_kinds
        self._current = -1.0
        self._sampler: Sampler = ParentBased(TraceIdRatioBased(0.0))

    def _for_ratio(self, ratio: float) -> Sampler:
        if ratio != self._current:
            self._current = ratio
            self._sampler = ParentBased(TraceIdRatioBased(min(max(ratio, 0.0), 1.0)))
        return self._sampler

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and (attributes or {}).get(ALWAYS_SAMPLE):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        if not parent.is_valid and (
            kind not in self._root_kinds
            # A client span is a root of its own only if it is an RPC: a database query
            # is a client span too.
            or (kind is SpanKind.CLIENT and not (attributes or {}).get("rpc.system"))
        ):
            return SamplingResult(Decision.DROP)
        return self._for_ratio(self._ratio()).should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"LiveRatioSampler(ratio={self._current})"


def zipkin_exporter(endpoint: str) -> SpanExporter:
    """Spans to Zipkin's ``/api/v2/spans``."""
    # Imported here: the exporter pulls in requests, which a process without tracing
    # has no use for.
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    return ZipkinExporter(endpoint=endpoint, timeout=5)


def start_tracing(
    service: str, instance_id: str, exporter: SpanExporter, sampler: Sampler
) -> TracerProvider:
    """Records spans from now on, batched to ``exporter``. Once per process: a second
    call keeps the first provider (OpenTelemetry's global provider is set once).

    Without this call nothing is recorded, and the context only travels where a
    span already is (the W3C headers of a caller that traces).
    """
    global _provider
    if _provider is not None:
        return _provider

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance_id}),
        sampler=sampler,
    )
    # Exported each second (the default is 5 s): `make demo-trace` waits for them.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    # Statements, never their parameters (capture_parameters defaults to False).
    _statement_instrumentor().instrument(tracer_provider=provider)
    _provider = provider
    return provider


def _statement_instrumentor() -> Any:
    """``opentelemetry-instrumentation-asyncpg``, entered only inside a sampled trace.

    Outside one, a statement's span would be dropped anyway (parent-based sampling; a
    query is never a root), yet building it costs about as much as a short query's own
    Python: most statements of a service run in unsampled traces, so they skip it.
    """
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    class SampledStatements(AsyncPGInstrumentor):
        async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not trace.get_current_span().is_recording():
                return await func(*args, **kwargs)
            return await super()._do_execute(func, instance, args, kwargs)

        async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not trace.get_current_span().is_recording():
                return await func(*args, **kwargs)
            return await super()._do_cursor_execute(func, instance, args, kwargs)

    return SampledStatements()


def stop_tracing() -> None:
    """Exports what is still buffered (at most a few seconds' wait)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def _traced(details: Any) -> bool:
    method = getattr(details, "method", "") or ""
    if isinstance(method, bytes):
        method = method.decode()
    return not method.startswith(_UNTRACED_PREFIXES)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The server span of each call (the caller's context from its metadata)."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced)]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The client span of each call; puts the context in the call's metadata."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(filter_=_traced))
