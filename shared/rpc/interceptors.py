"""The server interceptor chain.

Every interceptor here wraps the method handler found by gRPC, so it sees the
request and the outcome of every call, unary or streaming. The chain is built
in one place (``default_chain``) and is meant to grow: tracing, metrics, rate
limits and deadlines slot in beside auth and error mapping.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import grpc

from shared.auth.identity import Identity, Role, set_current_identity
from shared.auth.tokens import TokenVerifier
from shared.errors import DomainError, PermissionDenied, Unauthenticated
from shared.messaging import trace_context

log = logging.getLogger(__name__)

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


class Access(enum.Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    ADMIN = "admin"


# Health and reflection must answer probes and grpcurl without a token.
_ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AccessPolicy:
    """Who may call which method. Methods not listed need any valid token."""

    def __init__(self, rules: Mapping[str, Access]) -> None:
        self._rules = dict(rules)

    def access_for(self, method: str) -> Access:
        if method.startswith(_ALWAYS_PUBLIC_PREFIXES):
            return Access.PUBLIC
        return self._rules.get(method, Access.AUTHENTICATED)


def _wrap(
    handler: Handler,
    around: Callable[[UnaryBehavior], UnaryBehavior],
    around_stream: Callable[[StreamBehavior], StreamBehavior],
) -> Handler:
    """Returns the handler with its behaviour wrapped (unary or server-streaming)."""
    # grpc's handler is a namedtuple; its stubs type the behaviours as sync callables.
    raw: Any = handler
    if raw.request_streaming:
        raise NotImplementedError("client-streaming RPCs are not used in this system")
    if raw.response_streaming:
        return cast(Handler, raw._replace(unary_stream=around_stream(raw.unary_stream)))
    return cast(Handler, raw._replace(unary_unary=around(raw.unary_unary)))


def _rejecting(handler: Handler, error: DomainError) -> Handler:
    """A handler of the same shape that only reports ``error``."""

    async def reject(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(error.code, error.message)

    async def reject_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(error.code, error.message)
        yield  # pragma: no cover - makes this an async generator

    return _wrap(handler, lambda _: reject, lambda _: reject_stream)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the bearer token and makes the caller's identity current."""

    def __init__(self, verifier: TokenVerifier, policy: AccessPolicy) -> None:
        self._verifier = verifier
        self._policy = policy

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None  # type: ignore[return-value]
        access = self._policy.access_for(handler_call_details.method)
        if access is Access.PUBLIC:
            set_current_identity(None)
            return handler
        try:
            identity = self._authenticate(handler_call_details.invocation_metadata)
            if access is Access.ADMIN and identity.role is not Role.ADMIN:
                raise PermissionDenied("this call needs the admin role")
        except DomainError as error:
            return _rejecting(handler, error)
        # grpc.aio runs the interceptors and the handler in the call's own task,
        # so this context variable is the caller's for exactly this RPC.
        set_current_identity(identity)
        return handler

    def _authenticate(self, metadata: Any) -> Identity:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
                return self._verifier.verify(token)
        raise Unauthenticated("this call needs a bearer token in 'authorization' metadata")


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns DomainError into its status code; anything else is a bug (INTERNAL)."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None  # type: ignore[return-value]

        def around(behavior: UnaryBehavior) -> UnaryBehavior:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(request, context)
                except DomainError as error:
                    await context.abort(error.code, error.message)

            return call

        def around_stream(behavior: StreamBehavior) -> StreamBehavior:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(request, context):
                        yield response
                except DomainError as error:
                    await context.abort(error.code, error.message)

            return call

        return _wrap(handler, around, around_stream)


class TraceContextInterceptor(grpc.aio.ServerInterceptor):
    """Continues the caller's trace (``traceparent`` metadata) or starts one.

    The saga's events carry it on, so one trace spans PlaceOrder and every event
    it causes. (OpenTelemetry spans will hang off this same context.)
    """

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        incoming = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == trace_context.HEADER:
                incoming = str(value)
                break
        trace_context.set_current(trace_context.child_of(incoming))
        return await continuation(handler_call_details)  # type: ignore[return-value]


def default_chain(
    verifier: TokenVerifier, policy: AccessPolicy
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the trace starts before auth, so rejections are traced too."""
    return [TraceContextInterceptor(), AuthInterceptor(verifier, policy), DomainErrorInterceptor()]
