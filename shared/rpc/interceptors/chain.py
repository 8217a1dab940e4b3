"""The chain every service's server runs, outermost first."""

from __future__ import annotations

import grpc

from shared.auth.tokens import TokenVerifier
from shared.config.center import ConfigCenter
from shared.observability.tracing import server_interceptors
from shared.rpc.interceptors.auth import AccessPolicy, AuthInterceptor
from shared.rpc.interceptors.deadline import DeadlineInterceptor
from shared.rpc.interceptors.error_mapping import ErrorMappingInterceptor
from shared.rpc.interceptors.faults import FaultInjectionInterceptor
from shared.rpc.interceptors.metrics import MetricsInterceptor
from shared.rpc.interceptors.ratelimit import RateLimitInterceptor
from shared.rpc.interceptors.request_checks import RequestCheckInterceptor


def default_chain(
    verifier: TokenVerifier,
    policy: AccessPolicy,
    config: ConfigCenter | None = None,
    metrics: bool = True,
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the span and the metrics start before auth, so rejections are
    traced and counted too."""
    return [
        *server_interceptors(),  # the call's span, when this process traces
        *([MetricsInterceptor()] if metrics else []),
        DeadlineInterceptor(),  # before any handler code, so its outbound calls get the budget
        ErrorMappingInterceptor(),
        # Inside error mapping (an injected fault looks like a real one), before auth and
        # rate limits, so a faulted call costs nothing and applies nothing.
        *([FaultInjectionInterceptor(config)] if config is not None else []),
        AuthInterceptor(verifier, policy),
        # After auth: the caller is the token's user. Per caller and method, from the
        # config center; none without one.
        *([RateLimitInterceptor(config)] if config is not None else []),
        RequestCheckInterceptor(),
    ]
