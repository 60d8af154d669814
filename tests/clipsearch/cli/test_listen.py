"""The HTTP port `clipsearch serve` binds before loading anything: its connections must get
TCP_NODELAY, or uvicorn's separate header and body writes wait for the client's delayed ACK
(~40 ms a response on loopback before this was fixed)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import typer

from clipsearch.cli.main import _listen


def test_connections_accepted_on_the_serve_socket_have_nodelay() -> None:
    listener = _listen("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def scenario() -> None:
        accepted = asyncio.Event()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        # uvicorn serves `sockets=[...]` through loop.create_server(sock=...), as here.
        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, client = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(accepted.wait(), 10)
            client.close()

    asyncio.run(scenario())
    assert seen and seen[0] != 0


def test_a_port_in_use_is_refused_before_anything_loads(capsys: pytest.CaptureFixture[str]) -> None:
    first = _listen("127.0.0.1", 0)
    first.listen()
    try:
        with pytest.raises(typer.Exit):
            _listen("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
