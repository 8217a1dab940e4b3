"""Exceptions to gRPC statuses: what the caller gets when a handler raises."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from shared.db.errors import as_domain_error
from shared.errors import DomainError
from shared.observability import trace_context
from shared.rpc import status
from shared.rpc.interceptors.base import Context, StreamBehavior, UnaryBehavior, WrappingInterceptor

log = logging.getLogger(__name__)


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
