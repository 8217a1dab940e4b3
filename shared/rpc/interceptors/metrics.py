"""RED metrics of every RPC a server handles: calls by status code, and latency."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from shared.observability.metrics import RPC_HANDLED, RPC_SECONDS
from shared.rpc.interceptors.base import Context, StreamBehavior, UnaryBehavior, WrappingInterceptor


def _code_name(context: Context, error: BaseException | None) -> str:
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        # Only a cancelled call escapes the error mapping inside the chain.
        return "CANCELLED"
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


@functools.cache
def _labels(method: str) -> tuple[str, str]:
    """("shop.order.v1.OrderService", "PlaceOrder") of "/shop.order.v1.OrderService/PlaceOrder"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class MetricsInterceptor(WrappingInterceptor):
    """Outside the error mapping, so it sees the status the caller gets."""

    def _observe(
        self, method: str, context: Context, started: float, error: BaseException | None
    ) -> None:
        service, name = _labels(method)
        RPC_HANDLED.labels(service, name, _code_name(context, error)).inc()
        RPC_SECONDS.labels(service, name).observe(time.perf_counter() - started)

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._observe(method, context, started, error)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._observe(method, context, started, error)
