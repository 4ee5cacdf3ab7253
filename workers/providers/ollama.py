"""Ollama's native API: ``/api/chat`` (NDJSON when streamed), ``/api/embed``, ``/api/tags``.

Usage comes from ``prompt_eval_count`` and ``eval_count``. Ollama takes images only inline
(base64), and reports tool calls with arguments as objects and no ids.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core.embeddings import EmbeddingRequest
from gateway_core.errors import (
    EmbeddingFailed,
    InvalidMessages,
    MalformedResponse,
    StreamInterrupted,
)
from gateway_core.messages import ImagePart, Message, ToolCall
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.providers.base import (
    CallContext,
    EmbeddingResult,
    ProviderAdapter,
    ProviderDelta,
    ProviderResult,
)
from workers.providers.http import HttpErrorMapper, http_client
from workers.providers.openai import function_tools


class OllamaAdapter(ProviderAdapter):
    name = "ollama"

    def __init__(self, settings: GatewaySettings) -> None:
        self._client = http_client(settings, settings.ollama_url, {})
        self._errors = HttpErrorMapper(self.name)
        self._embedding_model = settings.ollama_embedding_model
        self._dimensions = settings.ollama_embedding_dimensions

    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult:
        async with self._errors.boundary():
            response = await self._client.post("api/chat", json=build_body(request, model))
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        return parse_final(data, data.get("message") or {})

    async def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]:
        body = build_body(request, model, stream=True)
        calls: list[dict[str, Any]] = []
        final: dict[str, Any] | None = None
        async with (
            self._errors.boundary(streaming=True),
            self._client.stream("POST", "api/chat", json=body) as response,
        ):
            await self._errors.raise_for_stream_status(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                chunk = self._errors.loads(line)
                if chunk.get("error"):
                    raise self._errors.from_error_body(chunk["error"], streaming=True)
                message = chunk.get("message") or {}
                calls.extend(message.get("tool_calls") or [])
                if message.get("content"):
                    yield ProviderDelta(text=message["content"])
                if chunk.get("done"):
                    final = chunk
                    break
        if final is None:
            raise StreamInterrupted("ollama stream ended before done", retryable=True)
        result = parse_final(final, {"content": "", "tool_calls": calls})
        yield ProviderDelta(
            finish_reason=result.finish_reason, usage=result.usage, tool_calls=result.tool_calls
        )

    async def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        async with self._errors.boundary():
            response = await self._client.post(
                "api/embed", json={"model": model or self._embedding_model, "input": texts}
            )
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        vectors = data.get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise EmbeddingFailed("ollama returned no embeddings")
        if any(len(v) != self._dimensions for v in vectors):
            raise EmbeddingFailed(
                f"ollama embeddings have {len(vectors[0])} dimensions, "
                f"OLLAMA_EMBEDDING_DIMENSIONS says {self._dimensions}",
            )
        return [[float(x) for x in v] for v in vectors]

    async def create_embeddings(
        self, request: EmbeddingRequest, model: ModelSpec, ctx: CallContext
    ) -> EmbeddingResult:
        body: dict[str, Any] = {"model": model.api_name, "input": request.input}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        async with self._errors.boundary():
            response = await self._client.post("api/embed", json=body)
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        try:
            vectors = [[float(x) for x in vector] for vector in data["embeddings"]]
            usage = TokenUsage(prompt_tokens=int(data.get("prompt_eval_count") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"ollama: unexpected embed shape ({exc!r})") from None
        return EmbeddingResult(vectors=vectors, usage=usage)

    async def health(self) -> dict[str, Any]:
        async with self._errors.boundary():
            response = await self._client.get("api/tags")
            self._errors.raise_for_status(response)
            models = [m.get("name") for m in self._errors.json(response).get("models", [])]
        return {"provider": self.name, "healthy": True, "models": models}

    async def aclose(self) -> None:
        await self._client.aclose()


def build_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role.value, "content": message.text}
    if not isinstance(message.content, str):
        images = [p for p in message.content if isinstance(p, ImagePart)]
        if any(p.url for p in images):
            raise InvalidMessages("ollama takes images inline only (base64 data, not a url)")
        if images:
            out["images"] = [p.data for p in images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": json.loads(c.arguments or "{}")}}
            for c in message.tool_calls
        ]
    return out


def build_body(request: InferenceRequest, model: ModelSpec, stream: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {"num_predict": request.max_tokens}
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    if request.stop:
        options["stop"] = request.stop
    body: dict[str, Any] = {
        "model": model.api_name,
        "messages": [build_message(m) for m in request.messages],
        "stream": stream,
        "options": options,
    }
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["format"] = "json"
    elif fmt is not None and fmt.type == "json_schema":
        body["format"] = fmt.json_schema
    if request.tools:
        body["tools"] = function_tools(request.tools)
    return body


def parse_final(data: dict[str, Any], message: dict[str, Any]) -> ProviderResult:
    try:
        calls = [
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=c["function"]["name"],
                arguments=json.dumps(c["function"].get("arguments") or {}),
            )
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        reason = data.get("done_reason") or "stop"
        return ProviderResult(
            content=message.get("content") or "",
            usage=TokenUsage(
                prompt_tokens=int(data.get("prompt_eval_count") or 0),
                completion_tokens=int(data.get("eval_count") or 0),
            ),
            finish_reason="tool_calls" if calls else ("length" if reason == "length" else "stop"),
            tool_calls=calls,
        )
    except (KeyError, TypeError) as exc:
        raise MalformedResponse(f"ollama: unexpected response shape ({exc!r})") from None
