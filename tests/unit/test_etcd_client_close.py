"""A stopping process cannot be held by aetcd's close of its watch stream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pki.authority import ensure_authority
from shared.registry.etcd import etcd_client
from shared.tls import OPERATOR, ClientTLS


class StuckWatcher:
    """A watcher whose stream never ends: its shutdown waits forever."""

    def __init__(self) -> None:
        self.shutdowns = 0

    async def shutdown(self) -> None:
        self.shutdowns += 1
        await asyncio.Event().wait()


@pytest.mark.parametrize("secure", [True, False], ids=["tls", "plaintext"])
async def test_close_gives_up_on_a_stuck_watch_stream_and_drops_the_channel(
    secure: bool, tmp_path: Path
) -> None:
    # No etcd is needed: connect only opens a lazy channel.
    tls = None
    if secure:
        ensure_authority(tmp_path, [OPERATOR])
        tls = ClientTLS.operator(tmp_path)
    client = etcd_client("127.0.0.1:1", tls=tls)
    client.close_seconds = 0.2
    await client.connect()
    channel = client.channel
    assert channel is not None
    stuck = StuckWatcher()
    client._watcher = stuck

    started = time.perf_counter()
    async with asyncio.timeout(5):
        await client.close()
    took = time.perf_counter() - started

    assert stuck.shutdowns == 1
    assert 0.2 <= took < 2.0
    assert client.channel is None
    assert channel._channel.closed()  # the gRPC channel itself, not only our reference


async def test_close_of_a_client_that_never_connected_returns_at_once() -> None:
    client = etcd_client("127.0.0.1:1", tls=None)
    async with asyncio.timeout(1):
        await client.close()
    assert client.channel is None
