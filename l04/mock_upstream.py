"""``l04 mock-provider``: a local server speaking the providers' documented wire formats.

The bodies below are literal transcripts in the shape the providers document (OpenAI's Chat
Completions object and its ``chat.completion.chunk`` server-sent events), filled in with an id,
a timestamp and the model name. They are not produced by the adapters' own code, so a mistake in
an adapter cannot be mirrored here and cancel out.

Behaviour: ``--latency-ms`` delays every answer; ``POST /_mock/faults`` queues faults for the next
requests (``{"status": 503, "count": 2, "retry_after": 1}``, ``{"cut_after_chunks": 2}``,
``{"stall_after_chunks": 1}``); ``GET /_mock/stats`` counts requests by path.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

from aiohttp import web

REPLY = "Hello! How can I assist you today?"
REPLY_PIECES = ["Hello", "!", " How", " can", " I", " assist", " you", " today", "?"]

OPENAI_COMPLETION = """{
  "id": "%(id)s",
  "object": "chat.completion",
  "created": %(created)d,
  "model": "%(model)s",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_44709d6fcb"
}
"""

OPENAI_CHUNK_ROLE = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
    '"finish_reason":null}],"usage":null}\n\n'
)
OPENAI_CHUNK_CONTENT = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{"content":%(piece)s},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
OPENAI_CHUNK_STOP = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
)
OPENAI_CHUNK_USAGE = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":'
    '{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":'
    '{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,'
    '"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n\n'
)
OPENAI_DONE = "data: [DONE]\n\n"

OPENAI_ERROR = """{
  "error": {
    "message": "%(message)s",
    "type": "%(type)s",
    "param": null,
    "code": "%(code)s"
  }
}
"""
_OPENAI_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request", "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "forbidden", "You are not allowed to do this."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "server_error", "The server had an error processing your request."),
    503: ("server_error", "overloaded", "The engine is currently overloaded."),
}


class MockUpstream:
    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self.faults: list[dict[str, Any]] = []
        self.stats: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_get("/v1/models", self.openai_models)
        app.router.add_post("/_mock/faults", self.set_faults)
        app.router.add_get("/_mock/stats", self.get_stats)
        app.router.add_post("/_mock/reset", self.reset)
        return app

    def _next_fault(self) -> dict[str, Any]:
        while self.faults:
            fault = self.faults[0]
            if fault.get("count", 1) <= 0:
                self.faults.pop(0)
                continue
            fault["count"] = fault.get("count", 1) - 1
            return fault
        return {}

    async def _delay(self, fault: dict[str, Any]) -> None:
        latency = float(fault.get("latency_ms", self.latency_ms))
        if latency:
            await asyncio.sleep(latency / 1000)

    def _error(self, status: int, fault: dict[str, Any]) -> web.Response:
        kind, code, message = _OPENAI_ERROR_KINDS.get(status, _OPENAI_ERROR_KINDS[500])
        headers = {"Content-Type": "application/json"}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        body = OPENAI_ERROR % {"message": message, "type": kind, "code": code}
        return web.Response(status=status, text=body, headers=headers)

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        self.stats[request.path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            fault = self._next_fault()
            await self._delay(fault)
            if fault.get("status"):
                return self._error(int(fault["status"]), fault)
            values = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "created": int(time.time()),
                "model": str(body.get("model", "gpt-4o")),
            }
            if not body.get("stream"):
                return web.Response(
                    text=OPENAI_COMPLETION % values, content_type="application/json"
                )
            return await self._openai_stream(request, body, values, fault)
        finally:
            self.in_flight -= 1

    async def _openai_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        values: dict[str, Any],
        fault: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write((OPENAI_CHUNK_ROLE % values).encode())
        for index, piece in enumerate(REPLY_PIECES):
            if fault.get("cut_after_chunks") == index:
                request.transport.close()  # type: ignore[union-attr]
                return response
            if fault.get("stall_after_chunks") == index:
                await asyncio.sleep(3600)
            await response.write(
                (OPENAI_CHUNK_CONTENT % {**values, "piece": json.dumps(piece)}).encode()
            )
        await response.write((OPENAI_CHUNK_STOP % values).encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write((OPENAI_CHUNK_USAGE % values).encode())
        await response.write(OPENAI_DONE.encode())
        await response.write_eof()
        return response

    async def openai_models(self, request: web.Request) -> web.Response:
        self.stats[request.path] += 1
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}
                ],
            }
        )

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
        self.max_in_flight = 0
        return web.json_response({"ok": True})


def serve(host: str, port: int, latency_ms: float) -> None:
    web.run_app(
        MockUpstream(latency_ms).app(),
        host=host,
        port=port,
        print=None,
        access_log=None,
        backlog=4096,
    )
