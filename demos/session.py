"""What every demo against `make run` shares: connect to the dev stack, check the
services it needs are up, run, print the one summary line, and exit 0, 1 or 2.

Exit 2: the system is not up (nothing was tried); 1: the behaviour did not show, or
the demo could not finish; 0: it showed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aetcd
import grpc

from devstack.launcher import open_directory
from devstack.stack import Stack
from ops.config_admin import SCOPES
from shared.config import store
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS


class Outcome(Protocol):
    """What a demo reports: whether the behaviour showed, and its one summary line."""

    @property
    def ok(self) -> bool: ...

    @property
    def summary(self) -> str: ...


@dataclass(frozen=True)
class DemoResult:
    ok: bool
    summary: str


Demo = Callable[[aetcd.Client, ServiceDirectory, Stack], Awaitable[Outcome]]


async def on_make_run(name: str, needs: Sequence[str], demo: Demo) -> int:
    # The clients' retry and breaker notes are for services' logs; the demo says what happens.
    logging.getLogger("shared.rpc.client").setLevel(logging.ERROR)
    stack = Stack("dev")
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        # etcd first: discovery would wait for it forever, where one read fails at once.
        await store.read(client, SCOPES, "global")
    except (aetcd.ClientError, OSError) as error:
        print(
            f"{name}: etcd at {stack.etcd_endpoint} is not reachable ({error}); "
            "start the system with `make run`"
        )
        await client.close()
        return 2
    try:
        async with open_directory(stack) as directory:
            if missing := [s for s in needs if not directory.instances(s)]:
                print(
                    f"{name}: no {', '.join(missing)} registered; start the system with `make run`"
                )
                return 2
            result = await demo(client, directory, stack)
    except (grpc.aio.AioRpcError, TimeoutError, store.ConfigConflict) as error:
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        print(f"{name}: FAILED: {detail}")
        return 1
    finally:
        await client.close()
    print(result.summary, flush=True)
    return 0 if result.ok else 1
