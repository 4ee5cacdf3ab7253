"""The Responses API's translation (gateway_http/openai_responses.py) and its numbered events
(gateway_http/responses_events.py), without Redis: bodies to jobs, answers to objects, and the
event sequence as a pure function of the record and the job's feed."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway_core.errors import GatewayError, JobCancelled, ProviderFailed
from gateway_core.messages import ToolCall
from gateway_core.request import Priority
from gateway_core.response import InferenceResponse, TokenUsage
from gateway_http.door import Caller, JobOptions
from gateway_http.openai_responses import ResponsesBody, record_for, to_request
from gateway_http.responses_events import ResponseEvents
from gateway_http.responses_object import (
    ResponseRecord,
    job_id_of,
    owner_of,
    response_id,
    response_object,
)

CALLER = Caller(agent_did="did:l04:unit", key_id="key-1")
OPTIONS = JobOptions(request_id="r-1", priority=Priority.NORMAL, timeout=30, job_id=None)
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def job_of(**body: Any) -> Any:
    return to_request(ResponsesBody.model_validate({"input": "hi", **body}), CALLER, OPTIONS)


def answer(content: str = "Hello", finish: str = "stop", calls: int = 0) -> InferenceResponse:
    return InferenceResponse(
        request_id="r-1",
        job_id="job-1",
        model_id="mock",
        provider="mock",
        content=content,
        finish_reason=finish,
        tool_calls=[
            ToolCall(id=f"call_{i}", name="get_weather", arguments="{}") for i in range(calls)
        ],
        token_usage=TokenUsage(prompt_tokens=3, completion_tokens=2),
    )


def record(background: bool = False) -> ResponseRecord:
    body = ResponsesBody.model_validate(
        {"input": "hi", "background": background, "tools": [TOOL], "metadata": {"k": "v"}}
    )
    return record_for(body, "job-1", CALLER, created_at=1_700_000_000)


def test_a_string_input_and_instructions_become_messages() -> None:
    job = job_of(instructions="be brief", max_output_tokens=9, temperature=0.2)
    assert [(m.role, m.text) for m in job.messages] == [("system", "be brief"), ("user", "hi")]
    assert job.max_tokens == 9 and job.temperature == 0.2 and job.agent_did == "did:l04:unit"


def test_the_callers_ids_are_kept_in_the_jobs_metadata() -> None:
    job = job_of(user="u-1", safety_identifier="s-1", prompt_cache_key="p-1", metadata={"a": "b"})
    assert job.metadata == {
        "a": "b",
        "openai.user": "u-1",
        "openai.safety_identifier": "s-1",
        "openai.prompt_cache_key": "p-1",
    }


def test_items_of_a_tool_loop_become_the_assistant_turn_and_tool_results() -> None:
    job = job_of(
        tools=[TOOL],
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "brief"}]},
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    )
    roles = [m.role for m in job.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert job.messages[2].tool_calls[0].id == "c1"
    assert job.messages[3].tool_call_id == "c1" and job.messages[3].text == "sunny"
    assert [t.name for t in job.tools] == ["get_weather"]


def test_text_format_and_tool_choice() -> None:
    schema = {"type": "object", "properties": {}}
    job = job_of(
        text={"format": {"type": "json_schema", "name": "r", "schema": schema}},
        tools=[TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    assert job.response_format is not None and job.response_format.json_schema == schema
    assert job.tool_choice == "get_weather"
    assert job_of(text={"format": {"type": "json_object"}}).response_format is not None
    assert job_of(text={"format": {"type": "text"}}).response_format is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"max_tool_calls": 2}, "max_tool_calls"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"background": True, "store": False}, "store"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"tools": [{"type": "web_search"}]}, "tools.0"),
        ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [TOOL]}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"input": [{"type": "reasoning"}]}, "input.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input.0"),
        ({"input": [{"role": "system", "content": "only instructions"}]}, "input"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
    ],
)
def test_what_would_change_the_answer_is_refused_naming_it(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        job_of(**fields)
    assert caught.value.code.startswith("E45")
    assert named in str(caught.value.details.get("param")), caught.value


def test_values_that_change_nothing_pass() -> None:
    job_of(truncation="disabled", parallel_tool_calls=True, include=[], reasoning={}, store=True)


def test_the_response_id_is_the_job_id() -> None:
    assert job_id_of(response_id("abc-1")) == "abc-1"
    assert job_id_of("resp_") is None and job_id_of("chatcmpl-x") is None
    assert job_id_of("resp_../x") is None
    assert owner_of(Caller(agent_did="did:x")) == "agent:did:x" and owner_of(CALLER) == "key-1"


@pytest.mark.parametrize(
    ("status", "kwargs", "expected"),
    [
        ("completed", {"answer": answer()}, "Hello"),
        ("incomplete", {"answer": answer(finish="length")}, "Hello"),
        ("failed", {"error": ProviderFailed("upstream broke")}, ""),
        ("cancelled", {"error": JobCancelled("cancelled")}, ""),
        ("queued", {}, ""),
    ],
)
def test_the_response_object_parses_in_the_sdk(
    status: Any, kwargs: dict[str, Any], expected: str
) -> None:
    body = response_object(record(True), status, **kwargs)
    if status == "failed":
        # Our E4xxx code is not among OpenAI's literal codes: the SDK reads responses without
        # validating literals (the fleet test retrieves a failed one), a strict parse does.
        assert body["error"] == {"code": "E4200", "message": "upstream broke"}
        body["error"]["code"] = "server_error"
    parsed = Response.model_validate(body)
    assert parsed.status == status and parsed.output_text == expected
    assert parsed.metadata == {"k": "v"} and parsed.tools[0].type == "function"
    if status == "incomplete":
        assert parsed.incomplete_details is not None
        assert parsed.incomplete_details.reason == "max_output_tokens"
    if status == "completed":
        assert parsed.usage is not None and parsed.usage.total_tokens == 5


def replay(background: bool, deltas: list[str], end: InferenceResponse | GatewayError) -> list[Any]:
    writer = ResponseEvents(record(background))
    events = writer.opening()
    for delta in deltas:
        events += writer.chunk(delta)
    events += writer.final(end) if isinstance(end, InferenceResponse) else writer.failed(end)
    return events


def test_the_events_are_numbered_the_same_on_every_replay_and_parse_in_the_sdk() -> None:
    first = replay(True, ["Hel", "", "lo"], answer(calls=1))
    assert first == replay(True, ["Hel", "", "lo"], answer(calls=1))
    assert [e["sequence_number"] for e in first] == list(range(len(first)))
    kinds = [EVENTS.validate_python(e).type for e in first]
    assert kinds == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert first[10]["output_index"] == 1 and first[10]["item"]["type"] == "function_call"


def test_an_answer_without_chunks_still_streams_its_text() -> None:
    events = replay(False, [], answer("Whole"))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Whole"]
    assert kinds[-1] == "response.completed"
    assert replay(False, [], answer("Cut", finish="length"))[-1]["type"] == "response.incomplete"


def test_a_failed_or_cancelled_job_ends_with_response_failed() -> None:
    cancelled = replay(True, [], JobCancelled("cancelled by the caller"))
    assert [e["type"] for e in cancelled] == [
        "response.created",
        "response.queued",
        "response.failed",
    ]
    assert cancelled[-1]["response"]["status"] == "cancelled"
    failed = replay(True, ["par"], ProviderFailed("broke"))[-1]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "E4200"
