"""The Responses API's ``response`` object: a job's state and answer (or error) beside the
:class:`ResponseRecord` of what the request asked, and the ids that tie it to its job
(``resp_<job id>``, ``msg_<job id>``, ``fc_<job id>_<n>``), the same from every server.

What the object needs beyond the job (the request's instructions, metadata, tools, its creation
time, the key that made it) is the record, kept in Redis beside the job (see
:mod:`gateway_http.responses_store`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.errors import GatewayError, JobCancelled
from gateway_core.job_states import JobState
from gateway_core.response import InferenceResponse, TokenUsage
from gateway_core.wire import JOB_ID_PATTERN
from gateway_http.door import Caller

RESPONSE_ID_PREFIX = "resp_"

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]


def response_id(job_id: str) -> str:
    return f"{RESPONSE_ID_PREFIX}{job_id}"


def job_id_of(response_id: str) -> str | None:
    """The job behind ``resp_<job id>``; None for an id that cannot be one of ours."""
    if not response_id.startswith(RESPONSE_ID_PREFIX):
        return None
    job_id = response_id[len(RESPONSE_ID_PREFIX) :]
    return job_id if JOB_ID_PATTERN.match(job_id) else None


class ResponseRecord(BaseModel):
    """What the ``response`` object says beyond its job: the request's own fields, as asked.

    ``owner`` is the virtual key's id (or ``agent:<did>`` without auth): never a secret.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    created_at: int
    owner: str
    model: str = ""
    background: bool = False
    instructions: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = "auto"
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    service_tier: str | None = None
    store: bool = True

    @property
    def job_id(self) -> str:
        return self.id[len(RESPONSE_ID_PREFIX) :]


def owner_of(caller: Caller) -> str:
    return caller.key_id or f"agent:{caller.agent_did}"


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def message_id(job_id: str) -> str:
    return f"msg_{job_id}"


def call_item_id(job_id: str, index: int) -> str:
    return f"fc_{job_id}_{index}"


def message_item(job_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": message_id(job_id),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text)] if status != "in_progress" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_items(response: InferenceResponse) -> list[dict[str, Any]]:
    """The message (when there is text, or nothing else) and the function calls, in order."""
    incomplete = response.finish_reason == "length"
    items = []
    if response.content or not response.tool_calls:
        status = "incomplete" if incomplete else "completed"
        items.append(message_item(response.job_id, response.content, status))
    for index, call in enumerate(response.tool_calls):
        items.append(
            {
                "id": call_item_id(response.job_id, index),
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    return items


def status_of_answer(response: InferenceResponse) -> Status:
    return "incomplete" if response.finish_reason == "length" else "completed"


def status_of_error(error: GatewayError) -> Status:
    return "cancelled" if isinstance(error, JobCancelled) else "failed"


def status_of_state(state: JobState) -> Status:
    """A job not yet ended, as the Responses API names it."""
    return "in_progress" if state is JobState.RUNNING else "queued"


def response_object(
    record: ResponseRecord,
    status: Status,
    answer: InferenceResponse | None = None,
    error: GatewayError | None = None,
) -> dict[str, Any]:
    """The ``response`` object for ``record`` in ``status``, with its answer or its error."""
    return {
        "id": record.id,
        "object": "response",
        "created_at": record.created_at,
        "status": status,
        "background": record.background,
        "error": {"code": error.code, "message": error.message}
        if error is not None and status == "failed"
        else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": record.instructions,
        "max_output_tokens": record.max_output_tokens,
        "model": answer.model_id if answer is not None else record.model,
        "output": output_items(answer) if answer is not None else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": record.service_tier or "default",
        "store": record.store,
        "temperature": record.temperature,
        "text": record.text,
        "tool_choice": record.tool_choice,
        "tools": record.tools,
        "top_p": record.top_p,
        "truncation": "disabled",
        "usage": usage_object(answer.token_usage) if answer is not None else None,
        "metadata": record.metadata,
    }
