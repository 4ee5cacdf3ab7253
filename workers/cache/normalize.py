"""What a cached answer may be reused for: the exact key, and the semantic scope and query.

The exact key hashes everything that shapes an answer: the model, every message, the sampling
parameters, max_tokens, stop sequences, seed, tools, tool choice and response format. Two
requests with the same key would be sent to the provider byte for byte alike.

The semantic cache compares only the last user message by meaning. Everything else must match
exactly, so it forms the *scope* the comparison happens within: a paraphrase is never answered
across different models, system prompts, earlier turns, sampling parameters, tools or response
formats.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gateway_core.messages import Message, MessageRole
from gateway_core.request import InferenceRequest


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _message(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def _shape(model_id: str, request: InferenceRequest) -> dict[str, Any]:
    """Everything but the messages that decides the answer."""
    return {
        "model": model_id,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop,
        "seed": request.seed,
        "tools": [t.model_dump(mode="json", exclude_none=True) for t in request.tools],
        "tool_choice": request.tool_choice,
        "response_format": (
            request.response_format.model_dump(mode="json") if request.response_format else None
        ),
        # The mock provider's options shape its answer like a sampling parameter would.
        "mock": request.metadata.get("mock"),
    }


def exact_key(model_id: str, request: InferenceRequest) -> str:
    shape = _shape(model_id, request)
    shape["messages"] = [_message(m) for m in request.messages]
    return _digest(shape)


def semantic_query(model_id: str, request: InferenceRequest) -> tuple[str, str] | None:
    """(scope, text) for the semantic cache, or None when the request may not reuse an answer.

    A reused answer needs deterministic sampling (temperature 0) or the request's explicit
    ``semantic_cache=True``; and the last message must be the user's, in plain text.
    """
    if request.semantic_cache is False:
        return None
    if request.semantic_cache is None and request.temperature != 0:
        return None
    last = request.messages[-1]
    if last.role is not MessageRole.USER or not isinstance(last.content, str):
        return None
    if not last.content.strip():
        return None
    shape = _shape(model_id, request)
    shape["history"] = [_message(m) for m in request.messages[:-1]]
    return _digest(shape)[:32], last.content
