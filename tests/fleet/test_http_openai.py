"""The OpenAI-compatible API of ``l04 serve``, with the official ``openai`` SDK as the client.

Real processes: ``l04 serve``, ``l04 worker`` and (for the openai provider) ``l04
mock-provider`` as the upstream, on the test's redis-server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway_core.embeddings import vector_from_base64
from tests.processes import MockUpstreamProcess, ServerProcess

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


DOOR_PROVIDERS = "mock,openai"


@pytest.fixture
def door(module_door: ServerProcess, upstream: MockUpstreamProcess) -> ServerProcess:
    """The module's server and worker (conftest's ``module_door``), the upstream reset."""
    upstream.reset()
    return module_door


@pytest.fixture
def sdk(door: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_a_chat_completion_and_its_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": "hello door"}]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Mock response to: hello door"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    job_id = raw.headers["x-l04-job-id"]
    assert completion.id == f"chatcmpl-{job_id}"
    assert raw.headers["x-l04-provider"] == "mock"
    assert raw.headers["x-l04-model"] == "mock"
    assert raw.headers["x-l04-cache"] == "miss"
    assert int(raw.headers["x-l04-queue-ms"]) >= 0
    assert raw.headers["x-request-id"]
    # The same question again is answered from the cache, and says so.
    again = sdk.chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": "hello door"}], temperature=0
    )
    assert again.headers["x-l04-cache"] in ("hit", "miss")


def test_the_callers_request_id_is_kept(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-Id": "trace-42"},
    )
    assert raw.headers["x-request-id"] == "trace-42"


async def test_a_streamed_completion_with_usage(door: ServerProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{door.url}/v1", api_key="unused", max_retries=0
    ) as aclient:
        stream = await aclient.chat.completions.create(
            model="mock",
            messages=[{"role": "user", "content": "stream to me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
    assert text == "Mock response to: stream to me"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_the_raw_event_stream_ends_with_done(door: ServerProcess) -> None:
    body = json.dumps(
        {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "raw"}]}
    )
    out = subprocess.run(
        [
            "curl",
            "-sN",
            f"{door.url}/v1/chat/completions",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    events = [e for e in out.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_tool_calls_plain_and_streamed(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
    )
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls"
    assert calls and calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Rome?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
    )
    names, arguments, finish = [], "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.function and delta.function.name:
                names.append(delta.function.name)
            if delta.function and delta.function.arguments:
                arguments += delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"]
    json.loads(arguments)
    assert finish == "tool_calls"


def test_a_tool_result_goes_back_to_the_model(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content


def test_json_schema_and_json_object(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
    for response_format in (schema, {"type": "json_object"}):
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a city, as JSON"}],
            response_format=response_format,  # type: ignore[arg-type]
        )
        assert answer.choices[0].message.content is not None


def test_models_from_the_catalog(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    ids = {m.id for m in models.data}
    assert {"mock", "gpt-4o-mini"} <= ids
    assert sdk.models.retrieve("mock").id == "mock"
    # An alias resolves to its model.
    assert sdk.models.retrieve("claude-3-5-sonnet").id != "claude-3-5-sonnet"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_errors_map_to_the_sdks_exceptions(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "E4001" and missing.value.param == "model"
    with pytest.raises(openai.BadRequestError) as many:
        sdk.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x"}], n=2)
    assert many.value.param == "n" and many.value.code == "E4502"
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.chat.completions.create(
            model="mock",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"frobnicate": True},
        )
    assert "frobnicate" in unknown.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="mock", messages=[])
    # Values that change nothing pass.
    sdk.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "x"}], n=1, logprobs=False
    )


def test_bad_bodies_are_4xx_in_openais_shape(door: ServerProcess) -> None:
    url = f"{door.url}/v1/chat/completions"
    cases = [
        (b"not json", {"content-type": "application/json"}, 400),
        (b"[1, 2]", {"content-type": "application/json"}, 400),
        (b"", {"content-type": "application/json"}, 400),
        (b'{"model": "mock"}', {"content-type": "text/plain"}, 415),
        (b'{"messages": "nope"}', {"content-type": "application/json"}, 400),
    ]
    for body, headers, status in cases:
        answer = httpx.post(url, content=body, headers=headers, timeout=10)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"].startswith("E45")


def test_embeddings_as_jobs(sdk: openai.OpenAI, door: ServerProcess) -> None:
    one = sdk.embeddings.create(model="mock-embed", input="a single text")
    assert one.object == "list" and len(one.data) == 1
    assert len(one.data[0].embedding) == 16 and one.model == "mock-embed"
    many = sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b", "c"], dimensions=8
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in many.data)
    assert many.usage.prompt_tokens > 0
    # The SDK asks for base64 unless told otherwise, and decodes it; asked for explicitly, it
    # hands over the string: little-endian float32, OpenAI's packing, the same vectors.
    packed = sdk.embeddings.create(
        model="mock-embed", input="a single text", encoding_format="base64"
    )
    unpacked = vector_from_base64(str(packed.data[0].embedding))
    assert unpacked == pytest.approx(one.data[0].embedding, rel=1e-6)
    floats = sdk.embeddings.create(
        model="mock-embed", input="a single text", encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(one.data[0].embedding, rel=1e-6)
    with pytest.raises(openai.BadRequestError) as chat_model:
        sdk.embeddings.create(model="mock", input="x")
    assert chat_model.value.code == "E4101"
    with pytest.raises(openai.BadRequestError) as tokens:
        sdk.embeddings.create(model="mock-embed", input=[[1, 2, 3]])
    assert tokens.value.param == "input"
