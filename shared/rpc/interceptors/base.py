"""What every interceptor of the chain builds on: a handler of any shape, wrapped.

``WrappingInterceptor`` normalises the four shapes of RPC to two behaviours (one
response, or a stream of them) and runs its ``unary``/``stream`` inside each call;
``AdmissionInterceptor`` only decides whether a call may run at all.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
Context = grpc.aio.ServicerContext
# A behaviour, normalised: the request (or the request iterator) and the context in,
# the response (unary) or the responses (streaming) out.
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]

# Health and reflection must answer probes and grpcurl whatever the caller and the knobs.
HEALTH_AND_REFLECTION = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _as_unary(behavior: Any) -> UnaryBehavior:
    """The behaviour as a coroutine function, whether the servicer's method is sync or async."""

    async def call(request: Any, context: Context) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


def _as_stream(behavior: Any) -> StreamBehavior:
    """The behaviour as an async generator: of its yields, its sync yields, or (if it
    writes with ``context.write`` and returns) of nothing."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for response in result:
                yield response
        elif inspect.isawaitable(result):
            await result
        elif result is not None:
            for response in result:
                yield response

    return call


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base of the chain's interceptors: ``unary`` and ``stream`` run inside each call.

    Subclasses override either or both; the defaults pass the call through.
    grpc.aio picks how to run a behaviour by its kind (coroutine function or async
    generator function), so the replacements below are always real ``async def``s.
    """

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        return await behavior(request, context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        async for response in behavior(request, context):
            yield response

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None  # type: ignore[return-value]
        return self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: Handler, method: str) -> Handler:
        # grpc's handler is a namedtuple; its stubs type the behaviours as sync callables.
        raw: Any = handler
        if raw.response_streaming:
            inner_stream = _as_stream(
                raw.stream_stream if raw.request_streaming else raw.unary_stream
            )

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                async for response in self.stream(method, inner_stream, request, context):
                    yield response

            field = "stream_stream" if raw.request_streaming else "unary_stream"
            return cast(Handler, raw._replace(**{field: streaming}))
        inner = _as_unary(raw.stream_unary if raw.request_streaming else raw.unary_unary)

        async def unary(request: Any, context: Context) -> Any:
            return await self.unary(method, inner, request, context)

        field = "stream_unary" if raw.request_streaming else "unary_unary"
        return cast(Handler, raw._replace(**{field: unary}))


class AdmissionInterceptor(WrappingInterceptor):
    """An interceptor that only decides whether a call may run at all: ``admit`` raises
    a DomainError to refuse it, before the handler (or a stream's first message)."""

    def admit(self, method: str, context: Context) -> None:
        raise NotImplementedError

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        self.admit(method, context)
        return await behavior(request, context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        self.admit(method, context)
        async for response in behavior(request, context):
            yield response
