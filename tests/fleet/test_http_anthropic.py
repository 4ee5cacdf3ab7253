"""The Anthropic-compatible API of ``l04 serve`` (``POST /v1/messages``), with the official
``anthropic`` SDK as the client: any model of the catalog answers, not only Claude."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import anthropic
import pytest

from tests.processes import MockUpstreamProcess, ServerProcess

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


DOOR_PROVIDERS = "mock,openai,anthropic"


@pytest.fixture
def door(module_door: ServerProcess, upstream: MockUpstreamProcess) -> ServerProcess:
    """The module's server and worker (conftest's ``module_door``), the upstream reset."""
    upstream.reset()
    return module_door


@pytest.fixture
def sdk(door: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=door.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("model", ["mock", "gpt-4o-mini", "claude-3-5-sonnet-20241022"])
def test_a_message_from_any_model(sdk: anthropic.Anthropic, model: str) -> None:
    message = sdk.messages.create(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello anthropic"}]}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    assert message.id.startswith("msg_")


def test_a_streamed_message(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(
        model="mock", max_tokens=100, messages=[{"role": "user", "content": "stream it"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Mock response to: stream it"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_the_event_sequence(door: ServerProcess) -> None:
    body = json.dumps(
        {
            "model": "mock",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "events"}],
        }
    )
    out = subprocess.run(
        [
            "curl",
            "-sN",
            f"{door.url}/v1/messages",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    names = [e.split("\n", 1)[0].removeprefix("event: ") for e in out.split("\n\n") if e]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert "content_block_delta" in names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tools_tool_use_and_tool_result(sdk: anthropic.Anthropic) -> None:
    first = sdk.messages.create(
        model="claude-3-5-sonnet-20241022",
        max_tokens=200,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather"
    second = sdk.messages.create(
        model="claude-3-5-sonnet-20241022",
        max_tokens=200,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert second.content
    # The same tool call, streamed: its input arrives as input_json_delta.
    with sdk.messages.stream(
        model="gpt-4o-mini",
        max_tokens=200,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather in Rome?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert any(block.type == "tool_use" for block in final.content)


def test_errors_in_anthropics_shape(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "E4001" in missing.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(
            model="mock",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"top_k": 5},
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.create(model="mock", max_tokens=10, messages=[])
