"""The gRPC edge of the domain errors: one status code per error class.

Trailing metadata carries what a program should branch on: ``error-reason``
(the error class's stable reason), ``error-field`` for a bad argument and
``error-id`` for an unexpected failure, the id to quote when reporting it, and
``retry-after-ms`` when a rate limit refused the call (the wait, in whole milliseconds).
A caller's own failures (a circuit open, a deadline spent) carry an ``error-reason`` too.
"""

from __future__ import annotations

import grpc

from shared.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    reason_name,
)
from shop.common.v1.error_reason_pb2 import ErrorReason

REASON_KEY = "error-reason"
FIELD_KEY = "error-field"
ERROR_ID_KEY = "error-id"
RETRY_AFTER_KEY = "retry-after-ms"
# The error-reason of the failures a caller makes up without calling anyone
# (shared/rpc/client.py).
CIRCUIT_OPEN = reason_name(ErrorReason.ERROR_REASON_CIRCUIT_OPEN)
DEADLINE_BUDGET_SPENT = reason_name(ErrorReason.ERROR_REASON_DEADLINE_BUDGET_SPENT)
INSTANCE_LEFT = reason_name(ErrorReason.ERROR_REASON_INSTANCE_LEFT)
INTERNAL = reason_name(ErrorReason.ERROR_REASON_INTERNAL)

_STATUS: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Conflict: grpc.StatusCode.ABORTED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(error: DomainError) -> grpc.StatusCode:
    """The code of the nearest mapped class in the error's ancestry."""
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.FAILED_PRECONDITION


def trailers(error: DomainError) -> tuple[tuple[str, str], ...]:
    pairs = [(REASON_KEY, reason_name(error.reason))]
    if isinstance(error, InvalidArgument):
        pairs.append((FIELD_KEY, error.field))
    if isinstance(error, RateLimited):
        pairs.append((RETRY_AFTER_KEY, str(error.retry_after_ms)))
    return tuple(pairs)


async def abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    """Ends the call with the error's status; raises (grpc.aio's AbortError)."""
    context.set_trailing_metadata(trailers(error))
    await context.abort(status_code(error), error.message)


async def abort_internal(context: grpc.aio.ServicerContext, error_id: str) -> None:
    context.set_trailing_metadata(((REASON_KEY, INTERNAL), (ERROR_ID_KEY, error_id)))
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error; quote error id {error_id} when reporting it",
    )


def local_error(code: grpc.StatusCode, reason: str, details: str) -> grpc.aio.AioRpcError:
    """A failure a caller decided itself, of the same type (and with the same trailers) as
    one from a server, so callers handle both alike."""
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((REASON_KEY, reason)),
        details=details,
        debug_error_string="",
    )
