"""Anthropic's Messages API: the body to an :class:`InferenceRequest`, the answer to a Message
object or to the whole event sequence of a stream.

Any model of the catalog answers, not only Claude: the fleet's provider-neutral request sits in
between. Tool results (``tool_result`` blocks in a user turn) become tool messages; ``tool_use``
blocks in an assistant turn become its tool calls.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.errors import InvalidParameters
from gateway_core.request import InferenceRequest, parse_request
from gateway_core.response import InferenceResponse
from gateway_http.content import check_tools, inline_image
from gateway_http.door import Caller, JobOptions, L04Extension

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


class ImageSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "image", "tool_use", "tool_result"]
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None
    citations: Any = None


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    description: str = ""
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class SystemBlock(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None
    citations: Any = None


class AnthropicMetadata(BaseModel):
    """Anthropic's request metadata has one field."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str | None = Field(default=None, max_length=256)


class MessagesBody(BaseModel):
    """The request body of ``POST /v1/messages`` (what the fleet reads of it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[SystemBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    stream: bool | None = False
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: AnthropicMetadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    thinking: dict[str, Any] | None = None
    l04: L04Extension | None = None


def to_request(body: MessagesBody, caller: Caller, options: JobOptions) -> InferenceRequest:
    if body.top_k is not None:
        raise InvalidParameters(
            "top_k is not supported by this gateway", details={"param": "top_k"}
        )
    if body.tool_choice and body.tool_choice.get("disable_parallel_tool_use") is True:
        raise InvalidParameters(
            "tool_choice.disable_parallel_tool_use is not supported by this gateway",
            details={"param": "tool_choice"},
        )
    choice = _tool_choice(body.tool_choice)
    check_tools([t.name for t in body.tools or []], choice)
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise InvalidParameters(
            "thinking is not supported by this gateway", details={"param": "thinking"}
        )
    messages: list[dict[str, Any]] = []
    if body.system:
        system = (
            body.system
            if isinstance(body.system, str)
            else "".join(block.text for block in body.system)
        )
        if system:
            messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        messages.extend(_turn(message, index))
    metadata: dict[str, Any] = {}
    if body.metadata is not None and body.metadata.user_id is not None:
        metadata["anthropic.user_id"] = body.metadata.user_id
    fields: dict[str, Any] = {
        "request_id": options.request_id,
        "agent_did": caller.agent_did,
        "messages": messages,
        "model_id": body.model,
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": list(body.stop_sequences or []),
        "priority": options.priority,
        "timeout": options.timeout,
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.input_schema}
            for t in body.tools or []
        ],
        "tool_choice": choice,
        "metadata": metadata,
    }
    if body.l04 is not None:
        fields.update(body.l04.request_fields())
    return parse_request(fields)


def _turn(message: AnthropicMessage, index: int) -> list[dict[str, Any]]:
    """One Anthropic turn as the fleet's messages (a user turn's tool results come first)."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    where = f"messages.{index}.content"
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            parts.append({"type": "text", "text": block.text or ""})
        elif block.type == "image":
            parts.append(_image(block, where))
        elif block.type == "tool_use":
            if message.role != "assistant" or not block.id or not block.name:
                raise InvalidParameters(
                    f"{where}: tool_use blocks (with id and name) belong to assistant turns",
                    details={"param": where},
                )
            tool_calls.append(
                {"id": block.id, "name": block.name, "arguments": json.dumps(block.input or {})}
            )
        else:
            if message.role != "user" or not block.tool_use_id:
                raise InvalidParameters(
                    f"{where}: tool_result blocks (with tool_use_id) belong to user turns",
                    details={"param": where},
                )
            tool_results.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": _result_text(block.content),
                }
            )
    out = list(tool_results)
    if tool_calls:
        text = "".join(p.get("text", "") for p in parts)
        out.append({"role": "assistant", "content": text, "tool_calls": tool_calls})
    elif parts:
        out.append({"role": message.role, "content": parts})
    return out


def _image(block: ContentBlock, where: str) -> dict[str, Any]:
    source = block.source
    if source is None:
        raise InvalidParameters(f"{where}: an image block needs a source", details={"param": where})
    if source.type == "url":
        if not source.url:
            raise InvalidParameters(f"{where}: a url image needs url", details={"param": where})
        return {"type": "image", "url": source.url}
    if not source.data or not source.media_type:
        raise InvalidParameters(
            f"{where}: a base64 image needs data and media_type", details={"param": where}
        )
    return inline_image(source.data, source.media_type, where)


def _result_text(content: str | list[ContentBlock] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(block.text or "" for block in content if block.type == "text")


def _tool_choice(choice: dict[str, Any] | None) -> str | None:
    if choice is None:
        return None
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    raise InvalidParameters(
        'tool_choice must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name": ...}',
        details={"param": "tool_choice"},
    )


# -- answers -------------------------------------------------------------------------------------


def message_id(job_id: str) -> str:
    return f"msg_{job_id}"


def stop_reason(response: InferenceResponse) -> str:
    return STOP_REASONS.get(response.finish_reason, "end_turn")


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _content(response: InferenceResponse) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if response.content or not response.tool_calls:
        blocks.append({"type": "text", "text": response.content})
    for call in response.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    return blocks


def _usage(response: InferenceResponse) -> dict[str, Any]:
    usage = response.token_usage
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def message_object(response: InferenceResponse) -> dict[str, Any]:
    return {
        "id": message_id(response.job_id),
        "type": "message",
        "role": "assistant",
        "model": response.model_id,
        "content": _content(response),
        "stop_reason": stop_reason(response),
        "stop_sequence": None,
        "usage": _usage(response),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({"type": name, **data}, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode()


class EventStream:
    """The Messages stream's events for one job, as SSE bytes."""

    def __init__(self, job_id: str, model: str) -> None:
        self._job_id = job_id
        self._model = model
        self._text_open = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": message_id(self._job_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def text(self, delta: str) -> bytes:
        out = b""
        if not self._text_open:
            self._text_open = True
            out += _event(
                "content_block_start",
                {"index": 0, "content_block": {"type": "text", "text": ""}},
            )
        return out + _event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": delta}}
        )

    def end(self, response: InferenceResponse) -> bytes:
        out = b""
        index = 0
        if not self._text_open and (response.content or not response.tool_calls):
            out += self.text(response.content)  # an answer that came whole (cached, joined)
        if self._text_open:
            out += _event("content_block_stop", {"index": 0})
            index = 1
        for call in response.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            out += _event("content_block_start", {"index": index, "content_block": block})
            out += _event(
                "content_block_delta",
                {
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(_tool_input(call.arguments)),
                    },
                },
            )
            out += _event("content_block_stop", {"index": index})
            index += 1
        usage = _usage(response)
        out += _event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason(response), "stop_sequence": None},
                "usage": usage,
            },
        )
        return out + _event("message_stop", {})
