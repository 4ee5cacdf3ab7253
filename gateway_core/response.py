"""What comes back: ``InferenceResponse`` for a whole answer, ``StreamChunk`` for a piece of one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field

from gateway_core.messages import ToolCall


class TokenUsage(BaseModel):
    # "ignore": total_tokens is serialized (computed) and must parse back.
    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    # Prompt tokens the provider served from its own prompt cache, and hidden reasoning tokens
    # inside completion_tokens, where the provider reports them.
    cached_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class InferenceResponse(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str
    job_id: str
    model_id: str
    provider: str
    content: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = "stop"
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: float = 0.0
    cached: bool = False
    cost: float = 0.0  # USD, from the catalog's prices
    attempt: int = 1
    # From the job's creation to the claim that answered it: the time it waited in the queue
    # (a deferral over a rate limit included). None from a worker older than this field.
    queue_ms: float | None = None


class StreamChunk(BaseModel):
    """One piece of a streamed answer. ``sequence`` counts from 0 with no gaps.

    The final chunk has ``is_final=True``, an empty or last ``content_delta``, the
    ``token_usage`` and ``finish_reason``, and the whole :class:`InferenceResponse`.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    sequence: int = Field(ge=0)
    content_delta: str = ""
    is_final: bool = False
    token_usage: TokenUsage | None = None
    finish_reason: str | None = None
    response: InferenceResponse | None = None
