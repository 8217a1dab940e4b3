"""Errors at the edge: RFC 9457 problem details (``application/problem+json``).

ONE table (``RULES``) turns what a service answered, a gRPC status code and its
``error-reason`` trailer (shared/rpc/status.py), into an HTTP status and a problem
``type``. A reason's own row wins over its code's row, so UNAVAILABLE with
``CIRCUIT_OPEN`` reads differently from a plain UNAVAILABLE. The body carries the
service's message for people (``detail``), the reason for programs, and never an
exception class, SQL or a stack: anything unexpected is a 500 "internal error" with
the trace id and an error id, which the log line carries too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict

from shared.errors import DomainError, InvalidArgument, reason_name
from shared.observability.trace_context import current_trace_id
from shared.rpc.status import FIELD_KEY, REASON_KEY, RETRY_AFTER_KEY, status_code
from shop.common.v1.error_reason_pb2 import ErrorReason

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://shop.local/problems/"
C = grpc.StatusCode
R = ErrorReason


@dataclass(frozen=True)
class Rule:
    status: int
    slug: str
    title: str
    # Whether the service's message may be shown (not for failures that are ours).
    show_detail: bool = True

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug


INTERNAL = Rule(500, "internal", "Internal error", show_detail=False)

# (code, reason name or None) -> rule; (code, None) is the code's row.
RULES: Mapping[tuple[grpc.StatusCode, str | None], Rule] = {
    (C.OK, None): INTERNAL,  # an error that says OK is a bug of ours
    (C.CANCELLED, None): Rule(503, "cancelled", "The call was cancelled"),
    (C.UNKNOWN, None): INTERNAL,
    (C.INVALID_ARGUMENT, None): Rule(422, "invalid-argument", "Invalid argument"),
    (C.DEADLINE_EXCEEDED, None): Rule(504, "timeout", "A service did not answer in time"),
    (C.NOT_FOUND, None): Rule(404, "not-found", "Not found"),
    (C.ALREADY_EXISTS, None): Rule(409, "already-exists", "Already exists"),
    (C.PERMISSION_DENIED, None): Rule(403, "forbidden", "Forbidden"),
    (C.RESOURCE_EXHAUSTED, None): Rule(429, "rate-limited", "Too many requests"),
    (C.FAILED_PRECONDITION, None): Rule(409, "failed-precondition", "Not allowed in this state"),
    (C.ABORTED, None): Rule(409, "conflict", "A concurrent change won; retry"),
    (C.OUT_OF_RANGE, None): Rule(400, "out-of-range", "Out of range"),
    (C.UNIMPLEMENTED, None): Rule(501, "not-implemented", "Not implemented"),
    (C.INTERNAL, None): INTERNAL,
    (C.UNAVAILABLE, None): Rule(503, "unavailable", "Service unavailable; retry later"),
    (C.UNAVAILABLE, reason_name(R.ERROR_REASON_CIRCUIT_OPEN)): Rule(
        503, "circuit-open", "Service unavailable (circuit open); retry later"
    ),
    (C.UNAVAILABLE, reason_name(R.ERROR_REASON_NO_INSTANCE)): Rule(
        503, "no-instance", "Service unavailable (no instance); retry later"
    ),
    (C.UNAVAILABLE, reason_name(R.ERROR_REASON_CATALOG_UNAVAILABLE)): Rule(
        503, "catalog-unavailable", "The catalog is unavailable; retry later"
    ),
    (C.DATA_LOSS, None): INTERNAL,
    (C.UNAUTHENTICATED, None): Rule(401, "unauthenticated", "Unauthenticated"),
}

UNAUTHENTICATED = RULES[(C.UNAUTHENTICATED, None)]
RATE_LIMITED = RULES[(C.RESOURCE_EXHAUSTED, None)]
# Problems the gateway raises itself, never from a service.
BAD_REQUEST = Rule(400, "bad-request", "Bad request")
VALIDATION = Rule(422, "validation-error", "The request is not valid")
IDEMPOTENCY_KEY_MISSING = Rule(400, "idempotency-key-missing", "Idempotency-Key header required")
IDEMPOTENCY_KEY_REUSED = Rule(
    422, "idempotency-key-reused", "This Idempotency-Key was used with another request"
)
IDEMPOTENCY_IN_FLIGHT = Rule(
    409, "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"
)
INSUFFICIENT_SCOPE = Rule(403, "insufficient-scope", "The token lacks a required scope")
TOO_LARGE = Rule(413, "payload-too-large", "Request body too large")
NOT_ROUTED = Rule(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = Rule(405, "method-not-allowed", "Method not allowed")
BAD_GATEWAY = Rule(502, "bad-gateway", "The upstream server failed")


class ProblemBody(BaseModel):
    """The problem document, as the OpenAPI document shows it."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    reason: str | None = None
    trace_id: str | None = None
    errors: list[dict[str, Any]] | None = None


@dataclass
class Problem(Exception):
    """Raised anywhere below the routes; turned into its response by the app."""

    rule: Rule
    detail: str | None = None
    reason: str | None = None
    errors: Sequence[Mapping[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail or self.rule.title)

    @property
    def status(self) -> int:
        return self.rule.status

    def body(self, instance: str | None = None, trace_id: str | None = None) -> dict[str, Any]:
        """The document; ``trace_id`` defaults to the current span's (the request's)."""
        trace_id = trace_id or current_trace_id()
        body: dict[str, Any] = {
            "type": self.rule.type,
            "title": self.rule.title,
            "status": self.rule.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.reason:
            body["reason"] = self.reason
        if trace_id:
            body["trace_id"] = trace_id
        if self.errors:
            body["errors"] = [dict(e) for e in self.errors]
        body.update(self.extra)
        return body

    def body_bytes(self, instance: str | None = None) -> bytes:
        return json.dumps(self.body(instance), separators=(",", ":")).encode()


def rule_for(code: grpc.StatusCode, reason: str | None) -> Rule:
    """The row of (code, reason), else the code's row; every code has one."""
    return RULES.get((code, reason)) or RULES[(code, None)]


def _trailer(metadata: Any, key: str) -> str | None:
    for entry_key, value in metadata or ():
        if entry_key == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def from_rpc_error(error: grpc.aio.AioRpcError) -> Problem:
    trailers = error.trailing_metadata()
    reason = _trailer(trailers, REASON_KEY)
    return _problem(error.code(), reason, error.details() or "", trailers)


def from_domain_error(error: DomainError) -> Problem:
    """A failure the kit raised before any call (no instance of the service registered),
    or a rule of the gateway's own (a cart's size)."""
    trailers = ((FIELD_KEY, error.field),) if isinstance(error, InvalidArgument) else ()
    return _problem(status_code(error), reason_name(error.reason), error.message, trailers)


def _problem(code: grpc.StatusCode, reason: str | None, details: str, trailers: Any) -> Problem:
    rule = rule_for(code, reason)
    if not rule.show_detail:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "upstream %s (%s) answered: %s; error id %s", code.name, reason, details, error_id
        )
        return internal_error(error_id)
    problem = Problem(rule, details or None, reason)
    if code is C.INVALID_ARGUMENT:
        field_name = _trailer(trailers, FIELD_KEY)
        if field_name:
            problem.errors = [{"field": field_name, "detail": details}]
    if rule.status in (429, 503):
        retry_ms = _trailer(trailers, RETRY_AFTER_KEY)
        seconds = max(1, -(-int(retry_ms) // 1000)) if retry_ms and retry_ms.isdigit() else 1
        problem.headers["Retry-After"] = str(seconds)
    if rule.status == 401:
        problem.headers["WWW-Authenticate"] = 'Bearer realm="shop", error="invalid_token"'
    return problem


def internal_error(error_id: str) -> Problem:
    return Problem(
        INTERNAL,
        f"internal error; quote error id {error_id} when reporting it",
        reason_name(R.ERROR_REASON_INTERNAL),
        extra={"error_id": error_id},
    )


def as_problem(error: BaseException) -> Problem | None:
    """The problem a known failure stands for; None for anything else (a bug)."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        return from_rpc_error(error)
    if isinstance(error, DomainError):
        return from_domain_error(error)
    return None


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status as a problem document."""
    return {
        status: {
            "model": ProblemBody,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
            "description": _DESCRIPTIONS.get(status, "A problem"),
        }
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "Bad request (a missing Idempotency-Key, malformed JSON)",
    401: "No valid bearer token",
    403: "The token lacks the scope or the right",
    404: "Not found",
    409: "Conflicts with the resource's state, or the same Idempotency-Key is in flight",
    413: "Request body too large",
    422: "The request is not valid (field errors), or an Idempotency-Key was reused",
    429: "Over the rate limit; see Retry-After",
    500: "Internal error (with a trace id)",
    502: "The upstream server failed",
    503: "A service is unavailable; see Retry-After",
    504: "A service did not answer in time",
}
# What every route may answer, whatever it does.
COMMON = (413, 429, 500)
