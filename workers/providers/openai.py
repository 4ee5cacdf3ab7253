"""OpenAI Chat Completions, for api.openai.com and any OpenAI-compatible server.

``OPENAI_BASE_URL`` includes the ``/v1`` path exactly as the official SDK reads it, so vLLM,
llama.cpp's server or LiteLLM work by pointing it at them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core.embeddings import EmbeddingRequest
from gateway_core.errors import EmbeddingFailed, MalformedResponse
from gateway_core.messages import ImagePart, Message, TextPart, ToolCall, ToolDefinition
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.providers.base import (
    CallContext,
    EmbeddingResult,
    ProviderAdapter,
    ProviderDelta,
    ProviderResult,
)
from workers.providers.http import HttpErrorMapper, http_client, iter_sse_data


class OpenAIAdapter(ProviderAdapter):
    name = "openai"

    def __init__(self, settings: GatewaySettings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = http_client(settings, settings.openai_base_url, headers)
        self._errors = HttpErrorMapper(self.name, secrets=[key])

    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult:
        async with self._errors.boundary():
            response = await self._client.post("chat/completions", json=build_body(request, model))
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        return parse_completion(data)

    async def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]:
        body = build_body(request, model, stream=True)
        calls = ToolCallAccumulator()
        finish: str | None = None
        usage: TokenUsage | None = None
        async with (
            self._errors.boundary(streaming=True),
            self._client.stream("POST", "chat/completions", json=body) as response,
        ):
            await self._errors.raise_for_stream_status(response)
            async for data in iter_sse_data(response, done_marker="[DONE]"):
                chunk = self._errors.loads(data)
                if chunk.get("error"):
                    raise self._errors.from_error_body(chunk["error"], streaming=True)
                if chunk.get("usage"):
                    usage = parse_usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    for call in delta.get("tool_calls") or []:
                        calls.add(call)
                    if delta.get("content"):
                        yield ProviderDelta(text=delta["content"])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        yield ProviderDelta(
            finish_reason=finish or "stop", usage=usage or TokenUsage(), tool_calls=calls.calls()
        )

    async def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        body = {"model": model or "text-embedding-3-small", "input": texts}
        try:
            return (await self._embeddings(body)).vectors
        except MalformedResponse as exc:
            raise EmbeddingFailed(exc.message) from None

    async def create_embeddings(
        self, request: EmbeddingRequest, model: ModelSpec, ctx: CallContext
    ) -> EmbeddingResult:
        body: dict[str, Any] = {"model": model.api_name, "input": request.input}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return await self._embeddings(body)

    async def _embeddings(self, body: dict[str, Any]) -> EmbeddingResult:
        async with self._errors.boundary():
            response = await self._client.post("embeddings", json=body)
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        return parse_embeddings(data)

    async def health(self) -> dict[str, Any]:
        async with self._errors.boundary():
            response = await self._client.get("models")
            self._errors.raise_for_status(response)
        return {"provider": self.name, "healthy": True}

    async def aclose(self) -> None:
        await self._client.aclose()


def _content(message: Message) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str):
        return message.content
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            url = part.url or f"data:{part.media_type};base64,{part.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def build_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role.value, "content": _content(message)}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        if not message.text:
            out["content"] = None
    return out


def build_body(request: InferenceRequest, model: ModelSpec, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model.api_name,
        "messages": [build_message(m) for m in request.messages],
        "max_tokens": request.max_tokens,
    }
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = function_tools(request.tools)
    if request.tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = request.tool_choice
    elif request.tool_choice:
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.name, "schema": fmt.json_schema, "strict": True},
        }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def function_tools(tools: list[ToolDefinition]) -> list[dict[str, Any]]:
    """Tools in the "function" form OpenAI defined and Ollama also reads."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def parse_usage(usage: dict[str, Any]) -> TokenUsage:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def parse_embeddings(data: dict[str, Any]) -> EmbeddingResult:
    """``{"data": [{"index", "embedding"}...], "usage": {"prompt_tokens"...}}``, rows in any
    order; E4600 for another shape."""
    try:
        rows = sorted(data["data"], key=lambda row: row["index"])
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"openai: unexpected embeddings shape ({exc!r})") from None
    return EmbeddingResult(vectors=vectors, usage=parse_usage(data.get("usage") or {}))


def parse_completion(data: dict[str, Any]) -> ProviderResult:
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = [
            ToolCall(
                id=c["id"],
                name=c["function"]["name"],
                arguments=c["function"].get("arguments") or "{}",
            )
            for c in message.get("tool_calls") or []
        ]
        return ProviderResult(
            content=message.get("content") or "",
            usage=parse_usage(data.get("usage") or {}),
            finish_reason=choice.get("finish_reason") or "stop",
            tool_calls=calls,
        )
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedResponse(f"openai: unexpected completion shape ({exc!r})") from None


class ToolCallAccumulator:
    """Reassembles streamed ``tool_calls`` deltas (keyed by ``index``) into whole calls."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        slot = self._calls.setdefault(
            int(delta.get("index", 0)), {"id": "", "name": "", "arguments": ""}
        )
        if delta.get("id"):
            slot["id"] = delta["id"]
        function = delta.get("function") or {}
        if function.get("name"):
            slot["name"] += function["name"]
        if function.get("arguments"):
            slot["arguments"] += function["arguments"]

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(self._calls.items())
        ]
