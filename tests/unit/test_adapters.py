"""Each HTTP adapter against the mock upstream, over real HTTP, in the providers' wire formats."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from config.catalog import load_catalog
from config.settings import GatewaySettings, load_settings
from gateway_client import (
    EmbeddingRequest,
    GatewayError,
    ImagePart,
    InferenceRequest,
    Message,
    MessageRole,
    ProviderAuthFailed,
    ProviderError,
    ProviderFailed,
    ProviderRejected,
    RateLimited,
    ResponseError,
    TextPart,
    ToolCall,
    ToolDefinition,
)
from l04.mock_upstream import REPLY, REPLY_PIECES
from tests.processes import MockUpstreamProcess
from workers.providers import CallContext, ProviderAdapter, build_adapter

MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-sonnet-20241022",
    "ollama": "llama3.1:8b",
}
USAGE = {"openai": (19, 10), "anthropic": (12, 10), "ollama": (26, 10)}
CHAT_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
KEYS = {"openai": "sk-test-openai-key-123456", "anthropic": "sk-ant-test-key-123456"}
WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather at a place",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}},
)
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def settings_for(upstream: MockUpstreamProcess, **extra: object) -> GatewaySettings:
    return load_settings(
        OPENAI_BASE_URL=f"{upstream.url}/v1",
        OPENAI_API_KEY=KEYS["openai"],
        ANTHROPIC_BASE_URL=upstream.url,
        ANTHROPIC_API_KEY=KEYS["anthropic"],
        OLLAMA_URL=upstream.url,
        **extra,
    )


@pytest.fixture
async def adapter_for(
    mock_upstream: MockUpstreamProcess,
) -> AsyncIterator[dict[str, ProviderAdapter]]:
    settings = settings_for(mock_upstream, L04_PROVIDER_TIMEOUT=2)
    adapters = {name: build_adapter(name, settings) for name in MODELS}
    yield adapters
    for adapter in adapters.values():
        await adapter.aclose()


def request(*messages: Message, **fields: object) -> InferenceRequest:
    return InferenceRequest.create(agent_did="did:key:t", messages=list(messages), **fields)  # type: ignore[arg-type]


USER = Message(role=MessageRole.USER, content="Hello there")
CTX = CallContext(job_id="j1")
providers = pytest.mark.parametrize("provider", sorted(MODELS))


def spec(provider: str):  # type: ignore[no-untyped-def]
    return load_catalog().resolve(MODELS[provider])


async def collect(adapter: ProviderAdapter, req: InferenceRequest, provider: str):  # type: ignore[no-untyped-def]
    return [d async for d in adapter.stream(req, spec(provider), CTX)]


@providers
async def test_plain_completion(adapter_for: dict[str, ProviderAdapter], provider: str) -> None:
    result = await adapter_for[provider].complete(request(USER), spec(provider), CTX)
    assert result.content == REPLY
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == USAGE[provider]
    assert result.finish_reason == "stop"


@providers
async def test_streamed_completion(adapter_for: dict[str, ProviderAdapter], provider: str) -> None:
    deltas = await collect(adapter_for[provider], request(USER), provider)
    assert len([d for d in deltas if d.text]) > 3
    assert "".join(d.text for d in deltas) == REPLY
    final = deltas[-1]
    assert final.finish_reason == "stop" and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == USAGE[provider]


@providers
@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_calls_come_back_whole(
    adapter_for: dict[str, ProviderAdapter], provider: str, streamed: bool
) -> None:
    req = request(USER, tools=[WEATHER], tool_choice="auto")
    if streamed:
        deltas = await collect(adapter_for[provider], req, provider)
        calls, finish = deltas[-1].tool_calls, deltas[-1].finish_reason
    else:
        result = await adapter_for[provider].complete(req, spec(provider), CTX)
        calls, finish = result.tool_calls, result.finish_reason
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"location": "San Francisco, CA"}
    assert calls[0].id
    assert finish == "tool_calls"
    if provider == "openai" and not streamed:
        assert result.usage.cached_tokens == 64  # prompt_tokens_details.cached_tokens


@providers
async def test_images_are_sent_in_the_providers_format(
    adapter_for: dict[str, ProviderAdapter], provider: str, mock_upstream: MockUpstreamProcess
) -> None:
    message = Message(
        role=MessageRole.USER,
        content=[TextPart(text="What is this?"), ImagePart(data=PNG, media_type="image/png")],
    )
    await adapter_for[provider].complete(request(message), spec(provider), CTX)
    sent = httpx.get(
        f"{mock_upstream.url}/_mock/last", params={"path": CHAT_PATH[provider]}
    ).json()["body"]
    turn = sent["messages"][-1]
    if provider == "openai":
        assert turn["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
    elif provider == "anthropic":
        assert turn["content"][1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
        }
    else:
        assert turn["images"] == [PNG] and turn["content"] == "What is this?"


@providers
async def test_json_mode(
    adapter_for: dict[str, ProviderAdapter], provider: str, mock_upstream: MockUpstreamProcess
) -> None:
    schema = {"type": "object", "properties": {"location": {"type": "string"}}}
    req = request(USER, response_format={"type": "json_schema", "json_schema": schema})
    result = await adapter_for[provider].complete(req, spec(provider), CTX)
    sent = httpx.get(
        f"{mock_upstream.url}/_mock/last", params={"path": CHAT_PATH[provider]}
    ).json()["body"]
    if provider == "openai":
        assert sent["response_format"]["json_schema"]["schema"] == schema
        assert json.loads(result.content) == {"location": "San Francisco, CA"}
    elif provider == "anthropic":
        assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
        assert json.loads(result.content) == {"location": "San Francisco, CA"}
        assert result.tool_calls == [] and result.finish_reason == "stop"
    else:
        assert sent["format"] == schema


async def test_anthropic_request_shape(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments='{"location": "Paris"}')
    req = request(
        Message(role=MessageRole.SYSTEM, content="Be brief."),
        USER,
        Message(role=MessageRole.ASSISTANT, content="", tool_calls=[call]),
        Message(role=MessageRole.TOOL, content="18C and sunny", tool_call_id="toolu_1"),
        tools=[WEATHER],
        stop=["END"],
        temperature=0.0,
    )
    await adapter_for["anthropic"].complete(req, spec("anthropic"), CTX)
    last = httpx.get(f"{mock_upstream.url}/_mock/last", params={"path": "/v1/messages"}).json()
    sent, headers = last["body"], {k.lower(): v for k, v in last["headers"].items()}
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-api-key"] == KEYS["anthropic"]
    assert sent["system"] == "Be brief."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"}
    ]
    assert sent["stop_sequences"] == ["END"] and sent["temperature"] == 0.0
    assert sent["tools"][0]["input_schema"] == WEATHER.parameters


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_embeddings(adapter_for: dict[str, ProviderAdapter], provider: str) -> None:
    vectors = await adapter_for[provider].embed(
        ["how do I reset my password", "how can I reset my password", "bake a chocolate cake"]
    )
    assert len({len(v) for v in vectors}) == 1
    assert len(vectors[0]) == (768 if provider == "ollama" else 1536)
    a, b, c = (np.array(v) for v in vectors)
    assert float(a @ b) > float(a @ c)


EMBEDDING_MODELS = {"openai": "text-embedding-3-small", "ollama": "nomic-embed-text"}
EMBED_PATH = {"openai": "/v1/embeddings", "ollama": "/api/embed"}


@pytest.mark.parametrize("provider", sorted(EMBEDDING_MODELS))
@pytest.mark.parametrize("dimensions", [None, 64])
async def test_embeddings_jobs_send_dimensions_and_read_usage(
    adapter_for: dict[str, ProviderAdapter],
    mock_upstream: MockUpstreamProcess,
    provider: str,
    dimensions: int | None,
) -> None:
    model = EMBEDDING_MODELS[provider]
    texts = ["hello world", "the quick brown fox"]
    req = EmbeddingRequest.create(
        agent_did="did:key:t", input=texts, model_id=model, dimensions=dimensions
    )
    result = await adapter_for[provider].create_embeddings(req, load_catalog().resolve(model), CTX)
    own = {"openai": 1536, "ollama": 768}[provider]  # the mock upstream's own lengths
    assert [len(v) for v in result.vectors] == [dimensions or own] * 2
    sent = httpx.get(
        f"{mock_upstream.url}/_mock/last", params={"path": EMBED_PATH[provider]}
    ).json()["body"]
    expected: dict[str, object] = {"model": model, "input": texts}
    if dimensions is not None:
        expected["dimensions"] = dimensions
    assert sent == expected
    # OpenAI's usage.prompt_tokens (the upstream counts words), Ollama's prompt_eval_count.
    assert result.usage.prompt_tokens == {"openai": 6, "ollama": 8}[provider]
    assert result.usage.completion_tokens == 0


@pytest.mark.parametrize(
    ("fault", "error_type", "code"),
    [
        ({"status": 400}, ProviderRejected, "E4201"),
        ({"status": 401}, ProviderAuthFailed, "E4203"),
        ({"status": 429, "retry_after": 2}, RateLimited, "E4401"),
        ({"status": 503}, ProviderFailed, "E4200"),
    ],
)
async def test_embeddings_errors_map_as_for_chat(
    adapter_for: dict[str, ProviderAdapter],
    mock_upstream: MockUpstreamProcess,
    fault: dict[str, object],
    error_type: type,
    code: str,
) -> None:
    mock_upstream.faults({**fault, "path": "/v1/embeddings"})
    req = EmbeddingRequest.create(
        agent_did="did:key:t", input="hi", model_id="text-embedding-3-small"
    )
    with pytest.raises(GatewayError) as caught:
        await adapter_for["openai"].create_embeddings(
            req, load_catalog().resolve("text-embedding-3-small"), CTX
        )
    assert type(caught.value) is error_type and caught.value.code == code
    assert KEYS["openai"] not in str(caught.value)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "error_type", "code", "retryable"),
    [
        ({"status": 401}, ProviderAuthFailed, "E4203", False),
        ({"status": 403}, ProviderAuthFailed, "E4203", False),
        ({"status": 400}, ProviderRejected, "E4201", False),
        ({"status": 429, "retry_after": 2}, RateLimited, "E4401", True),
        ({"status": 500}, ProviderFailed, "E4200", True),
    ],
)
async def test_http_errors_map_to_codes(
    adapter_for: dict[str, ProviderAdapter],
    mock_upstream: MockUpstreamProcess,
    provider: str,
    fault: dict[str, object],
    error_type: type,
    code: str,
    retryable: bool,
) -> None:
    mock_upstream.faults(fault)
    with pytest.raises(GatewayError) as caught:
        await adapter_for[provider].complete(request(USER), spec(provider), CTX)
    assert type(caught.value) is error_type
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    if "retry_after" in fault:
        assert caught.value.retry_after == 2.0
    assert KEYS[provider] not in str(caught.value)


async def test_anthropic_overloaded_529_is_retryable(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"status": 529})
    with pytest.raises(ProviderError) as caught:
        await adapter_for["anthropic"].complete(request(USER), spec("anthropic"), CTX)
    assert (caught.value.code, caught.value.retryable) == ("E4200", True)


async def test_anthropic_error_event_mid_stream(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"sse_error": True})
    with pytest.raises(GatewayError) as caught:
        await collect(adapter_for["anthropic"], request(USER), "anthropic")
    assert caught.value.code == "E4604" and caught.value.retryable


async def test_ollama_missing_model_is_a_client_error(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"status": 404})
    with pytest.raises(ProviderError) as caught:
        await adapter_for["ollama"].complete(request(USER), spec("ollama"), CTX)
    assert caught.value.code == "E4201" and "not found" in caught.value.message


async def test_malformed_body_is_E4600(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"malformed": True})
    with pytest.raises(ResponseError) as caught:
        await adapter_for["openai"].complete(request(USER), spec("openai"), CTX)
    assert caught.value.code == "E4600"


@providers
@pytest.mark.parametrize("fault", [{"cut_after_chunks": 3}, {"stall_after_chunks": 2}])
async def test_cut_or_stalled_stream_is_E4604(
    adapter_for: dict[str, ProviderAdapter],
    mock_upstream: MockUpstreamProcess,
    provider: str,
    fault: dict[str, object],
) -> None:
    mock_upstream.faults(fault)
    with pytest.raises(GatewayError) as caught:
        await collect(adapter_for[provider], request(USER), provider)
    assert caught.value.code == "E4604" and caught.value.retryable


async def test_paused_stream_arrives_whole_and_spread_out(
    adapter_for: dict[str, ProviderAdapter], mock_upstream: MockUpstreamProcess
) -> None:
    """The upstream's ``chunk_delay_ms`` (benchmarks/http_door.py holds streams open with it)."""
    mock_upstream.faults({"chunk_delay_ms": 100})
    arrived = []
    async for delta in adapter_for["openai"].stream(request(USER), spec("openai"), CTX):
        if delta.text:
            arrived.append((time.monotonic(), delta.text))
    assert "".join(text for _, text in arrived) == REPLY
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrived)]
    # Spread out in all: one piece read late makes the next gap short, so no single gap is
    # bounded; a stream that was buffered whole would arrive within a few ms.
    assert len(gaps) == len(REPLY_PIECES) - 1
    assert arrived[-1][0] - arrived[0][0] >= 0.09 * len(gaps)


async def test_slow_provider_times_out_with_E4202(mock_upstream: MockUpstreamProcess) -> None:
    adapter = build_adapter("openai", settings_for(mock_upstream, L04_PROVIDER_TIMEOUT=1))
    mock_upstream.faults({"latency_ms": 3000})
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.complete(request(USER), spec("openai"), CTX)
        assert (caught.value.code, caught.value.retryable) == ("E4202", True)
    finally:
        await adapter.aclose()


async def test_unreachable_provider_is_retryable_E4200() -> None:
    settings = load_settings(OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY="sk-x")
    adapter = build_adapter("openai", settings)
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.complete(request(USER), spec("openai"), CTX)
        assert (caught.value.code, caught.value.retryable) == ("E4200", True)
    finally:
        await adapter.aclose()


@providers
async def test_health(adapter_for: dict[str, ProviderAdapter], provider: str) -> None:
    assert (await adapter_for[provider].health())["healthy"] is True
