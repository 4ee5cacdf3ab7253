"""A job for each provider through a real worker, and what the fleet never lets out: secrets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from gateway_client import GatewayError, ModelGateway, ProviderError
from l04.mock_upstream import REPLY
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

FAKE_CLAUDE = str(Path(__file__).parent.parent / "bin" / "fake-claude")
SECRETS = {
    "OPENAI_API_KEY": "sk-canary-openai-7f3a9c2e11",
    "ANTHROPIC_API_KEY": "sk-ant-canary-anthropic-5d8b0e44",
}
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-sonnet-20241022",
    "ollama": "llama3.1:8b",
    "claude_code": "claude-code",
    "mock": "mock",
}


def fleet_env(upstream: MockUpstreamProcess) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "ANTHROPIC_BASE_URL": upstream.url,
        "OLLAMA_URL": upstream.url,
        "L04_CLAUDE_CODE_PATH": FAKE_CLAUDE,
        "FAKE_CLAUDE_MODE": "partial",
        **SECRETS,
    }


@pytest.fixture
def all_providers_worker(
    start_worker: Callable[..., WorkerProcess], upstream: MockUpstreamProcess
) -> WorkerProcess:
    upstream.reset()
    return start_worker(",".join(MODELS), env=fleet_env(upstream))


@pytest.mark.parametrize("provider", sorted(MODELS))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_job_for_each_provider_runs_end_to_end(
    gateway: ModelGateway, all_providers_worker: WorkerProcess, provider: str, stream: bool
) -> None:
    request = make_request("Hello there", model_id=MODELS[provider])
    if stream:
        chunks = [c async for c in gateway.stream(request)]
        assert len(chunks) > 2 and chunks[-1].is_final
        content = "".join(c.content_delta for c in chunks)
        response = chunks[-1].response
    else:
        response = await gateway.execute(request)
        content = response.content
    assert response is not None and response.provider == provider
    expected = "Mock response to: Hello there" if provider == "mock" else REPLY
    assert content == expected == response.content
    assert response.token_usage.total_tokens > 0


async def test_retries_back_off_and_stop_at_the_deadline(
    gateway: ModelGateway, all_providers_worker: WorkerProcess, upstream: MockUpstreamProcess
) -> None:
    # Two 503s then an answer: retried, and it succeeds.
    upstream.faults({"status": 503, "count": 2, "path": "/v1/chat/completions"})
    response = await gateway.execute(make_request("retry me", model_id="gpt-4o-mini"))
    assert response.content == REPLY
    assert upstream.requests_to("/v1/chat/completions") == 3

    # A Retry-After longer than the time left: no retry past the deadline, a coded error fast.
    upstream.reset()
    upstream.faults({"status": 503, "count": 5, "retry_after": 30, "path": "/v1/chat/completions"})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await gateway.execute(make_request("no time", model_id="gpt-4o-mini", timeout=4))
    assert caught.value.code == "E4200"
    assert time.monotonic() - started < 3
    assert upstream.requests_to("/v1/chat/completions") == 1


async def test_no_api_key_leaves_the_worker(
    gateway: ModelGateway,
    all_providers_worker: WorkerProcess,
    upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
) -> None:
    events: list[dict[str, object]] = []
    stop = threading.Event()

    def capture() -> None:  # task events, as Flower receives them
        app = gateway._celery
        with app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": events.append})
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    def ended_tasks() -> int:
        ended = ("task-succeeded", "task-failed")
        return len({e.get("uuid") for e in list(events) if e.get("type") in ended})

    listener = threading.Thread(target=capture, daemon=True)
    listener.start()
    try:
        # Listening once the worker's heartbeat (every 2 s) has come through; then until each
        # of the four jobs' task has ended.
        deadline = time.monotonic() + 10
        while not events:
            assert time.monotonic() < deadline, "no event from the worker in 10 s"
            await asyncio.sleep(0.05)
        errors = await answer_then_refuse(gateway, upstream)
        while ended_tasks() < 4:
            assert time.monotonic() < deadline + 10, f"{ended_tasks()} of 4 tasks ended"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        listener.join(timeout=5)

    stored = []
    for key in redis_client.scan_iter("*"):
        kind = redis_client.type(key)
        if kind == b"hash":
            stored.append(repr(redis_client.hgetall(key)))
        elif kind == b"stream":
            stored.append(repr(redis_client.xrange(key)))
        elif kind == b"list":
            stored.append(repr(redis_client.lrange(key, 0, -1)))
        elif kind == b"string":
            stored.append(repr(redis_client.get(key)))
    places = {
        "worker log (Celery's own lines included)": all_providers_worker.log(),
        "task events": json.dumps(events, default=str),
        "results, events and task messages in Redis": "\n".join(stored),
        "errors at the caller": "\n".join(errors),
    }
    assert "[REDACTED]" in places["errors at the caller"]  # the 401 echoed a masked key
    assert any(e.get("type") == "task-succeeded" for e in events)
    assert any(e.get("type") == "task-received" for e in events)
    for secret in SECRETS.values():
        for place, text in places.items():
            assert secret not in text, f"{secret} found in {place}"
            assert secret[:8] not in text, f"part of a key found in {place}"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_execute_with_tools_feeds_results_back(
    gateway: ModelGateway, all_providers_worker: WorkerProcess, provider: str
) -> None:
    from gateway_client import Message, MessageRole, ToolDefinition, ToolResult

    weather = ToolDefinition(
        name="get_weather",
        parameters={"type": "object", "properties": {"location": {"type": "string"}}},
    )
    request = make_request("Weather in SF?", model_id=MODELS[provider], tools=[weather])
    first = await gateway.execute(request)
    assert first.finish_reason == "tool_calls"
    [call] = first.tool_calls
    assert (call.name, json.loads(call.arguments)) == (
        "get_weather",
        {"location": "San Francisco, CA"},
    )
    asked = Message(role=MessageRole.ASSISTANT, content=first.content, tool_calls=[call])
    answer = await gateway.execute_with_tools(
        request, [ToolResult(tool_call_id=call.id, content="18C, sunny")], asked
    )
    assert answer.content == REPLY and answer.tool_calls == []


async def answer_then_refuse(gateway: ModelGateway, upstream: MockUpstreamProcess) -> list[str]:
    """One answered call per hosted provider, then one refused with 401: the refusals' text."""
    errors: list[str] = []
    for provider in ("openai", "anthropic"):
        await gateway.execute(make_request("hi", model_id=MODELS[provider]))
        path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
        upstream.faults({"status": 401, "path": path})
        with pytest.raises(GatewayError) as caught:
            await gateway.execute(make_request("hi again", model_id=MODELS[provider]))
        errors.append(str(caught.value) + json.dumps(caught.value.to_payload()))
    return errors
