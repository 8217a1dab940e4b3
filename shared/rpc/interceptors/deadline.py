"""The incoming call's deadline, remembered for the calls its handler makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from shared.rpc.deadlines import remember_time_remaining
from shared.rpc.interceptors.base import Context, StreamBehavior, UnaryBehavior, WrappingInterceptor


class DeadlineInterceptor(WrappingInterceptor):
    """Remembers the incoming call's deadline, for the deadline budget of every outbound
    call its handler makes (shared/rpc/deadlines.py, ``ServiceClients.call``)."""

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        # The wrapper runs in the call's own task: the variable is this RPC's alone.
        remember_time_remaining(context.time_remaining())
        return await behavior(request, context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        remember_time_remaining(context.time_remaining())
        async for response in behavior(request, context):
            yield response
