"""Provider adapters, built lazily per worker process from settings."""

from __future__ import annotations

from config.settings import GatewaySettings
from gateway_core.errors import ProviderNotConfigured
from workers.providers.base import (
    CallContext,
    EmbeddingResult,
    ProviderAdapter,
    ProviderDelta,
    ProviderResult,
)


def build_adapter(provider: str, settings: GatewaySettings) -> ProviderAdapter:
    if provider == "mock":
        from workers.providers.mock import MockAdapter

        return MockAdapter(settings)
    if provider == "openai":
        from workers.providers.openai import OpenAIAdapter

        return OpenAIAdapter(settings)
    if provider == "anthropic":
        from workers.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(settings)
    if provider == "ollama":
        from workers.providers.ollama import OllamaAdapter

        return OllamaAdapter(settings)
    if provider == "claude_code":
        from workers.providers.claude_code import ClaudeCodeAdapter

        return ClaudeCodeAdapter(settings)
    raise ProviderNotConfigured(
        f"provider {provider!r} is not configured on this worker",
        details={"provider": provider},
    )


class ProviderSet:
    """The adapters of one worker process, each created on first use and closed together."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._adapters: dict[str, ProviderAdapter] = {}

    def get(self, provider: str) -> ProviderAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            adapter = self._adapters[provider] = build_adapter(provider, self._settings)
        return adapter

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()


__all__ = [
    "CallContext",
    "EmbeddingResult",
    "ProviderAdapter",
    "ProviderDelta",
    "ProviderResult",
    "ProviderSet",
    "build_adapter",
]
