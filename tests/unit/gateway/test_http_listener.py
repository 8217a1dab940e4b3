"""The gateway's HTTP port sends without Nagle's algorithm: an answer's body never waits
for the client's delayed ACK of its headers (about 40 ms a request on a kept-alive
connection before the listener was made as a TCP socket by name)."""

from __future__ import annotations

import asyncio
import socket

from gateway.server import http_listener


async def test_every_connection_the_gateway_accepts_has_tcp_nodelay() -> None:
    listener = http_listener("127.0.0.1", 0)
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()
    # As uvicorn serves a socket it is given: loop.create_server(sock=...).
    server = await asyncio.start_server(lambda _r, w: accepted.set_result(w), sock=listener)
    async with server:
        _reader, client = await asyncio.open_connection(*listener.getsockname())
        served = await asyncio.wait_for(accepted, 5)
        sock = served.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()
        served.close()
        await client.wait_closed()
