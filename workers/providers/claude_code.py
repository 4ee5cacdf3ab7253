"""The local Claude Code CLI, run in print mode with streamed JSON output.

    claude -p --output-format stream-json --verbose --include-partial-messages [--model M]

The conversation goes in on stdin (never on the command line, where ``ps`` would show it). Each
line out is one event: ``system`` (init), ``stream_event`` (Anthropic SSE events, with partial
messages), ``assistant`` / ``user`` (whole turns) and a final ``result`` with usage and cost.
Each call runs in its own scratch directory, in its own process group, which is killed on
timeout, on a stall, on cancel and on any error, so no process outlives its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core.errors import ProviderFailed, ProviderNotConfigured, StreamInterrupted
from gateway_core.messages import MessageRole
from gateway_core.redact import redact
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.providers.base import CallContext, ProviderAdapter, ProviderDelta, ProviderResult

log = logging.getLogger(__name__)
LINE_LIMIT = 16 * 1024 * 1024


class ClaudeCodeAdapter(ProviderAdapter):
    name = "claude_code"

    def __init__(self, settings: GatewaySettings) -> None:
        self._executable = settings.claude_code_path
        self._stall_timeout = settings.provider_timeout

    def command(self, model: ModelSpec) -> list[str]:
        command = [
            self._executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ]
        if model.provider_model:
            command += ["--model", model.provider_model]
        return command

    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult:
        text: list[str] = []
        final = ProviderDelta()
        async for delta in self.stream(request, model, ctx):
            text.append(delta.text)
            if delta.usage is not None:
                final = delta
        return ProviderResult(
            content="".join(text),
            usage=final.usage or TokenUsage(),
            finish_reason=final.finish_reason or "stop",
        )

    async def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]:
        partial_seen = False
        # aclosing: leaving the loop early must still kill the process and remove its directory.
        async with contextlib.aclosing(self._events(render_prompt(request), model)) as events:
            async for event in events:
                kind = event.get("type")
                if kind == "stream_event":
                    text = _partial_text(event)
                    if text:
                        partial_seen = True
                        yield ProviderDelta(text=text)
                elif kind == "assistant" and not partial_seen:
                    for block in (event.get("message") or {}).get("content") or []:
                        if block.get("type") == "text" and block.get("text"):
                            yield ProviderDelta(text=block["text"])
                elif kind == "result":
                    yield _final(event)
                    return
        raise StreamInterrupted("claude exited without a result event", retryable=True)

    async def _events(self, prompt: str, model: ModelSpec) -> AsyncGenerator[dict[str, Any], None]:
        workdir = tempfile.mkdtemp(prefix="l04-claude-")
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(model),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                start_new_session=True,
                limit=LINE_LIMIT,
            )
        except FileNotFoundError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ProviderNotConfigured(
                f"the Claude Code executable {self._executable!r} was not found; install it or "
                "set L04_CLAUDE_CODE_PATH",
                details={"provider": self.name},
            ) from None
        try:
            assert process.stdin and process.stdout and process.stderr
            process.stdin.write(prompt.encode())
            await process.stdin.drain()
            process.stdin.close()
            while True:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # arrives as the read completes, and the process would outlive its job.
                try:
                    async with asyncio.timeout(self._stall_timeout):
                        line = await process.stdout.readline()
                except TimeoutError:
                    raise StreamInterrupted(
                        f"claude wrote nothing for {self._stall_timeout:.0f}s",
                        retryable=True,
                    ) from None
                if not line:
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    log.debug("claude wrote a line that is not JSON; skipped")
                    continue
                if isinstance(event, dict):
                    yield event
            code = await process.wait()
            if code != 0:
                stderr = (await process.stderr.read()).decode(errors="replace")
                raise ProviderFailed(
                    f"claude exited with status {code}: {redact(stderr.strip())[-300:]}",
                    details={"provider": self.name, "exit_status": code},
                )
        finally:
            _kill_group(process)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await process.wait()
            shutil.rmtree(workdir, ignore_errors=True)


def _partial_text(event: dict[str, Any]) -> str:
    """The text of a ``stream_event`` wrapping a ``content_block_delta`` / ``text_delta``."""
    inner = event.get("event") or {}
    delta = inner.get("delta") or {}
    if inner.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
        return str(delta.get("text") or "")
    return ""


def _final(event: dict[str, Any]) -> ProviderDelta:
    """The ``result`` event: usage, or the error the CLI reports."""
    if event.get("is_error") or event.get("subtype") != "success":
        raise ProviderFailed(
            f"claude reported {event.get('subtype')}: "
            f"{redact(str(event.get('result') or ''))[:300]}",
        )
    usage = event.get("usage") or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    return ProviderDelta(
        finish_reason="stop",
        usage=TokenUsage(
            prompt_tokens=int(usage.get("input_tokens") or 0) + cached + created,
            completion_tokens=int(usage.get("output_tokens") or 0),
            cached_tokens=cached,
        ),
    )


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def render_prompt(request: InferenceRequest) -> str:
    """The conversation as one prompt: the CLI takes a single prompt in print mode."""
    if len(request.messages) == 1:
        return request.messages[0].text
    names = {
        MessageRole.SYSTEM: "System",
        MessageRole.USER: "User",
        MessageRole.ASSISTANT: "Assistant",
        MessageRole.TOOL: "Tool result",
    }
    return "\n\n".join(f"{names[m.role]}: {m.text}" for m in request.messages)
