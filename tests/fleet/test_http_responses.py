"""OpenAI's Responses API and background mode at ``l04 serve`` (issue 16, parts 1 and 2), with
the official ``openai`` SDK as the client.

Real processes: ``l04 serve``, ``l04 worker`` (providers mock and openai) and ``l04
mock-provider`` as the openai upstream, on the test's redis-server. The module shares one
server and worker (conftest's ``module_door``); the tests that kill a server or need keys start
their own servers on the same Redis.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
import redis
from openai.types.responses import Response

from l04.redis_server import LocalRedis
from tests.conftest import FAST_RECOVERY
from tests.fleet.test_http_keys import create_key
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.processes import MockUpstreamProcess, ServerProcess, WorkerProcess

DOOR_PROVIDERS = "mock,openai"
UPSTREAM_CHAT = "/v1/chat/completions"
UPSTREAM_MESSAGES = "/v1/messages"
REPLY = "Hello! How can I assist you today?"  # the mock upstream's answer
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)
TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def door(module_door: ServerProcess, upstream: MockUpstreamProcess) -> ServerProcess:
    upstream.reset()
    return module_door


@pytest.fixture
def sdk(door: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def wait_for(sdk: openai.OpenAI, response_id: str, timeout: float = 20) -> Response:
    """Poll ``responses.retrieve`` until the response has ended."""
    deadline = time.monotonic() + timeout
    while True:
        response = sdk.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def raw_events(url: str, response_id: str, after: int | None = None) -> list[dict[str, Any]]:
    """Every event of ``GET /v1/responses/{id}?stream=true`` (after ``after``), in order."""
    params: dict[str, Any] = {"stream": "true"}
    if after is not None:
        params["starting_after"] = after
    answer = httpx.get(f"{url}/v1/responses/{response_id}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]


def test_a_plain_response(
    door: ServerProcess, sdk: openai.OpenAI, redis_server: LocalRedis
) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="mock",
        input="hello responses",
        instructions="be brief",
        metadata={"ticket": "42"},
        temperature=0.5,
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Mock response to: hello responses"
    assert response.id == f"resp_{raw.headers['x-l04-job-id']}"
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.instructions == "be brief" and response.metadata == {"ticket": "42"}
    assert response.error is None and response.incomplete_details is None
    again = sdk.responses.retrieve(response.id)  # stored: any server answers for it
    assert again.output_text == response.output_text and again.status == "completed"
    assert again.metadata == {"ticket": "42"} and again.temperature == 0.5
    # The record outlives the job's answer (L04_RESULT_TTL, 3600 s, after it ended) by at most
    # the job's deadline (L04_HTTP_TIMEOUT, 120 s) and grace: past it the response is a 404.
    client = redis.Redis.from_url(redis_server.url)
    try:
        job_id = raw.headers["x-l04-job-id"]
        job_ttl = client.pttl(f"l04:job:{{{job_id}}}")
        record_ttl = client.pttl(f"l04:job:{{{job_id}}}:response")
    finally:
        client.close()
    assert 3_590_000 < job_ttl <= record_ttl <= job_ttl + 130_000, (job_ttl, record_ttl)
    # A response that was not streamed streams afterwards, from its record and job.
    events = raw_events(door.url, response.id)
    assert events[-1]["type"] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == response.output_text
    # Not stored: no record, so no response to retrieve.
    unstored = sdk.responses.create(model="mock", input="forget me", store=False)
    assert unstored.store is False and unstored.status == "completed"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_message_items_with_an_image_and_a_cut_answer(
    sdk: openai.OpenAI, upstream: MockUpstreamProcess
) -> None:
    pixel = PIXEL
    seen = sdk.responses.create(
        model="gpt-4o-mini",
        instructions="be brief",
        input=[
            {"role": "developer", "content": "answer in French"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is in this picture?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{pixel}"},
                ],
            },
        ],
    )
    assert seen.output_text == REPLY
    sent = upstream.last(UPSTREAM_CHAT)["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[2]["content"][1]["image_url"]["url"].endswith(pixel)
    cut = sdk.responses.create(
        model="mock", input="tell me a long story in many words", max_output_tokens=3
    )
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text.startswith("Mock")


def test_a_streamed_response(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="gpt-4o-mini", input="stream to me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == REPLY and final.status == "completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == REPLY


def test_function_tools_round_trip_plain_and_streamed(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(
        model="gpt-4o-mini", input="weather in Paris?", tools=TOOLS, tool_choice="required"
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    json.loads(call.arguments)
    second = sdk.responses.create(
        model="gpt-4o-mini",
        tools=TOOLS,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
        ],
    )
    assert second.output_text == REPLY
    sent = second.model_dump()  # what reached the provider: the assistant's call, the result
    assert sent["status"] == "completed"
    with sdk.responses.stream(
        model="gpt-4o-mini", input="weather in Rome?", tools=TOOLS, tool_choice="required"
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    assert [i.type for i in final.output] == ["function_call"]


class Place(pydantic.BaseModel):
    location: str


def test_structured_output_with_the_sdks_parse(
    sdk: openai.OpenAI, upstream: MockUpstreamProcess
) -> None:
    parsed = sdk.responses.parse(model="gpt-4o-mini", input="where?", text_format=Place)
    assert parsed.output_parsed == Place(location="San Francisco, CA")
    sent = upstream.last(UPSTREAM_CHAT)["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Place"
    assert parsed.text is not None and parsed.text.format.type == "json_schema"


def test_unsupported_parameters_are_400_naming_them(sdk: openai.OpenAI) -> None:
    refused: list[tuple[str, dict[str, Any]]] = [
        ("previous_response_id", {"previous_response_id": "resp_x"}),
        ("include", {"include": ["reasoning.encrypted_content"]}),
        ("reasoning", {"reasoning": {"effort": "high"}}),
        ("parallel_tool_calls", {"parallel_tool_calls": False}),
        ("store", {"background": True, "store": False}),
        ("tools.0", {"tools": [{"type": "web_search"}]}),
        ("input.0", {"input": [{"type": "reasoning", "summary": []}]}),
    ]
    for name, fields in refused:
        body = {"input": "x", **fields}
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.responses.create(model="mock", **body)
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] in ("E4500", "E4502"), error
        assert name in error["message"], error
    # Values that change nothing pass.
    fine = sdk.responses.create(
        model="mock", input="x", truncation="disabled", parallel_tool_calls=True, store=True
    )
    assert fine.status == "completed"


def test_background_poll_replay_and_resume_after_a_disconnect(
    door: ServerProcess, sdk: openai.OpenAI, upstream: MockUpstreamProcess
) -> None:
    upstream.faults({"chunk_delay_ms": 150, "count": 1})
    created = sdk.responses.create(model="gpt-4o-mini", input="slowly", background=True)
    assert created.status == "queued" and created.background is True
    # A client reads the live stream and drops it after a few events.
    seen: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET", f"{door.url}/v1/responses/{created.id}", params={"stream": "true"}
        ) as live,
    ):
        for line in live.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if len(seen) == 5:
                break
    assert [e["type"] for e in seen[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    # It resumes after the last event it saw, on the SDK, and gets exactly the rest.
    rest = [
        e.model_dump(exclude_unset=True)
        for e in sdk.responses.retrieve(created.id, stream=True, starting_after=4)
    ]
    done = wait_for(sdk, created.id)
    assert done.status == "completed" and done.output_text == REPLY
    replay = raw_events(door.url, created.id)
    assert [e["sequence_number"] for e in replay] == list(range(len(replay)))
    assert seen + rest == replay
    assert raw_events(door.url, created.id, after=4) == replay[5:]  # as many times as asked
    assert raw_events(door.url, created.id, after=len(replay) - 1) == []
    assert replay[-1]["type"] == "response.completed"
    assert upstream.requests_to(UPSTREAM_CHAT) == 1


def test_a_failed_background_response_and_a_streamed_one(
    sdk: openai.OpenAI, upstream: MockUpstreamProcess
) -> None:
    upstream.faults({"status": 400, "count": 1})
    created = sdk.responses.create(model="gpt-4o-mini", input="refused", background=True)
    failed = wait_for(sdk, created.id)
    assert failed.status == "failed" and failed.output == []
    assert failed.error is not None and str(failed.error.code).startswith("E4")
    # The same Idempotency-Key is the same response, from its first request.
    key = {"Idempotency-Key": "background-once"}
    once = sdk.responses.create(model="mock", input="once", background=True, extra_headers=key)
    twice = sdk.responses.create(model="mock", input="once", background=True, extra_headers=key)
    assert twice.id == once.id and twice.created_at == once.created_at
    stream = sdk.responses.create(model="gpt-4o-mini", input="live", background=True, stream=True)
    events = list(stream)
    assert [e.type for e in events[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    last = events[-1]
    assert last.type == "response.completed" and last.response.output_text == REPLY


def test_cancel_a_queued_background_response(
    door: ServerProcess,
    sdk: openai.OpenAI,
    upstream: MockUpstreamProcess,
    redis_server: LocalRedis,
) -> None:
    # No worker serves anthropic yet: the job waits in its queue.
    created = sdk.responses.create(model="claude-3-5-sonnet", input="never", background=True)
    cancelled = sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.id == created.id
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    assert sdk.responses.cancel(created.id).status == "cancelled"  # unchanged, 200
    replay = raw_events(door.url, created.id)
    assert [e["type"] for e in replay][-1] == "response.failed"
    assert replay[-1]["response"]["status"] == "cancelled"
    worker = WorkerProcess(redis_server.url, "anthropic", 4, fleet_env(upstream)).start()
    try:
        time.sleep(1.5)
        assert upstream.requests_to(UPSTREAM_MESSAGES) == 0
    finally:
        worker.stop(timeout=10)
    # Cancelling one that has completed returns it unchanged.
    ended = sdk.responses.create(model="mock", input="quick", background=True)
    assert wait_for(sdk, ended.id).status == "completed"
    again = sdk.responses.cancel(ended.id)
    assert again.status == "completed" and again.output_text == "Mock response to: quick"
    # A response that is not a background one cannot be cancelled.
    plain = sdk.responses.create(model="mock", input="plain")
    with pytest.raises(openai.BadRequestError):
        sdk.responses.cancel(plain.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_no-such-job")


def test_only_its_key_sees_a_response_and_it_outlives_a_killed_server(
    door: ServerProcess, upstream: MockUpstreamProcess, redis_server: LocalRedis
) -> None:
    mine = create_key(redis_server.url, "--agent", "did:l04:mine")["key"]
    theirs = create_key(redis_server.url, "--agent", "did:l04:theirs")["key"]
    first = ServerProcess(redis_server.url).start()
    second = ServerProcess(redis_server.url).start()
    try:
        upstream.faults({"latency_ms": 1500, "count": 1})
        with openai.OpenAI(base_url=f"{first.url}/v1", api_key=mine, max_retries=0) as client:
            created = client.responses.create(model="gpt-4o-mini", input="survive", background=True)
            live = client.responses.retrieve(created.id, stream=True)
            seen = [e.model_dump(exclude_unset=True) for e in itertools.islice(live, 2)]
            live.close()
        assert created.status == "queued"
        assert first.process is not None
        first.process.kill()  # SIGKILL, while the job runs and its stream was being read
        first.process.wait(10)
        with openai.OpenAI(base_url=f"{second.url}/v1", api_key=mine, max_retries=0) as client:
            rest = [
                e.model_dump(exclude_unset=True)
                for e in client.responses.retrieve(created.id, stream=True, starting_after=1)
            ]
            done = wait_for(client, created.id)
        assert done.status == "completed" and done.output_text == REPLY
        # The stream resumed on another server is the same numbered sequence.
        assert [e["sequence_number"] for e in seen + rest] == list(range(len(seen + rest)))
        assert rest[-1]["type"] == "response.completed"
        assert rest[-1]["response"]["output"][0]["content"][0]["text"] == REPLY
        with openai.OpenAI(base_url=f"{second.url}/v1", api_key=theirs, max_retries=0) as other:
            with pytest.raises(openai.NotFoundError):
                other.responses.retrieve(created.id)
            with pytest.raises(openai.NotFoundError):
                other.responses.cancel(created.id)
            with pytest.raises(openai.NotFoundError):
                list(other.responses.retrieve(created.id, stream=True))
        # Without auth (the module's server), the local agent is another owner still.
        with (
            openai.OpenAI(base_url=f"{door.url}/v1", api_key="x", max_retries=0) as local,
            pytest.raises(openai.NotFoundError),
        ):
            local.responses.retrieve(created.id)
    finally:
        second.stop(timeout=10)
        first.stop(timeout=10)


def test_a_background_response_outlives_a_killed_worker(
    door: ServerProcess, sdk: openai.OpenAI, upstream: MockUpstreamProcess, redis_server: LocalRedis
) -> None:
    """The worker running a background response is SIGKILLed mid-call: another takes the job
    over when its lease lapses, and the response completes, its events numbered as ever."""
    env = {**FAST_RECOVERY, **fleet_env(upstream)}
    first = WorkerProcess(redis_server.url, "ollama", 4, env).start()
    second: WorkerProcess | None = None
    try:
        upstream.faults({"latency_ms": 5000, "count": 1, "path": "/api/chat"})
        created = sdk.responses.create(model="llama3.1:8b", input="outlive", background=True)
        deadline = time.monotonic() + 20
        while sdk.responses.retrieve(created.id).status != "in_progress":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        while upstream.requests_to("/api/chat") == 0:
            assert time.monotonic() < deadline, "the call never reached the upstream"
            time.sleep(0.05)
        first.kill()
        second = WorkerProcess(redis_server.url, "ollama", 4, env).start()
        done = wait_for(sdk, created.id, timeout=30)
        assert done.status == "completed" and done.output_text
        replay = raw_events(door.url, created.id)
        assert [e["sequence_number"] for e in replay] == list(range(len(replay)))
        assert replay[-1]["type"] == "response.completed"
        deltas = [e["delta"] for e in replay if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == done.output_text
        assert raw_events(door.url, created.id) == replay
    finally:
        if second is not None:
            second.stop(timeout=10)
        first.stop(timeout=10)
