"""The producer library of the L04 model gateway: the wire contract and the client.

The client classes load on first use (PEP 562): ``config`` imports this package's errors, and
the client imports ``config``, so loading the client here eagerly would make importing
``config`` (or ``tasks``, as ``celery -A tasks worker`` does) first a circular import.
"""

from typing import TYPE_CHECKING, Any

from gateway_client.errors import (
    ERROR_CODES,
    CacheError,
    CircuitBreakerError,
    ConfigurationError,
    GatewayError,
    ProviderError,
    RateLimitError,
    ResponseError,
    RoutingError,
    ValidationError,
    error_from_payload,
)
from gateway_client.messages import (
    ImagePart,
    Message,
    MessageRole,
    TextPart,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from gateway_client.request import (
    InferenceRequest,
    Priority,
    ResponseFormat,
    RoutingOptions,
    RoutingStrategy,
)
from gateway_client.response import InferenceResponse, StreamChunk, TokenUsage
from gateway_client.wire import SCHEMA_VERSION

__version__ = "0.1.0"

_LAZY = {
    "ModelGateway": "gateway_client.gateway",
    "JobHandle": "gateway_client.handle",
    "JobStatus": "gateway_client.handle",
    "SyncModelGateway": "gateway_client.sync",
    "SyncJobHandle": "gateway_client.sync",
    "LLMRouter": "gateway_client.router",
    "ModelRegistry": "config.registry",
}

if TYPE_CHECKING:
    from config.registry import ModelRegistry
    from gateway_client.gateway import ModelGateway
    from gateway_client.handle import JobHandle, JobStatus
    from gateway_client.router import LLMRouter
    from gateway_client.sync import SyncJobHandle, SyncModelGateway


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ERROR_CODES",
    "SCHEMA_VERSION",
    "CacheError",
    "CircuitBreakerError",
    "ConfigurationError",
    "GatewayError",
    "ImagePart",
    "InferenceRequest",
    "InferenceResponse",
    "JobHandle",
    "JobStatus",
    "LLMRouter",
    "Message",
    "MessageRole",
    "ModelGateway",
    "ModelRegistry",
    "Priority",
    "ProviderError",
    "RateLimitError",
    "ResponseError",
    "ResponseFormat",
    "RoutingError",
    "RoutingOptions",
    "RoutingStrategy",
    "StreamChunk",
    "SyncJobHandle",
    "SyncModelGateway",
    "TextPart",
    "TokenUsage",
    "ToolCall",
    "ToolDefinition",
    "ToolResult",
    "ValidationError",
    "error_from_payload",
]
