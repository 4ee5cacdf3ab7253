"""The door's translations, without a server: each API's body to a job, answers to each API's
objects, and errors to each API's status and shape."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from gateway_core.errors import ERROR_CODES, GatewayError, InvalidParameters, ValidationError
from gateway_core.messages import MessageRole, ToolCall
from gateway_core.request import Priority
from gateway_core.response import InferenceResponse, TokenUsage
from gateway_http import anthropic_messages, batches, openai_chat, openai_responses
from gateway_http.body import BodyRefused, validate
from gateway_http.door import Caller, JobOptions
from gateway_http.errors import STATUS_BY_CODE, HttpError

CALLER = Caller(agent_did="did:key:door")
OPTIONS = JobOptions(request_id="r1", priority=Priority.NORMAL, timeout=30.0, job_id=None)


def chat(**body: Any) -> Any:
    body.setdefault("model", "mock")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return openai_chat.to_request(
        openai_chat.ChatCompletionBody.model_validate(body), CALLER, OPTIONS
    )


def messages(**body: Any) -> Any:
    body.setdefault("model", "mock")
    body.setdefault("max_tokens", 50)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    parsed = anthropic_messages.MessagesBody.model_validate(body)
    return anthropic_messages.to_request(parsed, CALLER, OPTIONS)


def response(**fields: Any) -> InferenceResponse:
    base: dict[str, Any] = {
        "request_id": "r1",
        "job_id": "j1",
        "model_id": "mock",
        "provider": "mock",
        "content": "hello",
        "token_usage": TokenUsage(prompt_tokens=3, completion_tokens=2, cached_tokens=1),
    }
    return InferenceResponse(**{**base, **fields})


def test_every_error_code_has_a_status() -> None:
    assert set(STATUS_BY_CODE) == set(ERROR_CODES)
    for code, status in STATUS_BY_CODE.items():
        assert 400 <= status < 600 and status != 500, code


@pytest.mark.parametrize(
    ("code", "status", "openai_type", "anthropic_type"),
    [
        ("E4001", 404, "not_found_error", "not_found_error"),
        ("E4401", 429, "rate_limit_error", "rate_limit_error"),
        ("E4402", 429, "insufficient_quota", "rate_limit_error"),
        ("E4403", 503, "service_unavailable_error", "overloaded_error"),
        ("E4408", 401, "authentication_error", "authentication_error"),
        ("E4409", 403, "permission_error", "permission_error"),
        ("E4502", 400, "invalid_request_error", "invalid_request_error"),
        ("E4200", 502, "api_error", "api_error"),
        ("E4404", 504, "timeout_error", "api_error"),
    ],
)
def test_error_shapes(code: str, status: int, openai_type: str, anthropic_type: str) -> None:
    error = HttpError.of(GatewayError("what happened", code=code))
    assert error.status == status
    param = "model" if code in ("E4001", "E4409") else None
    assert error.body("openai") == {
        "error": {"message": "what happened", "type": openai_type, "param": param, "code": code}
    }
    assert error.body("anthropic") == {
        "type": "error",
        "error": {"type": anthropic_type, "message": f"[{code}] what happened"},
    }
    assert ("retry-after" in error.headers()) == (status in (429, 503))


def test_retry_after_comes_from_the_error() -> None:
    error = HttpError.of(GatewayError("slow down", code="E4401", details={"retry_after": 2.2}))
    assert error.headers() == {"retry-after": "3"}


def test_sse_errors() -> None:
    error = HttpError.of(GatewayError("cut", code="E4604"))
    assert error.sse("openai").startswith(b'data: {"error":')
    assert error.sse("anthropic").startswith(b"event: error\ndata: ")


def test_openai_body_to_a_job() -> None:
    png = "iVBORw0KGgo="
    job = chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
        ],
        max_completion_tokens=77,
        stop="END",
        seed=7,
        tool_choice={"type": "function", "function": {"name": "f"}},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        user="u-1",
        l04={"fallback_models": ["gpt-4o-mini"], "strategy": "cost_optimized"},
    )
    assert job.messages[0].role is MessageRole.SYSTEM
    parts = job.messages[1].content
    assert parts[1].data == png and parts[1].media_type == "image/png"
    assert parts[2].url == "https://example.com/a.png"
    assert job.max_tokens == 77 and job.stop == ["END"] and job.seed == 7
    assert job.tool_choice == "f"
    assert job.response_format is not None and job.response_format.type == "json_schema"
    assert job.metadata["openai.user"] == "u-1"
    assert job.routing.fallback_models == ["gpt-4o-mini"]
    assert job.agent_did == CALLER.agent_did and job.request_id == "r1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("presence_penalty", 0.5),
        ("logit_bias", {"1": 2}),
        ("audio", {"voice": "x"}),
        ("parallel_tool_calls", False),
    ],
)
def test_unsupported_values_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(InvalidParameters) as refused:
        chat(**{field: value})
    assert refused.value.details["param"] == field


def test_harmless_values_pass() -> None:
    chat(n=1, logprobs=False, presence_penalty=0, store=False, parallel_tool_calls=True)


@pytest.mark.parametrize(
    "bad",
    [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
                    ],
                }
            ]
        },
        {"tool_choice": {"type": "function"}},
        {"max_tokens": 5, "max_completion_tokens": 6},
        {"messages": [{"role": "tool", "content": "no id"}]},
    ],
)
def test_bad_openai_bodies(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat(**bad)


METADATA_BODIES: dict[type[pydantic.BaseModel], dict[str, Any]] = {
    openai_chat.ChatCompletionBody: {
        "model": "mock",
        "messages": [{"role": "user", "content": "hi"}],
    },
    openai_responses.ResponsesBody: {"input": "hi"},
    batches.BatchBody: {
        "input_file_id": "file-1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    },
}


@pytest.mark.parametrize("model", list(METADATA_BODIES))
def test_metadata_within_openais_limits_passes(model: type[pydantic.BaseModel]) -> None:
    widest = {f"{i:02d}".ljust(64, "k"): "v" * 512 for i in range(16)}
    assert validate(model, {**METADATA_BODIES[model], "metadata": widest}).metadata == widest  # type: ignore[attr-defined]


def test_metadata_at_openais_limits_in_any_script_makes_a_job() -> None:
    """16 pairs of the longest keys and values, in four-byte characters: well inside the job's
    64 KiB of metadata, counted in UTF-8 bytes (as \\u escapes it would be 110 KB)."""
    widest = {f"{i:02d}" + "😀" * 62: "😀" * 512 for i in range(16)}
    assert chat(metadata=widest).metadata == widest


@pytest.mark.parametrize("model", list(METADATA_BODIES))
@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},  # 17 pairs
        {"k" * 65: "v"},  # a key over 64 characters
        {"k": "v" * 513},  # a value over 512 characters
        {"k": 1},  # values are strings
    ],
    ids=["17 pairs", "long key", "long value", "not a string"],
)
def test_metadata_over_openais_limits_is_a_400_naming_it(
    model: type[pydantic.BaseModel], metadata: dict[str, Any]
) -> None:
    with pytest.raises(BodyRefused) as refused:
        validate(model, {**METADATA_BODIES[model], "metadata": metadata})
    assert refused.value.error.status == 400
    assert str(refused.value.error.param).startswith("metadata")


def test_anthropic_tool_turns() -> None:
    job = messages(
        system=[{"type": "text", "text": "sys"}],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "let me see"},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
        tools=[{"name": "w", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any"},
    )
    roles = [m.role for m in job.messages]
    assert roles == [
        MessageRole.SYSTEM,
        MessageRole.USER,
        MessageRole.ASSISTANT,
        MessageRole.TOOL,
        MessageRole.USER,
    ]
    assert json.loads(job.messages[2].tool_calls[0].arguments) == {"city": "Oslo"}
    assert job.messages[3].tool_call_id == "t1" and job.messages[3].content == "cold"
    assert job.tool_choice == "required"


def test_anthropic_refusals() -> None:
    with pytest.raises(InvalidParameters):
        messages(top_k=3)
    with pytest.raises(InvalidParameters):
        messages(thinking={"type": "enabled", "budget_tokens": 1000})
    with pytest.raises(InvalidParameters):
        messages(
            messages=[{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y"}]}]
        )
    messages(thinking={"type": "disabled"})


def test_answers_in_each_shape() -> None:
    called = response(
        content="",
        finish_reason="tool_calls",
        tool_calls=[ToolCall(id="c1", name="f", arguments='{"a": 1}')],
    )
    completion = openai_chat.completion_object(called, None)
    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert completion["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    message = anthropic_messages.message_object(called)
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert (
        message["usage"]["input_tokens"] == 2 and message["usage"]["cache_read_input_tokens"] == 1
    )


def test_stream_ends() -> None:
    chunks = openai_chat.ChunkStream("j1", "mock", include_usage=True)
    end = chunks.end(response()).decode().split("\n\n")
    assert end[-2] == "data: [DONE]"
    usage = json.loads(end[-3][6:])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
    events = anthropic_messages.EventStream("j1", "mock")
    sequence = (events.start() + events.text("hel") + events.end(response())).decode()
    names = [e.split("\n")[0][7:] for e in sequence.split("\n\n") if e]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_a_whole_answer_with_text_and_tool_calls_streams_both() -> None:
    both = response(content="checking", tool_calls=[ToolCall(id="c1", name="f", arguments="{}")])
    events = anthropic_messages.EventStream("j1", "mock")
    sequence = (events.start() + events.end(both)).decode()
    assert '"text_delta","text":"checking"' in sequence
    assert '"type":"tool_use"' in sequence


@pytest.mark.parametrize(
    "bad",
    [
        {"stream_options": {"include_usage": True}},  # without stream
        {"tools": [{"type": "function", "function": {"name": "f"}}] * 2},
        {"tool_choice": "required"},  # and no tools
    ],
)
def test_openai_bodies_that_would_be_ignored_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters):
        chat(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": "0.5"},
        {"stream": "yes"},
        {"l04": {"provider": "nope"}},
    ],
)
def test_openai_bodies_are_read_strictly(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        openai_chat.ChatCompletionBody.model_validate(
            {"model": "mock", "messages": [{"role": "user", "content": "x"}], **bad}
        )


def test_anthropic_bodies_that_would_be_ignored_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        messages(metadata={"user_id": "u", "session": "s"})
    with pytest.raises(InvalidParameters):
        messages(tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    for source in (
        {"type": "base64", "media_type": "image/png", "data": "@@not base64@@"},
        {"type": "base64", "media_type": "text/plain", "data": "aGk="},
    ):
        with pytest.raises(InvalidParameters):
            messages(messages=[{"role": "user", "content": [{"type": "image", "source": source}]}])


def test_a_spent_quota_says_when_it_resets() -> None:
    spent = GatewayError("spent", code="E4402", details={"resets_in": 3600})
    assert HttpError.of(spent).headers() == {"retry-after": "3600"}


def test_a_validation_error_names_its_parameter() -> None:
    with pytest.raises(ValidationError) as caught:
        chat(stop=["a"] * 40)
    assert HttpError.of(caught.value).param == "stop"
