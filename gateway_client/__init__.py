"""The producer library of the L04 model gateway: ``ModelGateway`` and its handles, the router,
batches, and (re-exported from :mod:`gateway_core`) the contract it shares with the workers.
"""

from config.registry import ModelRegistry
from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle, JobStatus
from gateway_client.router import LLMRouter
from gateway_client.sync import SyncJobHandle, SyncModelGateway
from gateway_core import __version__
from gateway_core.errors import (
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
from gateway_core.messages import (
    ImagePart,
    Message,
    MessageRole,
    TextPart,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from gateway_core.request import (
    InferenceRequest,
    Priority,
    ResponseFormat,
    RoutingOptions,
    RoutingStrategy,
)
from gateway_core.response import InferenceResponse, StreamChunk, TokenUsage
from gateway_core.wire import SCHEMA_VERSION

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
    "__version__",
    "error_from_payload",
]
