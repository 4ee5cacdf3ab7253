"""The Claude Code adapter against a stand-in executable printing the CLI's event lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from config.catalog import load_catalog
from config.settings import load_settings
from gateway_client import (
    ConfigurationError,
    GatewayError,
    InferenceRequest,
    Message,
    MessageRole,
    ProviderError,
)
from workers.providers import CallContext, build_adapter

FAKE = str(Path(__file__).parent.parent / "bin" / "fake-claude")
CTX = CallContext(job_id="j1")
REPLY = "Hello! How can I assist you today?"


def adapter(path: str = FAKE, stall_s: float = 60.0):  # type: ignore[no-untyped-def]
    return build_adapter(
        "claude_code", load_settings(L04_CLAUDE_CODE_PATH=path, L04_PROVIDER_TIMEOUT=stall_s)
    )


def request(text: str = "Say hello") -> InferenceRequest:
    return InferenceRequest.create(
        agent_did="did:key:t",
        messages=[
            Message(role=MessageRole.SYSTEM, content="Be nice."),
            Message(role=MessageRole.USER, content=text),
        ],
    )


SPEC = load_catalog().resolve("claude-code")


@pytest.fixture
def mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_CLAUDE_RECORD", str(record))

    def set_mode(value: str) -> Path:
        monkeypatch.setenv("FAKE_CLAUDE_MODE", value)
        return record

    return set_mode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("cli_mode", ["ok", "partial"])
async def test_completion_and_usage(mode, cli_mode: str) -> None:  # type: ignore[no-untyped-def]
    record = mode(cli_mode)
    result = await adapter().complete(request(), SPEC, CTX)
    assert result.content == REPLY
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (33, 12)
    assert result.usage.cached_tokens == 20
    sent = json.loads(record.read_text())
    assert sent["argv"][:5] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
    ]
    # The conversation went in on stdin, not on the command line.
    assert "Say hello" in sent["stdin"] and "Be nice." in sent["stdin"]
    assert not any("Say hello" in arg for arg in sent["argv"])
    assert not Path(sent["cwd"]).exists()  # its scratch directory is gone


async def test_partial_messages_stream_in_pieces(mode) -> None:  # type: ignore[no-untyped-def]
    mode("partial")
    deltas = [d async for d in adapter().stream(request(), SPEC, CTX)]
    assert [d.text for d in deltas if d.text] == ["Hello", "! How can I", " assist you today?"]
    assert deltas[-1].usage is not None


async def test_missing_executable_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await adapter("/nonexistent/claude").complete(request(), SPEC, CTX)
    assert caught.value.code == "E4002" and "L04_CLAUDE_CODE_PATH" in caught.value.message


async def test_crash_reports_exit_status_and_stderr(mode) -> None:  # type: ignore[no-untyped-def]
    mode("crash")
    with pytest.raises(ProviderError) as caught:
        await adapter().complete(request(), SPEC, CTX)
    assert caught.value.code == "E4200"
    assert "status 3" in caught.value.message and "went wrong" in caught.value.message


async def test_error_result_is_reported(mode) -> None:  # type: ignore[no-untyped-def]
    mode("error_result")
    with pytest.raises(ProviderError, match="error_max_turns"):
        await adapter().complete(request(), SPEC, CTX)


async def test_hang_is_killed_on_stall_leaving_no_process(mode) -> None:  # type: ignore[no-untyped-def]
    record = mode("hang")
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await adapter(stall_s=1.0).complete(request(), SPEC, CTX)
    assert caught.value.code == "E4604"
    assert time.monotonic() - started < 5
    assert not pid_alive(json.loads(record.read_text())["pid"])


async def test_cancel_kills_the_process(mode) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    record = mode("hang")
    task = asyncio.create_task(adapter().complete(request(), SPEC, CTX))
    for _ in range(100):
        if record.exists():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = json.loads(record.read_text())["pid"]
    for _ in range(40):
        if not pid_alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(pid)
