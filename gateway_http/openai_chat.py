"""OpenAI's Chat Completions API: the body to an :class:`InferenceRequest`, the answer to a
``chat.completion`` object or a stream of ``chat.completion.chunk`` events.

A parameter the fleet does not support is refused (400, naming it) when its value would change
the answer (``n: 2``, ``logprobs: true``); a value that changes nothing (``n: 1``,
``logprobs: false``) passes. Nothing is silently ignored; an unknown parameter is a 400 too, as
OpenAI answers it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.errors import InvalidParameters
from gateway_core.request import InferenceRequest, parse_request
from gateway_core.response import InferenceResponse, TokenUsage
from gateway_http.content import check_tools, image_part
from gateway_http.door import Caller, JobOptions, L04Extension, Metadata, openai_metadata

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "image_url", "refusal"]
    text: str | None = None
    image_url: ImageUrl | None = None
    refusal: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    arguments: str = "{}"


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ChatTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDefinition


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionBody(BaseModel):
    """The request body of ``POST /v1/chat/completions`` (what the fleet reads of it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormatIn | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: Metadata | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    service_tier: str | None = None
    l04: L04Extension | None = None
    # Supported only at the value that changes nothing (see UNSUPPORTED).
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=256)


#: Parameter -> the values that change nothing (None, the parameter's absence, always passes).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "parallel_tool_calls": (True,),
    "store": (False,),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "reasoning_effort": (),
    "web_search_options": (),
    "functions": (),
    "function_call": (),
    "verbosity": (),
}


def to_request(body: ChatCompletionBody, caller: Caller, options: JobOptions) -> InferenceRequest:
    """The job for ``body``, or E45xx naming the offending parameter."""
    for name, harmless in UNSUPPORTED.items():
        value = getattr(body, name)
        if value is not None and value not in harmless:
            raise InvalidParameters(
                f"{name}={json.dumps(value)[:60]} is not supported by this gateway"
                + (f" (only {json.dumps(harmless[0])})" if harmless else ""),
                details={"param": name},
            )
    if body.stream_options is not None and not body.stream:
        raise InvalidParameters(
            "stream_options is only allowed when stream is true",
            details={"param": "stream_options"},
        )
    check_tools([t.function.name for t in body.tools or []], body.tool_choice)
    both = body.max_tokens is not None and body.max_completion_tokens is not None
    if both and body.max_tokens != body.max_completion_tokens:
        raise InvalidParameters(
            "max_tokens and max_completion_tokens disagree: send one",
            details={"param": "max_tokens"},
        )
    metadata = openai_metadata(body)
    fields: dict[str, Any] = {
        "request_id": options.request_id,
        "agent_did": caller.agent_did,
        "messages": [_message(m, i) for i, m in enumerate(body.messages)],
        "model_id": body.model,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        "seed": body.seed,
        "priority": options.priority,
        "timeout": options.timeout,
        "tools": [
            {
                "name": t.function.name,
                "description": t.function.description,
                "parameters": t.function.parameters,
            }
            for t in body.tools or []
        ],
        "tool_choice": _tool_choice(body.tool_choice),
        "response_format": _response_format(body.response_format),
        "metadata": metadata,
    }
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if body.l04 is not None:
        fields.update(body.l04.request_fields())
    return parse_request(fields)


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    content: Any = message.content
    if isinstance(content, list):
        parts = [_part(p, index) for p in content]
        text_only = role in ("system", "tool")
        content = "".join(p.get("text", "") for p in parts) if text_only else parts
    if content is None:
        content = message.refusal or ""
    out: dict[str, Any] = {"role": role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls
        ]
    return out


def _part(part: ContentPart, index: int) -> dict[str, Any]:
    where = f"messages.{index}.content"
    if part.type == "text":
        if part.text is None:
            raise InvalidParameters(f"{where}: a text part needs text", details={"param": where})
        return {"type": "text", "text": part.text}
    if part.type == "refusal":
        return {"type": "text", "text": part.refusal or ""}
    if part.image_url is None:
        raise InvalidParameters(
            f"{where}: an image_url part needs image_url", details={"param": where}
        )
    return image_part(part.image_url.url, where)


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    function = choice.get("function")
    if choice.get("type") == "function" and isinstance(function, dict):
        name = function.get("name")
        if isinstance(name, str) and name:
            return name
    raise InvalidParameters(
        'tool_choice must be "auto", "none", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        details={"param": "tool_choice"},
    )


def _response_format(given: ResponseFormatIn | None) -> dict[str, Any] | None:
    if given is None or given.type == "text":
        return None
    if given.type == "json_object":
        return {"type": "json_object"}
    if given.json_schema is None:
        raise InvalidParameters(
            "response_format json_schema needs json_schema.schema",
            details={"param": "response_format.json_schema"},
        )
    return {
        "type": "json_schema",
        "json_schema": given.json_schema.schema_,
        "name": given.json_schema.name,
    }


# -- answers -------------------------------------------------------------------------------------


def finish_reason(reason: str | None) -> str:
    return reason if reason in FINISH_REASONS else "stop"


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_calls(response: InferenceResponse) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in response.tool_calls
    ]


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def completion_object(response: InferenceResponse, service_tier: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": response.content if response.content or not response.tool_calls else None,
        "refusal": None,
    }
    if response.tool_calls:
        message["tool_calls"] = _tool_calls(response)
    return {
        "id": completion_id(response.job_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model_id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(response.finish_reason),
            }
        ],
        "usage": usage_object(response.token_usage),
        "service_tier": service_tier or "default",
        "system_fingerprint": None,
    }


class ChunkStream:
    """``chat.completion.chunk`` events for one job, as SSE bytes."""

    def __init__(self, job_id: str, model: str, include_usage: bool) -> None:
        self._head = {
            "id": completion_id(job_id),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage

    def _event(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        chunk = {**self._head, "choices": choices}
        if self._include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def start(self) -> bytes:
        return self._event(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )

    def text(self, delta: str) -> bytes:
        return self._event([{"index": 0, "delta": {"content": delta}, "finish_reason": None}])

    def end(self, response: InferenceResponse) -> bytes:
        self._head["model"] = response.model_id
        out = b""
        for index, call in enumerate(_tool_calls(response)):
            out += self._event([{"index": 0, "delta": {"tool_calls": [{"index": index, **call}]}}])
        out += self._event(
            [{"index": 0, "delta": {}, "finish_reason": finish_reason(response.finish_reason)}]
        )
        if self._include_usage:
            out += self._event([], usage_object(response.token_usage))
        return out + b"data: [DONE]\n\n"
