"""A stream the server cuts (the drain's grace ran out, gateway_http/sse.py): its job is
cancelled even when the client has stopped reading, and the cut does not wait on the client.

The ASGI peer here is a plain ``send`` that blocks, as uvicorn's does when a client's socket
is full: no server is needed to show the order of the cut's two steps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway_http.sse import CUT_SEND_S, EventStreamResponse


async def test_a_cut_stream_cancels_its_job_though_its_client_stopped_reading() -> None:
    cancelled = asyncio.Event()
    sent: list[dict[str, Any]] = []
    socket_full = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await asyncio.sleep(3600)  # the job is still running
        yield b"data: never\n\n"

    async def on_disconnect() -> None:
        cancelled.set()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) > 2:  # after the head and the first piece, the client reads no more
            socket_full.set()
            await asyncio.sleep(3600)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client has not gone
        return {"type": "http.disconnect"}

    response = EventStreamResponse(
        events(), {}, on_disconnect=on_disconnect, on_cut=b'data: {"error": "E4400"}\n\n'
    )
    serving = asyncio.ensure_future(response({"type": "http"}, receive, send))  # type: ignore[arg-type]
    while len(sent) < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    serving.cancel()  # uvicorn, when the drain's grace has run out
    done, _ = await asyncio.wait({serving}, timeout=CUT_SEND_S + 5)
    assert done, "the cut stream waited on its client"
    assert serving.cancelled()
    assert cancelled.is_set()  # the job nobody will read is cancelled
    assert socket_full.is_set()  # its last event was tried
    assert time.monotonic() - started < CUT_SEND_S + 2
