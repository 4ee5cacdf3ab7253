"""The in-process mock provider: the whole fleet runs with no outside service.

Behaviour comes from settings (``L04_MOCK_*``) and may be overridden per request in
``metadata["mock"]``, which only this adapter reads::

    {"latency_ms": 200, "chunks": 5, "chunk_delay_ms": 10,
     "fail": "E4200", "fail_attempts": 1, "content": "fixed answer"}

``fail`` raises that error code; with ``fail_attempts`` only the first N attempts fail.
The answer is deterministic, so a retried stream resumes seamlessly.

Embeddings (model ``mock-embed``): :func:`mock_vector` of each input, of the request's
``dimensions`` or the model's ``embedding_dimensions``, after ``latency_ms`` and subject to
``fail`` like any call; usage is the input's tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core import tokens
from gateway_core.embeddings import EmbeddingRequest
from gateway_core.errors import ERROR_CODES, GatewayError, InvalidParameters, invalid
from gateway_core.messages import MessageRole
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.providers.base import (
    CallContext,
    EmbeddingResult,
    ProviderAdapter,
    ProviderDelta,
    ProviderResult,
)

#: The vectors' length for an embedding model that names none (the catalog's always does).
DEFAULT_MOCK_DIMENSIONS = 16


class MockOptions(BaseModel):
    """``metadata["mock"]``: a value of the wrong type is E4502 naming it, not a crash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    latency_ms: float | None = Field(default=None, ge=0, le=3_600_000, allow_inf_nan=False)
    chunks: int | None = Field(default=None, ge=1, le=100_000)
    chunk_delay_ms: float = Field(default=0, ge=0, le=600_000, allow_inf_nan=False)
    fail: str | None = None
    fail_attempts: int = Field(default=1_000_000, ge=0)
    fail_after_chunks: int | None = Field(default=None, ge=0)
    content: str | None = None


class MockAdapter(ProviderAdapter):
    name = "mock"

    def __init__(self, settings: GatewaySettings) -> None:
        self._latency_ms = settings.mock_latency_ms
        self._chunks = settings.mock_chunks
        self._failure_rate = settings.mock_failure_rate

    def _options(self, request: InferenceRequest | EmbeddingRequest) -> MockOptions:
        options: Any = request.metadata.get("mock")
        if options is None:
            return MockOptions()
        try:
            return MockOptions.model_validate(options)
        except pydantic.ValidationError as exc:
            raise invalid("mock options", exc, InvalidParameters, under="metadata.mock") from None

    def _maybe_fail(self, options: MockOptions, ctx: CallContext) -> None:
        code = options.fail
        if code is None and self._failure_rate and random.random() < self._failure_rate:
            code = "E4200"
        if code is None:
            return
        if ctx.attempt > options.fail_attempts:
            return
        code = str(code) if str(code) in ERROR_CODES else "E4200"
        # The code's own class, from the table (GatewayError(code=...) builds it).
        raise GatewayError(f"mock provider injected failure {code}", code=code)

    def _answer(self, request: InferenceRequest, model: ModelSpec) -> tuple[str, str, TokenUsage]:
        options = self._options(request)
        last_user = next(
            (m.text for m in reversed(request.messages) if m.role is MessageRole.USER), ""
        )
        content = options.content or f"Mock response to: {last_user[:200]}"
        finish = "stop"
        completion = tokens.count_text(content, model.tokenizer)
        if completion > request.max_tokens:
            # The longest run of leading words within max_tokens, by bisection (a prefix never
            # has more tokens than a longer one).
            words = content.split(" ")
            fits, too_many = 0, len(words)
            while too_many - fits > 1:
                middle = (fits + too_many) // 2
                counted = tokens.count_text(" ".join(words[:middle]), model.tokenizer)
                if counted <= request.max_tokens:
                    fits = middle
                else:
                    too_many = middle
            content, finish = " ".join(words[:fits]), "length"
            completion = tokens.count_text(content, model.tokenizer)
        usage = TokenUsage(
            prompt_tokens=tokens.count_messages(request.messages, model.tokenizer),
            completion_tokens=completion,
        )
        return content, finish, usage

    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult:
        options = self._options(request)
        await asyncio.sleep(_latency_s(options, self._latency_ms))
        self._maybe_fail(options, ctx)
        content, finish, usage = self._answer(request, model)
        return ProviderResult(content=content, usage=usage, finish_reason=finish)

    async def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]:
        options = self._options(request)
        await asyncio.sleep(_latency_s(options, self._latency_ms))
        content, finish, usage = self._answer(request, model)
        pieces = split_evenly(content, options.chunks or self._chunks)
        delay = options.chunk_delay_ms / 1000
        fail_after = options.fail_after_chunks
        if fail_after is None:
            self._maybe_fail(options, ctx)
        for index, piece in enumerate(pieces):
            if fail_after is not None and index == fail_after:
                self._maybe_fail(options, ctx)
            if delay:
                await asyncio.sleep(delay)
            yield ProviderDelta(text=piece)
        yield ProviderDelta(finish_reason=finish, usage=usage)

    async def create_embeddings(
        self, request: EmbeddingRequest, model: ModelSpec, ctx: CallContext
    ) -> EmbeddingResult:
        options = self._options(request)
        await asyncio.sleep(_latency_s(options, self._latency_ms))
        self._maybe_fail(options, ctx)
        size = request.dimensions or model.embedding_dimensions or DEFAULT_MOCK_DIMENSIONS
        return EmbeddingResult(
            vectors=[mock_vector(text, size) for text in request.input],
            usage=TokenUsage(prompt_tokens=request.input_tokens(model.tokenizer)),
        )


def mock_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``: each word hashed into four of ``dimensions``
    slots (a bag of words), so texts that share words point the same way."""
    vector = [0.0] * dimensions
    for word in text.lower().split() or [text]:
        digest = hashlib.sha256(word.encode()).digest()
        for i in range(0, 8, 2):
            slot = int.from_bytes(digest[i : i + 2], "big") % dimensions
            vector[slot] += 1.0 if digest[i + 8] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every word's slots cancelled out: one slot, still from the text
        vector[int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % dimensions] = 1.0
        norm = 1.0
    return [x / norm for x in vector]


def _latency_s(options: MockOptions, default_ms: float) -> float:
    return (default_ms if options.latency_ms is None else options.latency_ms) / 1000


def split_evenly(text: str, parts: int) -> list[str]:
    parts = max(1, min(parts, len(text) or 1))
    size, extra = divmod(len(text), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(text[start:end])
        start = end
    return [p for p in out if p] or [""]
