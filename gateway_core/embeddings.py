"""Embeddings jobs: ``EmbeddingRequest`` (validated before anything is queued) and
``EmbeddingResponse`` (the vectors, in the order of the inputs).

An embeddings job is a job like a chat call: it waits on its model's provider queue, under the
same limits, breaker and deadline, and ends in one result or one E4xxx error. What differs is the
answer: whole vectors, never streamed.

On the way through Redis (the job's result event) each vector travels as base64 of its
little-endian float32 values, the form OpenAI's ``encoding_format: "base64"`` uses: about a
quarter of the size of the same vector as JSON numbers, which matters for a job of 2,048 inputs
(a result event must stay well under Redis's pub/sub output buffer limit, 32 MB by default).
Provider embeddings are float32 to begin with, so nothing is lost that the provider had.
"""

from __future__ import annotations

import base64
import struct
import sys
import uuid
from array import array
from typing import Any

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from gateway_core import tokens
from gateway_core.errors import ValidationError
from gateway_core.request import (
    DEFAULT_TIMEOUT_S,
    MAX_AGENT_DID_CHARS,
    MAX_TIMEOUT_S,
    Priority,
    check_agent_did,
    check_deadline,
    check_metadata,
    validation_error_from,
)
from gateway_core.response import TokenUsage

#: OpenAI's bound on the inputs of one request (and ours).
MAX_INPUTS = 2048
#: Far above any model's vectors (text-embedding-3-large has 3,072): a bound on the input only.
MAX_DIMENSIONS = 16_384
#: The serialization context under which vectors are packed (see the module's docstring).
WIRE: dict[str, Any] = {"wire": True}

# Errors only in these fields are E4502 (parameters); anything else is E4500.
_PARAMETER_FIELDS = frozenset({"dimensions", "timeout", "deadline"})


class EmbeddingRequest(BaseModel):
    """One embeddings job. Build it with :meth:`create`, which turns bad input into E45xx."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    agent_did: str = Field(min_length=1, max_length=MAX_AGENT_DID_CHARS)
    # An embedding model of the catalog (kind = "embedding"), by id or alias.
    model_id: str = Field(min_length=1, max_length=256)
    # One string or a list of 1 to MAX_INPUTS non-empty strings; one vector each, in order.
    input: list[str] = Field(min_length=1, max_length=MAX_INPUTS)
    # Shorter vectors, where the model can make them (text-embedding-3, Matryoshka models); at
    # most the model's own ``embedding_dimensions``. None: the model's own length.
    dimensions: int | None = Field(default=None, ge=1, le=MAX_DIMENSIONS)
    priority: Priority = Priority.NORMAL
    # Over a rate limit the job waits in the queue until its deadline; True fails it at once.
    fail_fast: bool = False
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0.0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    deadline: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("input")
    @classmethod
    def _no_empty_input(cls, value: list[str]) -> list[str]:
        empty = [index for index, text in enumerate(value) if not text]
        if empty:
            raise ValueError(f"input {empty[0]} is an empty string (every input needs text)")
        return value

    @field_validator("agent_did")
    @classmethod
    def _did(cls, value: str, info: ValidationInfo) -> str:
        return check_agent_did(value, info)

    @field_validator("deadline")
    @classmethod
    def _deadline_within_reach(cls, value: float | None, info: ValidationInfo) -> float | None:
        return check_deadline(value, info)

    @field_validator("metadata")
    @classmethod
    def _metadata_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(value)

    @property
    def max_tokens(self) -> int:
        """An embedding writes no tokens: admission reserves the input's tokens only."""
        return 0

    def input_tokens(self, encoding_name: str = "cl100k_base") -> int:
        """The input's tokens, as the rate limits and quotas count them before the call."""
        return sum(tokens.count_text(text, encoding_name) for text in self.input)

    @classmethod
    def create(
        cls, agent_did: str, input: str | list[str], model_id: str, **fields: Any
    ) -> EmbeddingRequest:
        """Raises :class:`ValidationError` (E45xx) on bad input."""
        return parse_embedding_request(
            {"agent_did": agent_did, "input": input, "model_id": model_id, **fields}
        )


def parse_embedding_request(data: Any, *, stored: bool = False) -> EmbeddingRequest:
    """Validate ``data`` (a dict, JSON text or a request) into a request, or raise E45xx.

    ``stored``: read back from a job's record (see :func:`gateway_core.request.parse_request`).
    """
    context = {"stored": stored}
    try:
        if isinstance(data, EmbeddingRequest):
            return data
        if isinstance(data, str | bytes):
            return EmbeddingRequest.model_validate_json(data, context=context)
        return EmbeddingRequest.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: pydantic.ValidationError) -> ValidationError:
    return validation_error_from(exc, parameters=_PARAMETER_FIELDS, messages=frozenset())


class EmbeddingResponse(BaseModel):
    """The vectors of an embeddings job, ``vectors[i]`` for ``input[i]``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str
    job_id: str
    model_id: str
    provider: str
    vectors: list[list[float]]
    token_usage: TokenUsage = Field(default_factory=TokenUsage)  # prompt_tokens: the input's
    latency_ms: float = 0.0
    cached: bool = False  # embeddings jobs are never answered from a cache
    cost: float = 0.0  # USD, from the catalog's prices
    attempt: int = 1
    queue_ms: float | None = None  # as InferenceResponse.queue_ms

    @field_validator("vectors", mode="before")
    @classmethod
    def _unpack(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            try:
                return [vector_from_base64(v) for v in value]
            except ValueError as exc:
                raise ValueError(f"a packed vector is not base64 float32 ({exc})") from None
        return value

    @field_serializer("vectors")
    def _pack(self, vectors: list[list[float]], info: SerializationInfo) -> Any:
        if info.context and info.context.get("wire"):
            return [vector_to_base64(v) for v in vectors]
        return vectors

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


def vector_to_base64(vector: list[float]) -> str:
    """A vector as OpenAI's ``encoding_format: "base64"`` sends it: little-endian float32."""
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def vector_from_base64(text: str) -> list[float]:
    """The inverse of :func:`vector_to_base64`; ValueError if ``text`` is not such a vector."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError(f"{len(raw)} bytes is no whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
