"""The producer library of the L04 model gateway: the wire contract and the client."""

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
from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle, JobStatus
from gateway_client.messages import (
    ImagePart,
    Message,
    MessageRole,
    TextPart,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from gateway_client.request import InferenceRequest, Priority, ResponseFormat
from gateway_client.response import InferenceResponse, StreamChunk, TokenUsage
from gateway_client.sync import SyncJobHandle, SyncModelGateway
from gateway_client.wire import SCHEMA_VERSION

__version__ = "0.1.0"

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
    "Message",
    "MessageRole",
    "ModelGateway",
    "Priority",
    "ProviderError",
    "RateLimitError",
    "ResponseError",
    "ResponseFormat",
    "RoutingError",
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
