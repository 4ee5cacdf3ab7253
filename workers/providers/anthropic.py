"""Anthropic Messages API.

The system prompt is hoisted out of the messages; tool results become ``tool_result`` blocks in a
user turn; a JSON response format is asked for as a forced tool whose input schema is the format
(the Messages API has no response_format), and the tool's input becomes the content.
``ANTHROPIC_BASE_URL`` is read as the Anthropic SDK reads it (without ``/v1``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core.errors import MalformedResponse, StreamInterrupted
from gateway_core.messages import ImagePart, Message, MessageRole, TextPart, ToolCall
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.providers.base import CallContext, ProviderAdapter, ProviderDelta, ProviderResult
from workers.providers.http import HttpErrorMapper, http_client, iter_sse_data

ANTHROPIC_VERSION = "2023-06-01"
JSON_TOOL = "json_response"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


class AnthropicAdapter(ProviderAdapter):
    name = "anthropic"

    def __init__(self, settings: GatewaySettings) -> None:
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        self._client = http_client(settings, settings.anthropic_base_url, headers)
        self._errors = HttpErrorMapper(self.name, secrets=[key])

    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult:
        async with self._errors.boundary():
            response = await self._client.post("v1/messages", json=build_body(request, model))
            self._errors.raise_for_status(response)
            data = self._errors.json(response)
        return parse_message(data, json_mode=_json_mode(request))

    async def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]:
        body = build_body(request, model, stream=True)
        json_mode = _json_mode(request)
        blocks: dict[int, dict[str, Any]] = {}
        usage: dict[str, int] = {}
        stop_reason = "end_turn"
        ended = False
        async with (
            self._errors.boundary(streaming=True),
            self._client.stream("POST", "v1/messages", json=body) as response,
        ):
            await self._errors.raise_for_stream_status(response)
            async for data in iter_sse_data(response):
                event = self._errors.loads(data)
                kind = event.get("type")
                if kind == "message_start":
                    usage.update(event["message"].get("usage") or {})
                elif kind == "content_block_start":
                    blocks[event["index"]] = {**event["content_block"], "partial_json": ""}
                elif kind == "content_block_delta":
                    delta = event["delta"]
                    block = blocks.setdefault(event["index"], {"type": "text", "partial_json": ""})
                    if delta.get("type") == "text_delta" and delta.get("text") and not json_mode:
                        yield ProviderDelta(text=delta["text"])
                    elif delta.get("type") == "input_json_delta":
                        block["partial_json"] += delta.get("partial_json", "")
                        if json_mode:
                            yield ProviderDelta(text=delta.get("partial_json", ""))
                elif kind == "message_delta":
                    usage.update(event.get("usage") or {})
                    stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                elif kind == "message_stop":
                    ended = True
                    break
                elif kind == "error":
                    raise self._errors.from_error_body(event.get("error"), streaming=True)
        if not ended:
            raise StreamInterrupted("anthropic stream ended before message_stop", retryable=True)
        calls = (
            []
            if json_mode
            else [
                ToolCall(id=b["id"], name=b["name"], arguments=b["partial_json"] or "{}")
                for _, b in sorted(blocks.items())
                if b.get("type") == "tool_use"
            ]
        )
        yield ProviderDelta(
            finish_reason=_finish(stop_reason, json_mode), usage=_usage(usage), tool_calls=calls
        )

    async def health(self) -> dict[str, Any]:
        async with self._errors.boundary():
            response = await self._client.get("v1/models")
            self._errors.raise_for_status(response)
        return {"provider": self.name, "healthy": True}

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_mode(request: InferenceRequest) -> bool:
    return request.response_format is not None and request.response_format.type != "text"


def _finish(stop_reason: str, json_mode: bool) -> str:
    if json_mode and stop_reason == "tool_use":
        return "stop"
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _usage(usage: dict[str, Any]) -> TokenUsage:
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    return TokenUsage(
        prompt_tokens=int(usage.get("input_tokens") or 0) + cached + created,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=cached,
    )


def _blocks(message: Message) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": message.content}] if (message.content) else []
        )
    else:
        blocks = []
        for part in message.content:
            if isinstance(part, TextPart):
                blocks.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                source = (
                    {"type": "url", "url": part.url}
                    if part.url
                    else {"type": "base64", "media_type": part.media_type, "data": part.data}
                )
                blocks.append({"type": "image", "source": source})
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {"_raw": call.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def build_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Chat messages as Anthropic turns: no system, tool results inside user turns, merged."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role is MessageRole.SYSTEM:
            continue
        if message.role is MessageRole.TOOL:
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.text,
                }
            ]
        else:
            role = message.role.value
            blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def build_body(request: InferenceRequest, model: ModelSpec, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model.api_name,
        "max_tokens": request.max_tokens,
        "messages": build_messages(request.messages),
    }
    if request.system_prompt:
        body["system"] = request.system_prompt
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        value = getattr(request, ours)
        if value is not None:
            body[theirs] = value
    if request.stop:
        body["stop_sequences"] = request.stop
    tools: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in request.tools
    ]
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        schema: dict[str, Any] = fmt.json_schema or {"type": "object"}
        tools = [
            {"name": JSON_TOOL, "description": "Respond with this JSON.", "input_schema": schema}
        ]
        body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    elif request.tool_choice == "auto":
        body["tool_choice"] = {"type": "auto"}
    elif request.tool_choice == "required":
        body["tool_choice"] = {"type": "any"}
    elif request.tool_choice == "none":
        body["tool_choice"] = {"type": "none"}
    elif request.tool_choice:
        body["tool_choice"] = {"type": "tool", "name": request.tool_choice}
    if tools:
        body["tools"] = tools
    if stream:
        body["stream"] = True
    return body


def parse_message(data: dict[str, Any], json_mode: bool = False) -> ProviderResult:
    try:
        text, calls = [], []
        for block in data["content"]:
            if block["type"] == "text" and not json_mode:
                text.append(block["text"])
            elif block["type"] == "tool_use":
                if json_mode:
                    # The answer is the forced tool's input; any text beside it is not JSON.
                    text.append(json.dumps(block["input"]))
                else:
                    calls.append(
                        ToolCall(
                            id=block["id"], name=block["name"], arguments=json.dumps(block["input"])
                        )
                    )
        return ProviderResult(
            content="".join(text),
            usage=_usage(data.get("usage") or {}),
            finish_reason=_finish(data.get("stop_reason") or "end_turn", json_mode),
            tool_calls=calls,
        )
    except (KeyError, TypeError) as exc:
        raise MalformedResponse(f"anthropic: unexpected message shape ({exc!r})") from None
