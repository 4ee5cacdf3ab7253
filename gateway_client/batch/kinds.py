"""What a batch line's ``url`` means: how its body becomes a job, and the job's answer a body.

The runner knows lines by their kind only (:class:`LineKind`), so a new endpoint for batch lines
(``/v1/responses``) is one more entry in the mapping the runner is given (``BatchRunner(...,
kinds={...})``), with no change to the runner. :data:`CHAT` is the kind every runner knows.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle
from gateway_core.errors import GatewayError
from gateway_core.request import parse_request
from gateway_core.response import InferenceResponse


@dataclass(frozen=True, slots=True)
class Running:
    """A line's job: its handle (status, cancel) and how to wait for its answer."""

    handle: JobHandle
    result: Callable[[], Awaitable[Any]]


class LineKind(Protocol):
    def request(
        self, body: dict[str, Any], *, agent_did: str, model: str | None, priority: str
    ) -> Any:
        """The job's request from a line's body; a :class:`GatewayError` (E45xx) if invalid."""

    async def submit(
        self, gateway: ModelGateway, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        """Submit the job (the same ``job_id`` again attaches to the job that exists)."""

    async def attach(self, gateway: ModelGateway, job_id: str) -> Running:
        """The job submitted earlier as ``job_id``; a :class:`GatewayError` if there is none."""

    def body(self, response: Any) -> dict[str, Any]:
        """The answer's body, as the endpoint would have answered it."""


# Chat-completions body fields and the request fields they become.
_CHAT_FIELDS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "metadata": "metadata",
}


class ChatLines:
    """``/v1/chat/completions`` lines."""

    def request(
        self, body: dict[str, Any], *, agent_did: str, model: str | None, priority: str
    ) -> Any:
        fields: dict[str, Any] = {
            "agent_did": agent_did,
            "messages": body.get("messages"),
            "model_id": model or body.get("model"),  # --model overrides what the lines name
            "priority": priority,
        }
        for source, target in _CHAT_FIELDS.items():
            if body.get(source) is not None:
                fields[target] = body[source]
        stop = body.get("stop")
        if stop is not None:
            fields["stop"] = [stop] if isinstance(stop, str) else stop
        response_format = body.get("response_format")
        if isinstance(response_format, dict):
            fields["response_format"] = _response_format(response_format)
        return parse_request(fields)

    async def submit(
        self, gateway: ModelGateway, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        handle = await gateway.submit(request, job_id=job_id, key_id=key_id)
        return Running(handle, handle.result)

    async def attach(self, gateway: ModelGateway, job_id: str) -> Running:
        handle = await gateway.job(job_id)
        return Running(handle, handle.result)

    def body(self, response: Any) -> dict[str, Any]:
        assert isinstance(response, InferenceResponse)
        message: dict[str, Any] = {"role": "assistant", "content": response.content}
        if response.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in response.tool_calls
            ]
        usage = response.token_usage
        return {
            "id": f"chatcmpl-{response.job_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": response.finish_reason}],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "l04": {
                "provider": response.provider,
                "cached": response.cached,
                "cost": response.cost,
                "latency_ms": response.latency_ms,
            },
        }


def _response_format(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type") == "json_schema" and isinstance(value.get("json_schema"), dict):
        schema = value["json_schema"]
        return {
            "type": "json_schema",
            "json_schema": schema.get("schema", {}),
            "name": schema.get("name", "response"),
        }
    return {"type": value.get("type", "text")}


CHAT = ChatLines()
CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
DEFAULT_KINDS: dict[str, LineKind] = dict.fromkeys(CHAT_URLS, CHAT)

__all__ = ["CHAT", "DEFAULT_KINDS", "GatewayError", "LineKind", "Running"]
