"""Idempotency-Key on every POST: a retried request gets the first one's answer.

The key is the client's (1..64 printable characters, per user: the token's subject).
The first request with a key claims it (``in_flight``) with the request's fingerprint
(method, path and canonical JSON body); once its answer is known the answer is stored
(``done``) and every replay with the same key and body gets it again, with the header
``Idempotent-Replayed: true``. The same key with another body is a 422 problem; a
replay while the first is still running is a 409 (retry after a second). An answer
that a retry may change (5xx, 429, an aborted transaction, a 401) is not stored: the
claim is released, so the retry runs. A claim left ``in_flight`` by an instance that
died is taken over after ``STALE_AFTER``; answers are kept ``ttl`` (24 h by default).

PlaceOrder and TopUp get the same key, so even a retry that runs again after a lost
answer (or a released claim) is a no-op at the service.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from gateway.problems import (
    IDEMPOTENCY_IN_FLIGHT,
    IDEMPOTENCY_KEY_MISSING,
    IDEMPOTENCY_KEY_REUSED,
    MEDIA_TYPE,
    Problem,
    as_problem,
)
from shared.errors import InvalidArgument
from shared.validation import require_idempotency_key

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
STALE_AFTER = timedelta(seconds=60)
# The headers of an answer that a replay repeats.
KEPT_HEADERS = ("Location",)


class Outcome(enum.Enum):
    NEW = "new"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    status: int = 0
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class IdempotencyStore(Protocol):
    async def claim(self, user: str, key: str, fingerprint: str) -> Claim: ...
    async def complete(
        self, user: str, key: str, status: int, body: Any, headers: Mapping[str, str]
    ) -> None: ...
    async def release(self, user: str, key: str) -> None: ...
    async def purge(self) -> int: ...


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def checked_key(value: str | None) -> str:
    """The header's key, or a 400 problem when it is missing or malformed."""
    if value is None or not value.strip():
        raise Problem(IDEMPOTENCY_KEY_MISSING, f"every POST needs an {HEADER} header")
    try:
        return require_idempotency_key(value, HEADER)
    except InvalidArgument as error:
        raise Problem(
            IDEMPOTENCY_KEY_MISSING,
            error.message,
            errors=[{"field": HEADER, "detail": error.message}],
        ) from None


def _retryable(problem: Problem) -> bool:
    """An answer a retry may change: not stored, so the retry runs."""
    return (
        problem.status >= 500
        or problem.status in (401, 429)
        or problem.rule.slug in ("conflict", IDEMPOTENCY_IN_FLIGHT.slug)
    )


Answer = tuple[int, Any, dict[str, str]]


async def run_once(
    store: IdempotencyStore,
    request: Request,
    user: str,
    key: str,
    body: Any,
    handler: Callable[[], Awaitable[Answer]],
) -> JSONResponse:
    """Runs ``handler`` once per (user, key) and answers every repeat the same way."""
    claim = await store.claim(user, key, fingerprint(request.method, request.url.path, body))
    if claim.outcome is Outcome.REPLAY:
        media = MEDIA_TYPE if claim.status >= 400 else "application/json"
        headers = {**claim.headers, REPLAYED: "true"}
        return JSONResponse(claim.body, claim.status, headers=headers, media_type=media)
    if claim.outcome is Outcome.MISMATCH:
        raise Problem(IDEMPOTENCY_KEY_REUSED, f"the {HEADER} {key!r} was used with another request")
    if claim.outcome is Outcome.IN_FLIGHT:
        raise Problem(
            IDEMPOTENCY_IN_FLIGHT,
            f"a request with the {HEADER} {key!r} is still running; retry shortly",
            headers={"Retry-After": "1"},
        )
    done = False
    try:
        try:
            status, answer, headers = await handler()
        except Exception as error:
            problem = as_problem(error)
            if problem is None or _retryable(problem):
                raise
            instance = request.url.path
            await store.complete(user, key, problem.status, problem.body(instance), {})
            done = True
            raise problem from None
        kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
        await store.complete(user, key, status, answer, kept)
        done = True
        return JSONResponse(answer, status, headers=headers)
    finally:
        if not done:  # failed, cancelled, or not stored: the next try runs anew
            await store.release(user, key)


class PostgresIdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, ttl: timedelta) -> None:
        self._pool = pool
        self._ttl = ttl

    async def claim(self, user: str, key: str, fingerprint: str) -> Claim:
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status)"
                " VALUES ($1, $2, $3, 'in_flight') ON CONFLICT (user_id, key) DO NOTHING"
                " RETURNING true",
                user,
                key,
                fingerprint,
            )
            if inserted:
                return Claim(Outcome.NEW)
            row = await conn.fetchrow(
                "SELECT fingerprint, status, response_status, response_body, response_headers,"
                " created_at < now() - $3::interval AS expired,"
                " created_at < now() - $4::interval AS stale"
                " FROM idempotency_keys WHERE user_id = $1 AND key = $2 FOR UPDATE",
                user,
                key,
                self._ttl,
                STALE_AFTER,
            )
            if row is None:  # released between the two statements: the first just failed
                return Claim(Outcome.IN_FLIGHT)
            if row["expired"] or (row["status"] == "in_flight" and row["stale"]):
                await conn.execute(
                    "UPDATE idempotency_keys SET fingerprint = $3, status = 'in_flight',"
                    " response_status = NULL, response_body = NULL,"
                    " response_headers = '{}'::jsonb, created_at = now()"
                    " WHERE user_id = $1 AND key = $2",
                    user,
                    key,
                    fingerprint,
                )
                return Claim(Outcome.NEW)
            if row["fingerprint"] != fingerprint:
                return Claim(Outcome.MISMATCH)
            if row["status"] == "in_flight":
                return Claim(Outcome.IN_FLIGHT)
            return Claim(
                Outcome.REPLAY,
                row["response_status"],
                json.loads(row["response_body"]),
                json.loads(row["response_headers"]),
            )

    async def complete(
        self, user: str, key: str, status: int, body: Any, headers: Mapping[str, str]
    ) -> None:
        await self._pool.execute(
            "UPDATE idempotency_keys SET status = 'done', response_status = $3,"
            " response_body = $4::jsonb, response_headers = $5::jsonb"
            " WHERE user_id = $1 AND key = $2",
            user,
            key,
            status,
            json.dumps(body),
            json.dumps(dict(headers)),
        )

    async def release(self, user: str, key: str) -> None:
        await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND status = 'in_flight'",
            user,
            key,
        )

    async def purge(self) -> int:
        status: str = await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval", self._ttl
        )
        return int(status.rpartition(" ")[2])
