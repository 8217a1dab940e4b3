"""Domain errors: what went wrong, in the domain's words, with no transport in sight.

Domain code raises these; the gRPC edge (``shared.rpc.status``) maps each class
to one status code and sends its ``reason`` in the trailing metadata, so a
handler never chooses status codes itself and a client can branch on a stable
reason rather than on message text (kratos's "error reasons are contract").
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    reason: ClassVar[str] = "FAILED_PRECONDITION"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; the message names the field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class Unavailable(DomainError):
    """Something this call needs is down or overloaded; the same call may succeed later."""

    reason = "UNAVAILABLE"


class RateLimited(DomainError):
    """This caller made more calls of this method than its limit allows (a token bucket,
    shared/rpc/interceptors/ratelimit.py); the same call may succeed after ``retry_after_ms``."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Conflict(DomainError):
    """A concurrent transaction won (serialization failure, deadlock); retry the call."""

    reason = "CONFLICT"
