"""The REST edge as the load's way in: HTTP/JSON to the gateway, timed, never raising.

The load generator calls the gateway over HTTP only (it knows its routes, never its
code), with one ``httpx.AsyncClient`` per scenario: keep-alive, a connection pool as
large as the scenario's in-flight cap, so an arrival never waits for a connection.

Tokens: the load generator's own OAuth2 client (``loadgen``, ops/oauth_clients.py) asks
the authorization server, through the gateway's ``/oauth2/token``, for a token with the
client credentials grant, authenticating with ``client_secret_basic``. ``ClientToken``
keeps it and fetches the next one a minute before it expires (or at half its life), one
fetch at a time. Such a token's subject is one pseudo-user (uuid5 of
``oauth-client:loadgen``): every order of a REST scenario is that buyer's.

The calls mirror loadgen/calls.py: each is recorded once, from its scheduled time, as OK
or what went wrong (``HTTP_<status>``, or the transport error's name). PlaceOrder is
retried with the same ``Idempotency-Key`` (one order, however many attempts) on a 502,
503, 504, a 409 of a key still in flight, or a broken connection, until
``PLACE_ORDER_DEADLINE`` has passed. An order is followed with its Server-Sent Events
(``GET /orders/{id}/events``), the REST form of WatchOrder: one request, told of every
change as it happens, so its completion time is measured as the gRPC watch's is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from loadgen.buyers import Buyer
from loadgen.calls import PLACE_ORDER_DEADLINE, UNARY_DEADLINE
from loadgen.driver import Recorder

API = "/api/v1"
TOKEN_PATH = "/oauth2/token"
LIVE_PATH = "/healthz/live"
IDEMPOTENCY_KEY = "Idempotency-Key"
# What each recorded operation is over REST (the report keeps the RPC names, so the two
# edges' reports compare key for key).
ROUTES = {
    "GetProduct": f"GET {API}/products/{{product_id}} (GetProduct, then GetStock)",
    "PlaceOrder": f"POST {API}/orders",
    "WatchOrder": f"GET {API}/orders/{{order_id}}/events (Server-Sent Events)",
    "Health/Check": f"GET {LIVE_PATH} (no token, no service)",
}
RETRIED_STATUSES = frozenset({409, 502, 503, 504})
RETRY_PAUSE = 0.1
MAX_RETRY_PAUSE = 1.0
REWATCH_PAUSE = 0.25
FINAL = {"confirmed": "CONFIRMED", "rejected": "REJECTED", "cancelled": "CANCELLED"}


def code_of(status: int) -> str:
    return "OK" if 200 <= status < 300 else f"HTTP_{status}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: only to name the buyer it stands for."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


class ClientToken:
    """The client credentials grant's access token, fetched again before it expires."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport = transport  # the tests' stand-in for the network
        self.client_id = client_id
        self._basic = httpx.BasicAuth(client_id, secret)
        self._token = ""
        self._expires_at = 0.0  # unix seconds the token is good until
        self._refresh_at = 0.0  # monotonic: when to fetch the next one
        self._lock = asyncio.Lock()
        self.fetched = 0

    async def get(self) -> str:
        if self._token and time.monotonic() < self._refresh_at:
            return self._token
        async with self._lock:
            if not self._token or time.monotonic() >= self._refresh_at:
                await self._fetch()
        return self._token

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=15.0, transport=self._transport
        ) as http:
            reply = await http.post(
                TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=self._basic
            )
        if reply.status_code != 200:
            raise RuntimeError(
                f"the client credentials grant of {self.client_id!r} was refused:"
                f" {reply.status_code} {reply.text[:200]}"
            )
        answer = reply.json()
        lifetime = float(answer.get("expires_in", 300))
        self._token = str(answer["access_token"])
        self._expires_at = time.time() + lifetime
        # A minute early, or at half its life for a short one.
        self._refresh_at = time.monotonic() + max(lifetime / 2, lifetime - 60)
        self.fetched += 1

    async def buyer(self, min_life: float = 300.0) -> Buyer:
        """The one buyer this client is: its pseudo-user, with a token that lives at least
        ``min_life`` seconds more (a gRPC scenario holds it, unrefreshed, for its length)."""
        token = await self.get()
        if self._expires_at - time.time() < min_life:
            async with self._lock:
                await self._fetch()
            token = self._token
        return Buyer(
            email=f"oauth-client:{self.client_id}",
            user_id=str(jwt_claims(token)["sub"]),
            token=token,
            expires_at=self._expires_at,
        )


def http_client(base_url: str, concurrency: int, *, keep_alive: bool = True) -> httpx.AsyncClient:
    """A pool as large as the in-flight cap; its connections kept alive, or (the event
    streams' client) each closed when its stream ends."""
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency if keep_alive else 0,
        ),
        timeout=httpx.Timeout(UNARY_DEADLINE),
    )


class RestCalls:
    """``http`` takes the requests, ``streams`` (``http`` if None) the event streams."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: ClientToken,
        recorder: Recorder,
        streams: httpx.AsyncClient | None = None,
    ) -> None:
        self.http = http
        self.streams = streams or http
        self.token = token
        self.recorder = recorder

    async def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {await self.token.get()}"}
        if key is not None:
            headers[IDEMPOTENCY_KEY] = key
        return headers

    async def live(self, started: float) -> bool:
        """The bare HTTP request: the gateway's liveness, no token, no service."""
        return await self._timed_get("Health/Check", LIVE_PATH, started, {}) is not None

    async def get_product(self, product_id: str, started: float) -> bool:
        path = f"{API}/products/{product_id}"
        return await self._timed_get("GetProduct", path, started, await self.headers()) is not None

    async def _timed_get(
        self, name: str, path: str, started: float, headers: Mapping[str, str]
    ) -> Any:
        loop = asyncio.get_running_loop()
        code = "CANCELLED"
        try:
            reply = await self.http.get(path, headers=headers)
            code = code_of(reply.status_code)
            return reply.json() if code == "OK" else None
        except httpx.HTTPError as error:
            code = type(error).__name__
            return None
        finally:
            self.recorder.call(name, started, loop.time(), code)

    async def post(self, path: str, body: Any, key: str) -> httpx.Response:
        """An untimed POST (setup: funding the wallet); raises on anything but a 2xx."""
        reply = await self.http.post(path, json=body, headers=await self.headers(key))
        reply.raise_for_status()
        return reply

    async def get(self, path: str) -> httpx.Response:
        """An untimed GET (setup: warming up); raises on anything but a 2xx."""
        reply = await self.http.get(path, headers=await self.headers())
        reply.raise_for_status()
        return reply

    async def place_order(self, body: Any, key: str, started: float) -> str | None:
        """POST /orders, retried with the same key as the module says; the order's id,
        or None. Recorded once, from ``started``, with the last attempt's outcome."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PLACE_ORDER_DEADLINE
        pause = RETRY_PAUSE
        code = "CANCELLED"
        try:
            while True:
                left = max(0.001, deadline - loop.time())
                status = 0
                try:
                    reply = await self.http.post(
                        f"{API}/orders",
                        json=body,
                        headers=await self.headers(key),
                        timeout=min(UNARY_DEADLINE, left),
                    )
                    status, code = reply.status_code, code_of(reply.status_code)
                    if code == "OK":
                        return str(reply.json()["order_id"])
                except httpx.HTTPError as error:
                    code = type(error).__name__
                retried = status in RETRIED_STATUSES or status == 0
                if not retried or deadline - loop.time() <= pause:
                    return None
                self.recorder.retried["PlaceOrder"] += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
        finally:
            self.recorder.call("PlaceOrder", started, loop.time(), code)

    async def follow_order(self, order_id: str, placed_at: float, deadline: float) -> str:
        """The order's events until a final status; recorded as WatchOrder (latency to the
        first event, code how the last stream ended) and as the saga. A stream that ends
        before a final status is opened again until ``deadline`` seconds have passed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        give_up = started + deadline
        first: float | None = None
        terminal: str | None = None
        terminal_at: float | None = None
        reason = ""
        code = "CANCELLED"
        path = f"{API}/orders/{order_id}/events"
        try:
            while terminal is None and loop.time() < give_up:
                try:
                    async with asyncio.timeout(give_up - loop.time()):
                        async with self.streams.stream(
                            "GET", path, headers=await self.headers(), timeout=None
                        ) as stream:
                            code = code_of(stream.status_code)
                            if code != "OK":
                                await stream.aread()
                            else:
                                # Read to the stream's end (the gateway ends it after a
                                # final status): the connection goes back to the pool
                                # instead of being closed under a half-read answer.
                                async for event, data in events(stream):
                                    if event == "error":
                                        code = f"HTTP_{data.get('status', 500)}"
                                    elif terminal is None:
                                        first = first or loop.time()
                                        state = FINAL.get(str(data.get("status")))
                                        if state is not None:
                                            terminal, terminal_at = state, loop.time()
                                            reason = str(data.get("status_reason", ""))
                except TimeoutError:
                    code = "DEADLINE_EXCEEDED"
                    break
                except httpx.HTTPError as error:
                    code = type(error).__name__
                if terminal is None:
                    await asyncio.sleep(REWATCH_PAUSE)
        finally:
            self.recorder.call("WatchOrder", started, first if first else loop.time(), code)
            self.recorder.saga(placed_at, terminal_at, terminal or "UNFINISHED", reason)
        return terminal or "UNFINISHED"


async def events(stream: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data as JSON) of each Server-Sent Event; comments are skipped."""
    name = "message"
    async for line in stream.aiter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:].strip())
        elif not line:
            name = "message"
