"""The measured calls: through the shop's own discovery client, timed, never raising.

Every call goes through ``ServiceClients.call`` (etcd discovery, round-robin,
UNAVAILABLE retried on another instance), exactly as a service calls a peer.
Each call is recorded once, as OK or its status code; the caller gets the reply
or None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.errors import DomainError
from shared.rpc.client import ServiceClients
from shared.rpc.status import status_code
from shop.order.v1 import order_pb2, order_pb2_grpc
from tests.e2e.load.driver import Recorder

T = TypeVar("T")

UNARY_DEADLINE = 5.0
CHECK = "Health/Check"
TERMINAL = {
    order_pb2.ORDER_STATUS_CONFIRMED: "CONFIRMED",
    order_pb2.ORDER_STATUS_REJECTED: "REJECTED",
    order_pb2.ORDER_STATUS_CANCELLED: "CANCELLED",
}
_HEALTH_REQUEST = health_pb2.HealthCheckRequest(service="")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Calls:
    def __init__(self, clients: ServiceClients, recorder: Recorder) -> None:
        self._clients = clients
        self.recorder = recorder
        # Stubs are rebuilt per call by ServiceClients' contract; caching them keeps
        # the generator's own cost per call low (the baseline pays the same).
        self._stubs: dict[tuple[type, grpc.aio.Channel], Any] = {}

    def _stub(self, stub_type: type) -> Callable[[grpc.aio.Channel], Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            key = (stub_type, channel)
            stub = self._stubs.get(key)
            if stub is None:
                stub = self._stubs[key] = stub_type(channel)
            return stub

        return make

    async def timed(self, rpc: str, started: float, call: Awaitable[T]) -> T | None:
        """Awaits ``call``, recording it as ``rpc`` from ``started`` (a loop time)."""
        loop = asyncio.get_running_loop()
        code = "CANCELLED"
        try:
            reply = await call
            code = "OK"
            return reply
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            return None
        except DomainError as error:  # no instance registered at all
            code = status_code(error).name
            return None
        finally:
            self.recorder.call(rpc, started, loop.time(), code)

    async def unary(
        self,
        service: str,
        stub_type: type,
        method: str,
        request: Any,
        token: str,
        *,
        started: float | None = None,
    ) -> Any:
        """One unary call, recorded under ``method``; latency from ``started`` if given."""
        metadata = bearer(token)

        def invoke(stub: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = getattr(stub, method)(
                request, timeout=UNARY_DEADLINE, metadata=metadata
            )
            return result

        begin = asyncio.get_running_loop().time() if started is None else started
        return await self.timed(
            method, begin, self._clients.call(service, self._stub(stub_type), invoke)
        )

    async def check(self, service: str, started: float) -> bool:
        """The bare RPC: health Check on an instance of ``service``, no token."""

        def invoke(stub: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = stub.Check(_HEALTH_REQUEST, timeout=UNARY_DEADLINE)
            return result

        call = self._clients.call(service, self._stub(health_pb2_grpc.HealthStub), invoke)
        return await self.timed(CHECK, started, call) is not None

    async def follow_order(
        self, order_id: str, token: str, placed_at: float, deadline: float
    ) -> str:
        """WatchOrder until a terminal status; records the stream and the saga.

        The WatchOrder call is recorded once: its latency is the time to the first
        message (the order as it is now), its code how the stream ended. Returns
        the terminal state's name, or UNFINISHED.
        """
        loop = asyncio.get_running_loop()
        metadata = bearer(token)
        request = order_pb2.WatchOrderRequest(order_id=order_id)
        started = loop.time()
        first_message: float | None = None
        terminal: str | None = None
        terminal_at: float | None = None

        async def watch(stub: Any) -> None:
            nonlocal first_message, terminal, terminal_at
            stream = stub.WatchOrder(request, timeout=deadline, metadata=metadata)
            async for reply in stream:
                if first_message is None:
                    first_message = loop.time()
                state = TERMINAL.get(reply.order.status)
                if state is not None and terminal is None:
                    terminal, terminal_at = state, loop.time()

        code = "CANCELLED"
        try:
            await self._clients.call("order", self._stub(order_pb2_grpc.OrderServiceStub), watch)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        except DomainError as error:
            code = status_code(error).name
        finally:
            self.recorder.call(
                "WatchOrder", started, first_message if first_message else loop.time(), code
            )
            self.recorder.saga(placed_at, terminal_at, terminal or "UNFINISHED")
        return terminal or "UNFINISHED"
