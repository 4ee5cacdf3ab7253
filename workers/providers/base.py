"""The contract every provider adapter keeps.

An adapter is built once per worker process from settings (never from the job), holds one HTTP
connection pool, and translates between the gateway's request/response models and its provider's
wire format. Errors are translated to the gateway's E42xx/E46xx codes at one boundary per adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from config.catalog import ModelSpec
from gateway_core import tokens
from gateway_core.embeddings import EmbeddingRequest
from gateway_core.errors import CapabilityNotSupported, ProviderNotConfigured
from gateway_core.messages import ToolCall
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage


@dataclass(slots=True)
class CallContext:
    """What an adapter may know about the job beyond the request: never credentials."""

    job_id: str
    attempt: int = 1


@dataclass(slots=True)
class ProviderResult:
    content: str
    usage: TokenUsage
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class EmbeddingResult:
    """An embeddings call's answer: one vector per input, in order, and the input's usage."""

    vectors: list[list[float]]
    usage: TokenUsage


@dataclass(slots=True)
class ProviderDelta:
    """One streamed piece: text, or (on the last) the finish reason, usage and whole tool calls."""

    text: str = ""
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


class ProviderAdapter(ABC):
    name: ClassVar[str]

    @abstractmethod
    async def complete(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> ProviderResult: ...

    @abstractmethod
    def stream(
        self, request: InferenceRequest, model: ModelSpec, ctx: CallContext
    ) -> AsyncIterator[ProviderDelta]: ...

    async def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        """Vectors for the semantic cache (``L04_EMBEDDING_PROVIDER``): vectors only."""
        raise ProviderNotConfigured(f"provider {self.name} has no embeddings")

    async def create_embeddings(
        self, request: EmbeddingRequest, model: ModelSpec, ctx: CallContext
    ) -> EmbeddingResult:
        """An embeddings job's call: ``model``'s vectors for ``request.input`` (of
        ``request.dimensions``, when given) and the provider's count of the input's tokens."""
        raise CapabilityNotSupported(
            f"provider {self.name} makes no embeddings", details={"provider": self.name}
        )

    def count_tokens(self, request: InferenceRequest, model: ModelSpec) -> int:
        return tokens.count_messages(request.messages, model.tokenizer)

    async def health(self) -> dict[str, Any]:
        return {"provider": self.name, "healthy": True}

    async def aclose(self) -> None:
        return None
