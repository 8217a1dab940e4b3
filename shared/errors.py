"""Domain errors: what went wrong, in the domain's words, with no transport in sight.

Domain code raises these; the gRPC edge (``shared.rpc.status``) maps each class
to one status code and sends its ``reason`` in the trailing metadata, so a
handler never chooses status codes itself and a client can branch on a stable
reason rather than on message text. The reasons are an enum of the contract
(protos/shop/common/v1/error_reason.proto), as kratos keeps them: a class picks
one, and a new reason is added to the proto first.
"""

from __future__ import annotations

from typing import ClassVar, TypeAlias

from shop.common.v1.error_reason_pb2 import ErrorReason

# One value of the contract's ErrorReason enum.
Reason: TypeAlias = ErrorReason.ValueType


def reason_name(reason: Reason) -> str:
    """The reason as the `error-reason` trailer carries it: its name without the prefix."""
    return ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    reason: ClassVar[Reason] = ErrorReason.ERROR_REASON_FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; the message names the field."""

    reason = ErrorReason.ERROR_REASON_INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(DomainError):
    reason = ErrorReason.ERROR_REASON_NOT_FOUND


class AlreadyExists(DomainError):
    reason = ErrorReason.ERROR_REASON_ALREADY_EXISTS


class FailedPrecondition(DomainError):
    reason = ErrorReason.ERROR_REASON_FAILED_PRECONDITION


class Unauthenticated(DomainError):
    reason = ErrorReason.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(DomainError):
    reason = ErrorReason.ERROR_REASON_PERMISSION_DENIED


class Unavailable(DomainError):
    """Something this call needs is down or overloaded; the same call may succeed later."""

    reason = ErrorReason.ERROR_REASON_UNAVAILABLE


class RateLimited(DomainError):
    """This caller made more calls of this method than its limit allows (a token bucket,
    shared/rpc/interceptors/ratelimit.py); the same call may succeed after ``retry_after_ms``."""

    reason = ErrorReason.ERROR_REASON_RATE_LIMITED

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Conflict(DomainError):
    """A concurrent transaction won (serialization failure, deadlock); retry the call."""

    reason = ErrorReason.ERROR_REASON_CONFLICT
