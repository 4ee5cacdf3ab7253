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
import hashlib
import json
import math
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

OPENAI_TOOL_COMPLETION = """{
  "id": "%(id)s",
  "object": "chat.completion",
  "created": %(created)d,
  "model": "%(model)s",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "%(tool)s",
              "arguments": "{\\"location\\": \\"San Francisco, CA\\"}"
            }
          }
        ],
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_44709d6fcb"
}
"""
OPENAI_TOOL_CHUNKS = [
    '{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc123",'
    '"type":"function","function":{"name":"%(tool)s","arguments":""}}],"refusal":null}',
    '{"tool_calls":[{"index":0,"function":{"arguments":"{\\"location\\""}}]}',
    '{"tool_calls":[{"index":0,"function":{"arguments":": \\"San Francisco, CA\\"}"}}]}',
]
OPENAI_DELTA = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":%(delta)s,"logprobs":null,"finish_reason":%(finish)s}],"usage":null}\n\n'
)
OPENAI_JSON_REPLY = '{"location": "San Francisco, CA"}'
OPENAI_EMBEDDINGS = """{
  "object": "list",
  "data": [%(rows)s],
  "model": "%(model)s",
  "usage": {"prompt_tokens": %(tokens)d, "total_tokens": %(tokens)d}
}
"""
OPENAI_EMBEDDING_ROW = '{"object": "embedding", "index": %(index)d, "embedding": %(vector)s}'

ANTHROPIC_MESSAGE = """{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "%(model)s",
  "content": [
    {
      "type": "text",
      "text": "Hello! How can I assist you today?"
    }
  ],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 10
  }
}
"""
ANTHROPIC_TOOL_MESSAGE = """{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "%(model)s",
  "content": [
    {
      "type": "text",
      "text": "I'll check that."
    },
    {
      "type": "tool_use",
      "id": "toolu_01A09q90qw90lq917835lq9",
      "name": "%(tool)s",
      "input": {"location": "San Francisco, CA"}
    }
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 472,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 100,
    "output_tokens": 91
  }
}
"""
ANTHROPIC_STREAM_START = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",'
    '"type":"message","role":"assistant","content":[],"model":"%(model)s","stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,'
    '"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    "event: ping\n"
    'data: {"type": "ping"}\n\n'
)
ANTHROPIC_TEXT_DELTA = (
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%(piece)s}}'
    "\n\n"
)
ANTHROPIC_BLOCK_STOP = (
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":%(index)d}\n\n'
)
ANTHROPIC_TOOL_BLOCK = (
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"%(tool)s","input":{}}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":""}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":"{\\"location\\": \\"San Fra"}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":"ncisco, CA\\"}"}}\n\n'
)
ANTHROPIC_STREAM_END = (
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"%(stop)s","stop_sequence":null},'
    '"usage":{"output_tokens":10}}\n\n'
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n\n'
)
ANTHROPIC_SSE_ERROR = (
    "event: error\n"
    'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)
ANTHROPIC_ERROR = """{
  "type": "error",
  "error": {
    "type": "%(type)s",
    "message": "%(message)s"
  }
}
"""
_ANTHROPIC_ERROR_KINDS = {
    400: ("invalid_request_error", "messages: field required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}

OLLAMA_CHAT = """{
  "model": "%(model)s",
  "created_at": "2023-12-12T14:13:43.416799Z",
  "message": {
    "role": "assistant",
    "content": "Hello! How can I assist you today?"
  },
  "done": true,
  "done_reason": "stop",
  "total_duration": 5191566416,
  "load_duration": 2154458,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 383809000,
  "eval_count": 10,
  "eval_duration": 4799921000
}
"""
OLLAMA_TOOL_CHAT = """{
  "model": "%(model)s",
  "created_at": "2024-07-22T20:33:28.123648Z",
  "message": {
    "role": "assistant",
    "content": "",
    "tool_calls": [
      {
        "function": {
          "name": "%(tool)s",
          "arguments": {
            "location": "San Francisco, CA"
          }
        }
      }
    ]
  },
  "done_reason": "stop",
  "done": true,
  "total_duration": 885095291,
  "load_duration": 3753500,
  "prompt_eval_count": 122,
  "prompt_eval_duration": 328493000,
  "eval_count": 33,
  "eval_duration": 552222000
}
"""
OLLAMA_STREAM_PIECE = (
    '{"model":"%(model)s","created_at":"2023-08-04T08:52:19.385406455-07:00",'
    '"message":{"role":"assistant","content":%(piece)s},"done":false}\n'
)
OLLAMA_STREAM_TOOL = (
    '{"model":"%(model)s","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":'
    '"assistant","content":"","tool_calls":[{"function":{"name":"%(tool)s","arguments":'
    '{"location":"San Francisco, CA"}}}]},"done":false}\n'
)
OLLAMA_STREAM_DONE = (
    '{"model":"%(model)s","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":'
    '"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,'
    '"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,'
    '"eval_count":10,"eval_duration":4535599000}\n'
)
OLLAMA_EMBED = """{
  "model": "%(model)s",
  "embeddings": %(vectors)s,
  "total_duration": 14143917,
  "load_duration": 1019500,
  "prompt_eval_count": 8
}
"""
OLLAMA_TAGS = """{
  "models": [
    {
      "name": "llama3.1:8b",
      "model": "llama3.1:8b",
      "modified_at": "2024-07-23T14:23:29.812466Z",
      "size": 4661230766,
      "digest": "42182419e9508c30c4b1fe55015f06b65f4ca4b9e28a744be55008d21998a093",
      "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B",
                  "quantization_level": "Q4_0"}
    }
  ]
}
"""
OLLAMA_ERROR = '{"error":"%(message)s"}'

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

    def _next_fault(self) -> dict[str, Any]:
        while self.faults:
            fault = self.faults[0]
            if fault.get("count", 1) <= 0:
                self.faults.pop(0)
                continue
            fault["count"] = fault.get("count", 1) - 1
            return fault
        return {}

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """Count and record the request, then apply the next fault's latency."""
        self.stats[request.path] += 1
        body = await request.json() if request.can_read_body else {}
        self.last[request.path] = {"body": body, "headers": dict(request.headers)}
        fault = self._next_fault()
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
        kind, code, message = _OPENAI_ERROR_KINDS.get(status, _OPENAI_ERROR_KINDS[500])
        key = (request.headers.get("Authorization", "") if request else "").removeprefix("Bearer ")
        if status == 401 and key:
            # As OpenAI does: the key it was given, partly masked.
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            message = (
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        body = OPENAI_ERROR % {"message": message, "type": kind, "code": code}
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
                    text = OPENAI_TOOL_COMPLETION % values
                else:
                    text = OPENAI_COMPLETION % values
                    if body.get("response_format"):
                        text = text.replace(json.dumps(REPLY), json.dumps(OPENAI_JSON_REPLY))
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
            for delta in OPENAI_TOOL_CHUNKS:
                await response.write(
                    (OPENAI_DELTA % {**values, "delta": delta % values, "finish": "null"}).encode()
                )
            await response.write(
                (OPENAI_DELTA % {**values, "delta": "{}", "finish": '"tool_calls"'}).encode()
            )
        else:
            await response.write((OPENAI_CHUNK_ROLE % values).encode())
            for index, piece in enumerate(REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
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
            OPENAI_EMBEDDING_ROW % {"index": i, "vector": json.dumps(embed(t, dims))}
            for i, t in enumerate(texts)
        )
        text = OPENAI_EMBEDDINGS % {
            "rows": rows,
            "model": body.get("model", ""),
            "tokens": sum(len(t.split()) for t in texts),
        }
        return web.Response(text=text, content_type="application/json")

    # -- Anthropic ------------------------------------------------------------------------------

    def _anthropic_error(self, status: int, fault: dict[str, Any]) -> web.Response:
        kind, message = _ANTHROPIC_ERROR_KINDS.get(status, _ANTHROPIC_ERROR_KINDS[500])
        body = ANTHROPIC_ERROR % {"type": kind, "message": message}
        return web.Response(status=status, text=body, headers=self._retry_headers(fault))

    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        self._track(+1)
        try:
            body, fault = await self._begin(request)
            if fault.get("status"):
                return self._anthropic_error(int(fault["status"]), fault)
            values = {"model": str(body.get("model", "claude")), "tool": _first_tool(body, None)}
            if not body.get("stream"):
                template = ANTHROPIC_TOOL_MESSAGE if _wants_tool(body) else ANTHROPIC_MESSAGE
                return web.Response(text=template % values, content_type="application/json")
            response = await _sse(request)
            await response.write((ANTHROPIC_STREAM_START % values).encode())
            if fault.get("sse_error"):
                await response.write(ANTHROPIC_SSE_ERROR.encode())
                await response.write_eof()
                return response
            for index, piece in enumerate(REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
                await response.write((ANTHROPIC_TEXT_DELTA % {"piece": json.dumps(piece)}).encode())
            await response.write((ANTHROPIC_BLOCK_STOP % {"index": 0}).encode())
            stop = "end_turn"
            if _wants_tool(body):
                await response.write((ANTHROPIC_TOOL_BLOCK % values).encode())
                await response.write((ANTHROPIC_BLOCK_STOP % {"index": 1}).encode())
                stop = "tool_use"
            await response.write((ANTHROPIC_STREAM_END % {"stop": stop}).encode())
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
                    text=OLLAMA_ERROR % {"message": message},
                    content_type="application/json",
                )
            if not body.get("stream", True):
                template = OLLAMA_TOOL_CHAT if _wants_tool(body) else OLLAMA_CHAT
                return web.Response(text=template % values, content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            for index, piece in enumerate(REPLY_PIECES):
                if await _interrupt(request, fault, index):
                    return response
                await response.write(
                    (OLLAMA_STREAM_PIECE % {**values, "piece": json.dumps(piece)}).encode()
                )
            if _wants_tool(body):
                await response.write((OLLAMA_STREAM_TOOL % values).encode())
            await response.write((OLLAMA_STREAM_DONE % values).encode())
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
            text=OLLAMA_EMBED % {"model": body.get("model", ""), "vectors": vectors},
            content_type="application/json",
        )

    async def ollama_tags(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return web.Response(text=OLLAMA_TAGS, content_type="application/json")

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
        self.max_in_flight = 0
        return web.json_response({"ok": True})


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def _interrupt(request: web.Request, fault: dict[str, Any], index: int) -> bool:
    """Cut the connection or stall before piece ``index``, as the fault asks. True if cut."""
    if fault.get("cut_after_chunks") == index:
        if request.transport is not None:
            request.transport.close()
        return True
    if fault.get("stall_after_chunks") == index:
        await asyncio.sleep(3600)
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
    web.run_app(
        MockUpstream(latency_ms).app(),
        host=host,
        port=port,
        print=None,
        access_log=None,
        backlog=4096,
    )
