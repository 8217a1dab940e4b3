"""Buyers: real accounts made through the user service, before any measurement.

Register and Login each cost an argon2 hash (about half a second of CPU here),
so signing in is done once per run, a few at a time, outside the measured
window. A token cache (used by `make load`, kept beside the dev stack's data)
lets the next run skip Login while its tokens are still valid; a token the
services reject is replaced by a fresh Login when the buyers are warmed up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc

from ops.shop_client import ShopClient
from shared.rpc.client import ServiceClients

log = logging.getLogger(__name__)

T = TypeVar("T")
PASSWORD = "load-buyer-password-1"
SIGN_IN_PARALLEL = 4  # the user service hashes on a small thread pool
SIGN_IN_ATTEMPTS = 4
# On a busy machine a hash can queue past the client's deadline; trying again is safe
# (a Register that did land answers ALREADY_EXISTS the second time).
RETRYABLE = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
SETUP_PARALLEL = 32
# A cached token is reused only if it outlives the longest run by a margin.
MIN_TOKEN_LIFE_SECONDS = 20 * 60


def buyer_email(index: int) -> str:
    return f"load-buyer-{index:05d}@load.shop.local"


@dataclass(frozen=True)
class Buyer:
    email: str
    user_id: str
    token: str
    expires_at: float  # unix seconds


class TokenCache:
    """email -> Buyer in a JSON file; entries close to expiry are ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Buyer]:
        try:
            raw = json.loads(self.path.read_text())
            buyers = {email: Buyer(**entry) for email, entry in raw.items()}
        except (OSError, ValueError, TypeError):
            return {}
        fresh_until = time.time() + MIN_TOKEN_LIFE_SECONDS
        return {e: b for e, b in buyers.items() if b.expires_at > fresh_until}

    def save(self, buyers: Sequence[Buyer]) -> None:
        known = self.load() | {b.email: b for b in buyers}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({e: asdict(b) for e, b in known.items()}, indent=1))


async def bounded(parallel: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(parallel)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(1, SIGN_IN_ATTEMPTS + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or attempt == SIGN_IN_ATTEMPTS:
                raise
            log.warning("sign-in call failed (%s); trying again", error.code().name)
            await asyncio.sleep(attempt)
    raise AssertionError("unreachable")


async def sign_in(clients: ServiceClients, email: str) -> Buyer:
    """Register (ALREADY_EXISTS is fine: an earlier run made the account), then Login."""
    client = ShopClient(clients)
    try:
        await _retrying(partial(client.register, email, PASSWORD))
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    reply = await _retrying(partial(client.login, email, PASSWORD))
    return Buyer(
        email=email,
        user_id=reply.user.user_id,
        token=reply.access_token,
        expires_at=float(reply.expires_at.seconds),
    )


async def sign_in_buyers(
    clients: ServiceClients, count: int, cache: TokenCache | None = None
) -> list[Buyer]:
    emails = [buyer_email(i) for i in range(count)]
    cached = cache.load() if cache is not None else {}
    missing = [e for e in emails if e not in cached]
    if missing:
        log.info("signing in %d buyers (%d cached)", len(missing), len(emails) - len(missing))
        fresh = await bounded(SIGN_IN_PARALLEL, [partial(sign_in, clients, e) for e in missing])
        cached.update({b.email: b for b in fresh})
        if cache is not None:
            cache.save(fresh)
    return [cached[e] for e in emails]


async def refresh_rejected(
    clients: ServiceClients,
    buyers: list[Buyer],
    probe: Callable[[Buyer], Awaitable[None]],
    cache: TokenCache | None = None,
) -> list[Buyer]:
    """Runs ``probe`` per buyer; a buyer whose token is UNAUTHENTICATED signs in again."""

    async def check(buyer: Buyer) -> Buyer:
        try:
            await probe(buyer)
            return buyer
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        log.info("token of %s was rejected; signing in again", buyer.email)
        fresh = await sign_in(clients, buyer.email)
        await probe(fresh)
        return fresh

    checked = await bounded(SETUP_PARALLEL, [partial(check, b) for b in buyers])
    replaced = [b for b, old in zip(checked, buyers, strict=True) if b is not old]
    if replaced and cache is not None:
        cache.save(replaced)
    return checked
