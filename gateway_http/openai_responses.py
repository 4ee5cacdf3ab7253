"""OpenAI's Responses API: the body of ``POST /v1/responses`` to an :class:`InferenceRequest`,
and a job's state and answer to a ``response`` object.

The request's input items become the fleet's messages: ``instructions`` a system message,
``developer`` a system role, ``function_call`` items the assistant turn's tool calls and
``function_call_output`` items tool messages, so that a tool loop runs on any model of the
catalog. As in the Chat Completions door, a parameter whose value would change the answer and
that the fleet does not support is a 400 naming it; a value that changes nothing passes.

The answer's side, the ``response`` object, is :mod:`gateway_http.responses_object`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from gateway_core.errors import InvalidParameters
from gateway_core.request import InferenceRequest, parse_request
from gateway_http.content import check_tools, image_part
from gateway_http.door import Caller, JobOptions, L04Extension, Metadata, openai_metadata
from gateway_http.responses_object import ResponseRecord, owner_of, response_id


class FormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: FormatIn | None = None
    verbosity: Literal["medium"] | None = None  # low / high would change the answer


class ResponsesBody(BaseModel):
    """The request body of ``POST /v1/responses`` (what the fleet reads of it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=512)
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    background: bool | None = False
    store: bool | None = True
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    l04: L04Extension | None = None
    # Supported only at the value that changes nothing (see UNSUPPORTED).
    previous_response_id: str | None = None
    conversation: Any = None
    include: list[str] | None = None
    prompt: Any = None
    reasoning: dict[str, Any] | None = None
    truncation: str | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None
    prompt_cache_retention: str | None = None
    context_management: Any = None


#: Parameter -> the values that change nothing (None, the parameter's absence, always passes).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "previous_response_id": (),  # the fleet keeps no conversation state: send the items
    "conversation": (),
    "include": ([],),
    "prompt": (),  # stored prompt templates: OpenAI's dashboard, not ours
    "reasoning": ({},),
    "truncation": ("disabled",),
    "parallel_tool_calls": (True,),
    "max_tool_calls": (),
    "top_logprobs": (0,),
    "prompt_cache_retention": (),
    "context_management": (),
}


# -- input items ---------------------------------------------------------------------------------


class ContentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["input_text", "input_image", "output_text", "refusal", "input_file"]
    text: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None
    file_id: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentIn]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1)
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str
    id: str | None = None
    status: str | None = None


_ITEMS: dict[str, type[BaseModel]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}


class FunctionTool(BaseModel):
    """Responses' flat function tool: ``{"type": "function", "name", "parameters", ...}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _invalid(message: str, param: str) -> InvalidParameters:
    return InvalidParameters(message, details={"param": param})


def _parsed(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join([where, *(str(p) for p in first["loc"])])
        problem = "unrecognized parameter" if first["type"] == "extra_forbidden" else first["msg"]
        raise _invalid(f"{loc}: {problem}", loc) from None


def parse_tools(body: ResponsesBody) -> list[FunctionTool]:
    tools = []
    for index, tool in enumerate(body.tools or []):
        kind = tool.get("type")
        if kind != "function":
            raise _invalid(
                f"tools.{index}: only function tools are supported, not {str(kind)[:40]!r}",
                f"tools.{index}.type",
            )
        tools.append(_parsed(FunctionTool, tool, f"tools.{index}"))
    return tools


def _items(body: ResponsesBody) -> list[BaseModel]:
    if isinstance(body.input, str):
        return [MessageItem(role="user", content=body.input)]
    items = []
    for index, item in enumerate(body.input):
        kind = item.get("type", "message")
        model = _ITEMS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise _invalid(
                f"input.{index}: items of type {str(kind)[:40]!r} are not supported (message, "
                "function_call and function_call_output are)",
                f"input.{index}.type",
            )
        items.append(_parsed(model, item, f"input.{index}"))
    return items


def _messages(body: ResponsesBody) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    for index, item in enumerate(_items(body)):
        if isinstance(item, MessageItem):
            messages.append(_message(item, index))
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "name": item.name, "arguments": item.arguments}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "content": item.output, "tool_call_id": item.call_id})
    if not any(m["role"] != "system" for m in messages):
        raise _invalid("input has no user, assistant or tool item", "input")
    return messages


def _message(item: MessageItem, index: int) -> dict[str, Any]:
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    parts = [_part(part, f"input.{index}.content.{n}") for n, part in enumerate(item.content)]
    if role in ("system", "assistant"):
        if any(p["type"] != "text" for p in parts):
            raise _invalid(
                f"input.{index}: a {item.role} message holds text only", f"input.{index}"
            )
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(part: ContentIn, where: str) -> dict[str, Any]:
    if part.type in ("input_text", "output_text"):
        if part.text is None:
            raise _invalid(f"{where}: a {part.type} part needs text", where)
        return {"type": "text", "text": part.text}
    if part.type == "refusal":
        return {"type": "text", "text": part.refusal or ""}
    if part.type == "input_file" or part.file_id is not None:
        raise _invalid(f"{where}: files (file_id, input_file) are not supported", where)
    if not part.image_url:
        raise _invalid(f"{where}: an input_image part needs image_url", where)
    return image_part(part.image_url, where)


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name and set(choice) <= {"type", "name"}:
            return name
    raise _invalid(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}',
        "tool_choice",
    )


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    given = text.format if text is not None else None
    if given is None or given.type == "text":
        return None
    if given.type == "json_object":
        return {"type": "json_object"}
    if given.schema_ is None:
        raise _invalid("text.format json_schema needs schema", "text.format.schema")
    return {"type": "json_schema", "json_schema": given.schema_, "name": given.name}


def check_supported(body: ResponsesBody) -> None:
    """E4500s for what the fleet cannot honour, before any job is made."""
    for name, harmless in UNSUPPORTED.items():
        value = getattr(body, name)
        if value is not None and value not in harmless:
            raise _invalid(
                f"{name}={json.dumps(value, default=str)[:60]} is not supported by this gateway"
                + (f" (only {json.dumps(harmless[0])})" if harmless else ""),
                name,
            )
    if body.stream_options is not None and not body.stream:
        raise _invalid("stream_options is only allowed when stream is true", "stream_options")
    if body.background and body.store is False:
        raise _invalid("background responses must be stored: store=false is refused", "store")


def to_request(body: ResponsesBody, caller: Caller, options: JobOptions) -> InferenceRequest:
    """The job for ``body``, or E45xx naming the offending parameter."""
    check_supported(body)
    tools = parse_tools(body)
    tool_choice = _tool_choice(body.tool_choice)
    check_tools([t.name for t in tools], tool_choice)
    if tool_choice not in (None, "none", "auto", "required") and tool_choice not in {
        t.name for t in tools
    }:
        raise _invalid(f"tool_choice names no tool of the request: {tool_choice!r}", "tool_choice")
    metadata = openai_metadata(body)
    fields: dict[str, Any] = {
        "request_id": options.request_id,
        "agent_did": caller.agent_did,
        "messages": _messages(body),
        "model_id": body.model,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "priority": options.priority,
        "timeout": options.timeout,
        "tools": [
            {
                "name": t.name,
                "description": t.description or "",
                "parameters": t.parameters or {"type": "object", "properties": {}},
            }
            for t in tools
        ],
        "tool_choice": tool_choice,
        "response_format": _response_format(body.text),
        "metadata": metadata,
    }
    if body.max_output_tokens is not None:
        fields["max_tokens"] = body.max_output_tokens
    if body.l04 is not None:
        fields.update(body.l04.request_fields())
    return parse_request(fields)


def record_for(body: ResponsesBody, job_id: str, caller: Caller, created_at: int) -> ResponseRecord:
    tools = [t.model_dump(exclude_none=True) for t in parse_tools(body)]
    for tool in tools:
        tool.setdefault("strict", None)
        tool.setdefault("parameters", {"type": "object", "properties": {}})
    return ResponseRecord(
        id=response_id(job_id),
        created_at=created_at,
        owner=owner_of(caller),
        model=body.model or "",
        background=bool(body.background),
        instructions=body.instructions,
        metadata=dict(body.metadata or {}),
        tools=tools,
        tool_choice=body.tool_choice if body.tool_choice is not None else "auto",
        text=body.text.model_dump(by_alias=True, exclude_none=True)
        if body.text is not None and body.text.format is not None
        else {"format": {"type": "text"}},
        temperature=body.temperature,
        top_p=body.top_p,
        max_output_tokens=body.max_output_tokens,
        service_tier=body.service_tier,
        store=body.store is not False,
    )
