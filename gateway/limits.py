"""What every request from the internet meets before a route: ASGI middlewares.

- ``SecurityHeaders``: on every response, errors included: a Content-Security-Policy
  that allows this origin only and no framing, ``nosniff``, no Referer leaving the
  site, ``X-Frame-Options: DENY``; HSTS only when the gateway serves TLS itself.
- ``BodyLimit``: a body over ``max_body_bytes`` is a 413 problem, refused from its
  Content-Length unread, or cut off as soon as a chunked body passes the limit.
- ``RateLimit``: a token bucket per client (the kit's ``BucketTable``): the verified
  token's client_id and subject, or the remote address for a request without a valid
  token; over it, a 429 problem with ``Retry-After``. Health probes are never limited.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from prometheus_client import Counter
from starlette.datastructures import Headers, MutableHeaders

from gateway.problems import MEDIA_TYPE, RATE_LIMITED, TOO_LARGE, Problem
from shared.config.models import RateLimit as Limit
from shared.rpc.interceptors.ratelimit import BucketTable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
HSTS = ("strict-transport-security", "max-age=31536000; includeSubDomains")
UNLIMITED_PREFIXES = ("/healthz/",)

REJECTIONS = Counter(
    "gateway_rate_limit_rejections", "Requests refused by the gateway's rate limiter."
)


async def send_problem(send: Send, problem: Problem, path: str) -> None:
    """A problem response from a middleware, before any route ran."""
    body = problem.body_bytes(path)
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = (*SECURITY_HEADERS, HSTS) if hsts else SECURITY_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit; FastAPI lets an
    HTTPException through its body parsing, and the app answers it as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes")


def too_large(limit: int) -> Problem:
    return Problem(TOO_LARGE, f"the request body is over {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await send_problem(send, too_large(self.max_bytes), scope["path"])
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await send_problem(send, too_large(self.max_bytes), scope["path"])


class RateLimit:
    """``key_of(scope)`` names the client; the limits are read on each request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        key_of: Callable[[Scope], str | None],
        limit_of: Callable[[Scope], Limit | None],
        table: BucketTable | None = None,
    ) -> None:
        self.app = app
        self.key_of = key_of
        self.limit_of = limit_of
        self.table = table or BucketTable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNLIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        key = self.key_of(scope) if limit is not None else None
        if limit is not None and key is not None:
            wait = self.table.take(key, "http", limit)
            if wait > 0:
                REJECTIONS.inc()
                problem = Problem(
                    RATE_LIMITED,
                    f"over the rate limit of {limit.rate_per_second:g} requests a second"
                    f" (burst {limit.burst}); retry in {wait:.1f} s",
                    "RATE_LIMITED",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await send_problem(send, problem, scope["path"])
                return
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"
