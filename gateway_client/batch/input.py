"""Batch input in the OpenAI Batch API's JSONL format, validated line by line.

Each line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
with a chat-completions body. A line that is not valid becomes a :class:`LineError` (an error
output line with a code) and does not stop the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway_core.errors import GatewayError
from gateway_core.request import InferenceRequest, parse_request

CHAT_URLS = frozenset({"/v1/chat/completions", "/chat/completions"})
MAX_CUSTOM_ID = 512

# Chat-completions body fields and the request fields they become.
_BODY_FIELDS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "metadata": "metadata",
}


@dataclass(frozen=True, slots=True)
class BatchLine:
    index: int  # 0-based line number in the input
    custom_id: str
    request: InferenceRequest


@dataclass(frozen=True, slots=True)
class LineError:
    index: int
    custom_id: str
    code: str
    message: str


def parse_line(
    index: int, text: str, *, agent_did: str, model: str | None, priority: str
) -> BatchLine | LineError:
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        return LineError(index, f"line-{index + 1}", "E4500", f"not JSON: {exc.msg}")
    if not isinstance(line, dict):
        return LineError(index, f"line-{index + 1}", "E4500", "a line must be a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
        return LineError(index, f"line-{index + 1}", "E4500", "custom_id must be a string")
    if line.get("method", "POST") != "POST" or line.get("url") not in CHAT_URLS:
        return LineError(
            index, custom_id, "E4500", "only POST /v1/chat/completions lines are supported"
        )
    body = line.get("body")
    if not isinstance(body, dict):
        return LineError(index, custom_id, "E4500", "body must be a chat-completions object")
    fields: dict[str, Any] = {
        "agent_did": agent_did,
        "messages": body.get("messages"),
        "model_id": body.get("model") or model,
        "priority": priority,
    }
    if model is not None:
        fields["model_id"] = model  # --model overrides what the lines name
    for source, target in _BODY_FIELDS.items():
        if body.get(source) is not None:
            fields[target] = body[source]
    stop = body.get("stop")
    if stop is not None:
        fields["stop"] = [stop] if isinstance(stop, str) else stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        fields["response_format"] = _response_format(response_format)
    try:
        return BatchLine(index, custom_id, parse_request(fields))
    except GatewayError as error:
        return LineError(index, custom_id, error.code, error.message)


def _response_format(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type") == "json_schema" and isinstance(value.get("json_schema"), dict):
        schema = value["json_schema"]
        return {
            "type": "json_schema",
            "json_schema": schema.get("schema", {}),
            "name": schema.get("name", "response"),
        }
    return {"type": value.get("type", "text")}


def parse_jsonl(
    lines: Iterable[str], *, agent_did: str, model: str | None = None, priority: str = "low"
) -> Iterator[BatchLine | LineError]:
    """Every line, validated; blank lines are skipped, a repeated custom_id is an error."""
    seen: set[str] = set()
    for index, text in enumerate(lines):
        if not text.strip():
            continue
        parsed = parse_line(index, text, agent_did=agent_did, model=model, priority=priority)
        if parsed.custom_id in seen:
            parsed = LineError(index, parsed.custom_id, "E4500", "custom_id is used twice")
        else:
            seen.add(parsed.custom_id)
        yield parsed
