"""OpenAI's Embeddings API: the body to an :class:`EmbeddingRequest` (a job on the model's
provider queue, under the same limits as every call), the answer to OpenAI's list object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.embeddings import (
    EmbeddingRequest,
    EmbeddingResponse,
    parse_embedding_request,
    vector_to_base64,
)
from gateway_core.errors import InvalidParameters
from gateway_http.door import Caller, JobOptions


class EmbeddingsBody(BaseModel):
    """The request body of ``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1, max_length=256)
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)


def to_request(body: EmbeddingsBody, caller: Caller, options: JobOptions) -> EmbeddingRequest:
    texts = body.input
    if isinstance(texts, list) and any(not isinstance(item, str) for item in texts):
        raise InvalidParameters(
            "input as token ids is not supported by this gateway: send text",
            details={"param": "input"},
        )
    fields: dict[str, Any] = {
        "request_id": options.request_id,
        "agent_did": caller.agent_did,
        "input": texts,
        "model_id": body.model,
        "dimensions": body.dimensions,
        "priority": options.priority,
        "timeout": options.timeout,
        "metadata": {"openai.user": body.user} if body.user is not None else {},
    }
    return parse_embedding_request(fields)


def embeddings_object(response: EmbeddingResponse, encoding_format: str) -> dict[str, Any]:
    def encoded(vector: list[float]) -> Any:
        return vector_to_base64(vector) if encoding_format == "base64" else vector

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encoded(vector)}
            for index, vector in enumerate(response.vectors)
        ],
        "model": response.model_id,
        "usage": {
            "prompt_tokens": response.token_usage.prompt_tokens,
            "total_tokens": response.token_usage.prompt_tokens,
        },
    }
