"""``l04 mock-provider``: a local server speaking the providers' documented wire formats.

The bodies below are literal transcripts in the shape the providers document (OpenAI's Chat
Completions object and its ``chat.completion.chunk`` server-sent events), filled in with an id,
a timestamp and the model name. They are not produced by the adapters' own code, so a mistake in
an adapter cannot be mirrored here and cancel out.

Behaviour: ``--latency-ms`` delays every answer; ``POST /_mock/faults`` queues faults for the next
requests (``{"status": 503, "count": 2, "retry_after": 1}``, ``{"cut_after_chunks": 2}``,
``{"stall_after_chunks": 1}``, ``{"chunk_delay_ms": 300}`` before each piece of a stream);
``GET /_mock/stats`` counts requests by path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections import Counter
from typing import Any

from aiohttp import web

from l04.mock_upstream import anthropic_wire as an
from l04.mock_upstream import ollama_wire as ol
from l04.mock_upstream import openai_wire as oa


class MockUpstream:
    def __init__(self, latency_ms: float = 0.0, embedding_dimensions: int = 768) -> None:
        self.latency_ms = latency_ms
        self.embedding_dimensions = embedding_dimensions
        self.faults: list[dict[str, Any]] = []
        self.stats: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.last: dict[str, Any] = {}  # path -> the last JSON body received there

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_get("/v1/models", self.openai_models)
        app.router.add_post("/v1/embeddings", self.openai_embeddings)
        app.router.add_post("/v1/messages", self.anthropic_messages)
        app.router.add_post("/api/chat", self.ollama_chat)
        app.router.add_post("/api/embed", self.ollama_embed)
        app.router.add_get("/api/tags", self.ollama_tags)
        app.router.add_get("/_mock/last", self.get_last)
        app.router.add_post("/_mock/faults", self.set_faults)
        app.router.add_get("/_mock/stats", self.get_stats)
        app.router.add_post("/_mock/reset", self.reset)
        return app

    def _next_fault(self, path: str) -> dict[str, Any]:
        """The first queued fault for ``path`` (a fault without "path" applies to any)."""
        self.faults = [f for f in self.faults if f.get("count", 1) > 0]
        for fault in self.faults:
            if fault.get("path", path) == path:
                fault["count"] = fault.get("count", 1) - 1
                return fault
        return {}

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """Count and record the request, then apply the next fault's latency."""
        self.stats[request.path] += 1
        body = await request.json() if request.can_read_body else {}
        self.last[request.path] = {"body": body, "headers": dict(request.headers)}
        fault = self._next_fault(request.path)
        latency = float(fault.get("latency_ms", self.latency_ms))
        if latency:
            await asyncio.sleep(latency / 1000)
        return body, fault

    def _track(self, delta: int) -> None:
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    @staticmethod
    def _retry_headers(fault: dict[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        return headers

    # -- OpenAI ---------------------------------------------------------------------------------

    def _openai_error(
        self, status: int, fault: dict[str, Any], request: web.Request | None = None
    ) -> web.Response:
        kind, code, message = ol._OPENAI_ERROR_KINDS.get(status, ol._OPENAI_ERROR_KINDS[500])
        key = (request.headers.get("Authorization", "") if request else "").removeprefix("Bearer ")
        if status == 401 and key:
            # As OpenAI does: the key it was given, partly masked.
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            message = (
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        body = ol.OPENAI_ERROR % {"message": message, "type": kind, "code": code}
        return web.Response(status=status, text=body, headers=self._retry_headers(fault))

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        self._track(+1)
        try:
            body, fault = await self._begin(request)
            if fault.get("status"):
                return self._openai_error(int(fault["status"]), fault, request)
            if fault.get("malformed"):
                return web.Response(text="<html>bad gateway</html>", content_type="text/html")
            values = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "created": int(time.time()),
                "model": str(body.get("model", "gpt-4o")),
                "tool": _first_tool(body, "function"),
            }
            if not body.get("stream"):
                if _wants_tool(body):
                    text = oa.OPENAI_TOOL_COMPLETION % values
                else:
                    text = oa.OPENAI_COMPLETION % values
                    if body.get("response_format"):
                        text = text.replace(json.dumps(oa.REPLY), json.dumps(oa.OPENAI_JSON_REPLY))
                return web.Response(text=text, content_type="application/json")
            return await self._openai_stream(request, body, values, fault)
        finally:
            self._track(-1)

    async def _openai_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        values: dict[str, Any],
        fault: dict[str, Any],
    ) -> web.StreamResponse:
        response = await _sse(request)
        if _wants_tool(body):
            for delta in oa.OPENAI_TOOL_CHUNKS:
                await response.write(
                    (
                        oa.OPENAI_DELTA % {**values, "delta": delta % values, "finish": "null"}
                    ).encode()
                )
            await response.write(
                (oa.OPENAI_DELTA % {**values, "delta": "{}", "finish": '"tool_calls"'}).encode()
            )
        else:
            await response.write((oa.OPENAI_CHUNK_ROLE % values).encode())
            for index, piece in enumerate(oa.REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
                await response.write(
                    (oa.OPENAI_CHUNK_CONTENT % {**values, "piece": json.dumps(piece)}).encode()
                )
            await response.write((oa.OPENAI_CHUNK_STOP % values).encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write((oa.OPENAI_CHUNK_USAGE % values).encode())
        await response.write(oa.OPENAI_DONE.encode())
        await response.write_eof()
        return response

    async def openai_models(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}
                ],
            }
        )

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        body, fault = await self._begin(request)
        if fault.get("status"):
            return self._openai_error(int(fault["status"]), fault)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 1536)
        rows = ", ".join(
            oa.OPENAI_EMBEDDING_ROW % {"index": i, "vector": json.dumps(embed(t, dims))}
            for i, t in enumerate(texts)
        )
        text = oa.OPENAI_EMBEDDINGS % {
            "rows": rows,
            "model": body.get("model", ""),
            "tokens": sum(len(t.split()) for t in texts),
        }
        return web.Response(text=text, content_type="application/json")

    # -- Anthropic ------------------------------------------------------------------------------

    def _anthropic_error(self, status: int, fault: dict[str, Any]) -> web.Response:
        kind, message = an._ANTHROPIC_ERROR_KINDS.get(status, an._ANTHROPIC_ERROR_KINDS[500])
        body = an.ANTHROPIC_ERROR % {"type": kind, "message": message}
        return web.Response(status=status, text=body, headers=self._retry_headers(fault))

    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        self._track(+1)
        try:
            body, fault = await self._begin(request)
            if fault.get("status"):
                return self._anthropic_error(int(fault["status"]), fault)
            values = {"model": str(body.get("model", "claude")), "tool": _first_tool(body, None)}
            if not body.get("stream"):
                template = an.ANTHROPIC_TOOL_MESSAGE if _wants_tool(body) else an.ANTHROPIC_MESSAGE
                return web.Response(text=template % values, content_type="application/json")
            response = await _sse(request)
            await response.write((an.ANTHROPIC_STREAM_START % values).encode())
            if fault.get("sse_error"):
                await response.write(an.ANTHROPIC_SSE_ERROR.encode())
                await response.write_eof()
                return response
            for index, piece in enumerate(oa.REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
                await response.write(
                    (an.ANTHROPIC_TEXT_DELTA % {"piece": json.dumps(piece)}).encode()
                )
            await response.write((an.ANTHROPIC_BLOCK_STOP % {"index": 0}).encode())
            stop = "end_turn"
            if _wants_tool(body):
                await response.write((an.ANTHROPIC_TOOL_BLOCK % values).encode())
                await response.write((an.ANTHROPIC_BLOCK_STOP % {"index": 1}).encode())
                stop = "tool_use"
            await response.write((an.ANTHROPIC_STREAM_END % {"stop": stop}).encode())
            await response.write_eof()
            return response
        finally:
            self._track(-1)

    # -- Ollama ---------------------------------------------------------------------------------

    async def ollama_chat(self, request: web.Request) -> web.StreamResponse:
        self._track(+1)
        try:
            body, fault = await self._begin(request)
            values = {
                "model": str(body.get("model", "llama3")),
                "tool": _first_tool(body, "function"),
            }
            if fault.get("status"):
                message = f'model \\"{values["model"]}\\" not found, try pulling it first'
                return web.Response(
                    status=int(fault["status"]),
                    text=ol.OLLAMA_ERROR % {"message": message},
                    content_type="application/json",
                )
            if not body.get("stream", True):
                template = ol.OLLAMA_TOOL_CHAT if _wants_tool(body) else ol.OLLAMA_CHAT
                return web.Response(text=template % values, content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            for index, piece in enumerate(oa.REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
                await response.write(
                    (ol.OLLAMA_STREAM_PIECE % {**values, "piece": json.dumps(piece)}).encode()
                )
            if _wants_tool(body):
                await response.write((ol.OLLAMA_STREAM_TOOL % values).encode())
            await response.write((ol.OLLAMA_STREAM_DONE % values).encode())
            await response.write_eof()
            return response
        finally:
            self._track(-1)

    async def ollama_embed(self, request: web.Request) -> web.Response:
        body, _ = await self._begin(request)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or self.embedding_dimensions)
        vectors = json.dumps([embed(t, dims) for t in texts])
        return web.Response(
            text=ol.OLLAMA_EMBED % {"model": body.get("model", ""), "vectors": vectors},
            content_type="application/json",
        )

    async def ollama_tags(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return web.Response(text=ol.OLLAMA_TAGS, content_type="application/json")

    # -- control --------------------------------------------------------------------------------

    async def get_last(self, request: web.Request) -> web.Response:
        return web.json_response(self.last.get(request.query.get("path", ""), {}))

    async def set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.faults.extend(data if isinstance(data, list) else [data])
        return web.json_response({"queued": len(self.faults)})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": dict(self.stats),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.stats.clear()
        self.last.clear()
        self.max_in_flight = self.in_flight
        return web.json_response({"ok": True})


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def _interrupt(request: web.Request, fault: dict[str, Any], index: int) -> bool:
    """Cut the connection or stall before piece ``index``, as the fault asks. True if cut."""
    if fault.get("chunk_delay_ms"):
        await asyncio.sleep(float(fault["chunk_delay_ms"]) / 1000)
    if fault.get("cut_after_chunks") == index:
        if request.transport is not None:
            request.transport.close()
        return True
    if fault.get("stall_after_chunks") == index:
        # Hold the stream open, sending nothing, for as long as the client stays (an hour at most).
        for _ in range(36_000):
            if request.transport is None or request.transport.is_closing():
                return True
            await asyncio.sleep(0.1)
    return False


def _wants_tool(body: dict[str, Any]) -> bool:
    """Answer with a tool call when tools are offered, unless the last turn is a tool's result."""
    if not body.get("tools"):
        return False
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    if last.get("role") == "tool":
        return False
    return not (
        isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def _first_tool(body: dict[str, Any], wrapper: str | None) -> str:
    tools = body.get("tools") or [{}]
    tool = tools[0].get(wrapper, {}) if wrapper else tools[0]
    return str(tool.get("name", "tool"))


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    vector = [0.0] * dimensions
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip(".,!?;:").encode()).digest()
        for i in range(0, 8, 2):
            slot = int.from_bytes(digest[i : i + 2], "big") % dimensions
            vector[slot] += 1.0 if digest[i + 8] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [round(x / norm, 6) for x in vector]


def serve(host: str, port: int, latency_ms: float) -> None:
    def started(_: object) -> None:  # aiohttp calls it once the socket listens
        print(
            f"l04 mock-provider: listening on http://{host}:{port} "
            f"(OpenAI at /v1, Anthropic at /v1/messages, Ollama at /api; faults: /_mock/faults)",
            flush=True,
        )

    web.run_app(
        MockUpstream(latency_ms).app(),
        host=host,
        port=port,
        print=started,
        access_log=None,
        backlog=4096,
    )
