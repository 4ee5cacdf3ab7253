"""A Server-Sent Events response that knows when its client has gone.

Starlette's ``StreamingResponse`` stops sending when the client disconnects, but leaves its
iterator to the garbage collector. Here the pump is cancelled at once, the iterator closed
there and then, and ``on_disconnect`` runs: the door cancels the job, so that no tokens are
spent on an answer nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway_core import metrics

#: How long a cut stream's last event may wait for a slow client's socket.
CUT_SEND_S = 1.0


class EventStreamResponse(Response):
    """A :class:`Response` for FastAPI's sake (it passes Responses through untouched); it sends
    itself, so Response's own body and background machinery are not used."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        headers: dict[str, str],
        on_disconnect: Callable[[], Awaitable[None]],
        on_end: Callable[[int], None] | None = None,
        on_cut: bytes | None = None,
    ) -> None:
        self._events = events
        self._head: dict[str, str] = {
            **headers,
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",  # nginx and friends: do not buffer the stream
        }
        self._on_disconnect = on_disconnect
        self._on_end = on_end
        self._on_cut = on_cut  # the last event when the server cuts the stream short
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.HTTP_OPEN_STREAMS.inc()
        try:
            await self._serve(receive, send)
        finally:
            metrics.HTTP_OPEN_STREAMS.dec()
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
            if self._on_end is not None:
                self._on_end(self.status_code)

    async def _serve(self, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in self._head.items()],
            }
        )
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server cut the stream (its drain's grace ran out): the client learns why, and
            # the job, which nobody will read, is cancelled like a disconnected client's.
            pump.cancel()
            await asyncio.shield(self._cut(send))
            raise
        finally:
            watch.cancel()
        if pump.done() and not pump.cancelled() and pump.exception() is None:
            return
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        elif pump.exception() is not None and not isinstance(pump.exception(), OSError):
            raise pump.exception()  # type: ignore[misc]
        await self._on_disconnect()

    async def _cut(self, send: Send) -> None:
        # The job first: a client that stopped reading can hold the last send until its socket
        # drains, and the server's shutdown does not wait for ever.
        with contextlib.suppress(Exception):
            await self._on_disconnect()
        if self._on_cut is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CUT_SEND_S):
                    last = {"type": "http.response.body", "body": self._on_cut, "more_body": False}
                    await send(last)

    async def _pump(self, send: Send) -> None:
        async for piece in self._events:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the server's ``http.disconnect``)."""
    while True:
        message: Any = await receive()
        if message.get("type") == "http.disconnect":
            return
