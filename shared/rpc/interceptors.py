"""The server interceptor chain, for every shape of RPC.

Each interceptor here wraps the method handler gRPC found, whatever its shape:
unary, server-streaming, client-streaming or bidirectional (reflection, which
grpcurl and ghz need, is a bidirectional stream). The wrapper runs inside the
call, with its context, so it sees the request, the caller's certificate and
the outcome. The chain is built in one place (``default_chain``), outermost
first, and is meant to grow (metrics, rate limits, deadlines slot in here):

    span → metrics → deadline → error mapping → faults → auth → rate limits
    → request checks → the servicer
"""

from __future__ import annotations

import enum
import inspect
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message

from shared.auth.identity import Identity, Role, set_current_identity
from shared.auth.tokens import TokenVerifier
from shared.config.center import ConfigCenter
from shared.db.errors import as_domain_error
from shared.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from shared.observability import trace_context
from shared.observability.tracing import server_interceptors
from shared.rpc import status
from shared.rpc.deadlines import remember_time_remaining
from shared.tls import peer_identity
from shared.validation import check_strings

log = logging.getLogger(__name__)

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
Context = grpc.aio.ServicerContext
# A behaviour, normalised: the request (or the request iterator) and the context in,
# the response (unary) or the responses (streaming) out.
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


class Access(enum.Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    ADMIN = "admin"


# Health and reflection must answer probes and grpcurl without a token.
_ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# The party (the client certificate's name) of people and tools; services never do admin work.
OPERATOR = "operator"
OPERATOR_ONLY = frozenset({OPERATOR})


class AccessPolicy:
    """Who may call which method, on two layers.

    ``rules``: which user (from the JWT) may call; methods not listed need any
    valid token. ``parties``: which parties (the mTLS client certificate's name:
    a service or ``operator``) may call; methods not listed take any party whose
    certificate our CA signed. A stolen admin token is no use from inside the
    order service, since admin methods take the operator's certificate only.
    """

    def __init__(
        self, rules: Mapping[str, Access], parties: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        self._rules = dict(rules)
        self._parties = dict(parties or {})

    def access_for(self, method: str) -> Access:
        if method.startswith(_ALWAYS_PUBLIC_PREFIXES):
            return Access.PUBLIC
        return self._rules.get(method, Access.AUTHENTICATED)

    def parties_for(self, method: str) -> frozenset[str] | None:
        """The parties allowed, or None for any party with a certificate of our CA."""
        return self._parties.get(method)


# --- wrapping a handler of any shape ------------------------------------------------------


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


# --- the interceptors ---------------------------------------------------------------------


class DeadlineInterceptor(WrappingInterceptor):
    """Remembers the incoming call's deadline, for the deadline budget of every outbound
    call its handler makes (shared/rpc/deadlines.py, ``ServiceClients.call``)."""

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        # The wrapper runs in the call's own task: the variable is this RPC's alone.
        remember_time_remaining(context.time_remaining())
        return await behavior(request, context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        remember_time_remaining(context.time_remaining())
        async for response in behavior(request, context):
            yield response


class ErrorMappingInterceptor(WrappingInterceptor):
    """DomainError → its status; an outage → UNAVAILABLE; anything else → INTERNAL.

    An unexpected exception is a bug: the caller gets INTERNAL, a generic message
    and an error id, never the exception, SQL or a stack; the log line has the
    same id, the trace id and the traceback.
    """

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        try:
            return await behavior(request, context)
        except Exception as error:
            await self._fail(method, context, error)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as error:
            await self._fail(method, context, error)

    async def _fail(self, method: str, context: Context, error: Exception) -> None:
        if isinstance(error, grpc.aio.AbortError):  # the servicer chose its status already
            raise error
        if isinstance(error, DomainError):
            await status.abort(context, error)
        if (retryable := as_domain_error(error)) is not None:
            log.warning("%s: %s (%s: %s)", method, retryable.message, type(error).__name__, error)
            await status.abort(context, retryable)
        error_id = uuid.uuid4().hex[:16]
        log.error(
            "unexpected error %s in %s (trace %s)",
            error_id,
            method,
            trace_context.current_trace_id(),
            exc_info=error,
            extra={"error_id": error_id},
        )
        await status.abort_internal(context, error_id)


class InjectedFault(Unavailable):
    """A fault the config center asked for (``faults.unavailable_rate``), not a real one."""

    reason = "INJECTED_FAULT"


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


class FaultInjectionInterceptor(AdmissionInterceptor):
    """Answers UNAVAILABLE to ``config.current.faults.unavailable_rate`` of the calls, before
    the handler runs, so nothing is applied and a retry is safe: for the retry demo and
    chaos runs. Health and reflection are never failed (probes must tell the truth)."""

    def __init__(self, config: ConfigCenter, rand: Callable[[], float] = random.random) -> None:
        self._config = config
        self._rand = rand

    def admit(self, method: str, context: Context) -> None:
        if method.startswith(_ALWAYS_PUBLIC_PREFIXES):
            return
        rate = self._config.current.faults.unavailable_rate  # once: this call's view
        if rate > 0 and self._rand() < rate:
            raise InjectedFault(f"injected fault: {rate:.0%} of calls fail (config faults)")


class AuthInterceptor(AdmissionInterceptor):
    """Checks the calling party (mTLS) and the bearer token; makes the user current."""

    def __init__(self, verifier: TokenVerifier, policy: AccessPolicy) -> None:
        self._verifier = verifier
        self._policy = policy

    def admit(self, method: str, context: Context) -> None:
        parties = self._policy.parties_for(method)
        if parties is not None and (party := peer_identity(context)) not in parties:
            raise PermissionDenied(
                f"this call is not open to {party or 'a caller without a certificate'};"
                f" it takes {', '.join(sorted(parties))}"
            )
        access = self._policy.access_for(method)
        if access is Access.PUBLIC:
            set_current_identity(None)
            return
        identity = self._authenticate(context.invocation_metadata())
        if access is Access.ADMIN and identity.role is not Role.ADMIN:
            raise PermissionDenied("this call needs the admin role")
        # The wrapper runs in the call's own task, so this context variable is the
        # caller's for exactly this RPC.
        set_current_identity(identity)

    def _authenticate(self, metadata: Any) -> Identity:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
                return self._verifier.verify(token)
        raise Unauthenticated("this call needs a bearer token in 'authorization' metadata")


class _Undecodable:
    """Stands in for a request protobuf could not parse (e.g. invalid UTF-8 in a string)."""

    def __init__(self, message_type: str, problem: str) -> None:
        self.message_type = message_type
        self.problem = problem


class RequestCheckInterceptor(WrappingInterceptor):
    """Every request passes the shared rules before a servicer sees it.

    Requests that do not parse become INVALID_ARGUMENT (grpc would answer
    INTERNAL); every string field, however deep, gets ``check_strings``.
    """

    def wrap(self, handler: Handler, method: str) -> Handler:
        raw: Any = super().wrap(handler, method)
        parse = raw.request_deserializer
        if parse is None:
            return cast(Handler, raw)
        message_type = getattr(getattr(parse, "__self__", None), "__name__", "request")

        def tolerant_parse(data: bytes) -> Any:
            try:
                return parse(data)
            except (DecodeError, UnicodeDecodeError, ValueError) as error:
                return _Undecodable(message_type, str(error) or type(error).__name__)

        return cast(Handler, raw._replace(request_deserializer=tolerant_parse))

    @staticmethod
    def _check(request: Any) -> Any:
        if isinstance(request, _Undecodable):
            raise InvalidArgument(
                "request", f"is not a valid {request.message_type} (for example invalid UTF-8)"
            )
        if isinstance(request, Message):
            check_strings(request)
        return request

    async def _checked(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield self._check(request)

    def _prepare(self, request: Any, context: Context) -> Any:
        if hasattr(request, "__aiter__"):  # a client stream: check each message as it comes
            return self._checked(request)
        return self._check(request)

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        return await behavior(self._prepare(request, context), context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        async for response in behavior(self._prepare(request, context), context):
            yield response


def _rate_limits(config: ConfigCenter | None) -> list[grpc.aio.ServerInterceptor]:
    """Per caller and method, from the config center; none without one."""
    if config is None:
        return []
    # Imported here: shared/rpc/ratelimit.py builds on this module's AdmissionInterceptor.
    from shared.rpc.ratelimit import RateLimitInterceptor

    return [RateLimitInterceptor(config)]


def default_chain(
    verifier: TokenVerifier,
    policy: AccessPolicy,
    config: ConfigCenter | None = None,
    metrics: bool = True,
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the span and the metrics start before auth, so rejections are
    traced and counted too."""
    # Imported here: it builds on this module's WrappingInterceptor.
    from shared.rpc.metrics import MetricsInterceptor

    return [
        *server_interceptors(),  # the call's span, when this process traces
        *([MetricsInterceptor()] if metrics else []),
        DeadlineInterceptor(),  # before any handler code, so its outbound calls get the budget
        ErrorMappingInterceptor(),
        # Inside error mapping (an injected fault looks like a real one), before auth and
        # rate limits, so a faulted call costs nothing and applies nothing.
        *([FaultInjectionInterceptor(config)] if config is not None else []),
        AuthInterceptor(verifier, policy),
        *_rate_limits(config),  # after auth: the caller is the token's user
        RequestCheckInterceptor(),
    ]
