"""Span attributes of a provider call, as the OpenTelemetry GenAI semantic conventions name them.

https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ (status: development): the
span of a call is named ``{gen_ai.operation.name} {gen_ai.request.model}``, of kind CLIENT.

Ids, model names, counts and codes only: never a prompt, a response or a key. The one exception
is the switch the OpenTelemetry Python GenAI instrumentations use,
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``: then the messages are added as
``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON), each text passed through the
same key redaction as the logs (:func:`gateway_core.redact.redact`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from gateway_core.redact import redact

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

#: Our provider names that the conventions know by another name (the rest are kept as they are).
_WELL_KNOWN_PROVIDERS = {"google": "gcp.gemini", "gemini": "gcp.gemini"}

Attributes = dict[str, str | int | float | bool | tuple[str, ...]]


def capture_content(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the operator opted in to message content in spans."""
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def operation(kind: str) -> str:
    """``gen_ai.operation.name`` of a job of this kind (``chat`` or ``embed``)."""
    return "embeddings" if kind == "embed" else "chat"


def provider_name(provider: str) -> str:
    return _WELL_KNOWN_PROVIDERS.get(provider, provider)


def span_name(op: str, model: str) -> str:
    return f"{op} {model}"


def request_attributes(op: str, provider: str, model: str) -> Attributes:
    return {
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": provider_name(provider),
        "gen_ai.request.model": model,
    }


def response_attributes(
    model: str, input_tokens: int, output_tokens: int | None, finish_reason: str | None
) -> Attributes:
    attributes: Attributes = {
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
    }
    if output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = output_tokens
    if finish_reason:
        attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
    return attributes


def input_messages(messages: Iterable[tuple[str, str]]) -> Attributes:
    """``gen_ai.input.messages`` from (role, text) pairs, redacted: only when captured."""
    return {
        "gen_ai.input.messages": json.dumps(
            [_message(role, text) for role, text in messages], ensure_ascii=False
        )
    }


def output_messages(text: str, finish_reason: str | None) -> Attributes:
    """``gen_ai.output.messages`` of one answer, redacted: only when captured."""
    message: dict[str, Any] = _message("assistant", text)
    message["finish_reason"] = finish_reason or "stop"
    return {"gen_ai.output.messages": json.dumps([message], ensure_ascii=False)}


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": redact(text)}]}
