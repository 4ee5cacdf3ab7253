"""``InferenceRequest``: what a producer asks for, validated before anything is enqueued."""

from __future__ import annotations

import json
import re
import time
import uuid
from enum import StrEnum
from typing import Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway_core.errors import (
    InvalidMessages,
    InvalidParameters,
    InvalidRequest,
    ValidationError,
)
from gateway_core.messages import Message, MessageRole, ToolDefinition

DEFAULT_TIMEOUT_S = 120.0
#: The longest a job may live, whether given as ``timeout`` or as ``deadline``.
MAX_TIMEOUT_S = 24 * 3600.0
#: ``metadata`` travels with the job and into usage records; it is for labels, not payloads.
MAX_METADATA_BYTES = 65_536

#: A W3C DID (``did:<method>:<method-specific-id>``), checked for syntax only, at most 256
#: characters: it is safe in Redis keys, metric labels and log lines (no spaces, braces, ``*``).
AGENT_DID_PATTERN = re.compile(
    r"did:[a-z0-9]+:(?:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})*:)*(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})+"
)
MAX_AGENT_DID_CHARS = 256


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class RoutingStrategy(StrEnum):
    CAPABILITY_FIRST = "capability_first"
    COST_OPTIMIZED = "cost_optimized"
    LATENCY_OPTIMIZED = "latency_optimized"
    QUALITY_OPTIMIZED = "quality_optimized"
    PROVIDER_PINNED = "provider_pinned"


class RoutingOptions(BaseModel):
    """How the router picks a model when ``model_id`` is not given, and what may take over."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    strategy: RoutingStrategy = RoutingStrategy.CAPABILITY_FIRST
    fallback_models: list[str] = Field(default_factory=list, max_length=8)
    provider: str | None = None  # for provider_pinned
    region: str | None = None  # data residency: only models in this region
    task_type: str | None = None  # which quality score counts (default "general")


class ResponseFormat(BaseModel):
    """``json_object``: any JSON object; ``json_schema``: one matching ``json_schema``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None
    name: str = "response"

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response_format json_schema needs the schema")
        return self


def _stored(info: ValidationInfo) -> bool:
    """Read back from a job's record: validated when it was submitted (see parse_request)."""
    return bool(info.context and info.context.get("stored"))


def check_agent_did(value: str, info: ValidationInfo) -> str:
    """``agent_did`` is a DID, unless the request was queued before this rule (stored)."""
    if not _stored(info) and not AGENT_DID_PATTERN.fullmatch(value):
        raise ValueError(
            "agent_did must be a DID: did:<method>:<id> (method a-z 0-9; id of A-Z a-z 0-9 "
            ". - _ : and %-escapes)"
        )
    return value


def check_deadline(value: float | None, info: ValidationInfo) -> float | None:
    """A deadline at most MAX_TIMEOUT_S away; a stored one was checked at submit already."""
    if value is not None and not _stored(info) and value > time.time() + MAX_TIMEOUT_S:
        raise ValueError(
            f"deadline is more than {MAX_TIMEOUT_S:.0f} s away (the longest a job may live)"
        )
    return value


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` is plain JSON of at most MAX_METADATA_BYTES (UTF-8 bytes: not ``\\u``
    escapes, which would count an emoji as 12)."""
    try:
        size = len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be plain JSON ({exc})") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes of JSON, over {MAX_METADATA_BYTES}")
    return value


class InferenceRequest(BaseModel):
    """One inference job. Build it with :meth:`create`, which turns bad input into E45xx errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    agent_did: str = Field(min_length=1, max_length=MAX_AGENT_DID_CHARS)
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    model_id: str | None = Field(default=None, min_length=1, max_length=256)
    enable_cache: bool = True
    # Reuse an answer to a question with the same meaning (the semantic cache): None allows it
    # only with deterministic sampling (temperature 0), True opts in, False opts out.
    semantic_cache: bool | None = None
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = None
    priority: Priority = Priority.NORMAL
    # Over a rate limit the job waits in the queue until its deadline; True fails it at once
    # with E4401 (and the wait in details.retry_after) instead.
    fail_fast: bool = False
    # Seconds the caller will wait, counted from submit; ``deadline`` (epoch seconds) wins if set.
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0.0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    # At most MAX_TIMEOUT_S from now, like ``timeout``: never clamped, refused (E4502).
    deadline: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    required_capabilities: list[str] = Field(default_factory=list)
    tools: list[ToolDefinition] = Field(default_factory=list, max_length=512)
    tool_choice: str | None = None  # "auto" | "none" | "required" | a tool's name
    response_format: ResponseFormat | None = None
    routing: RoutingOptions = Field(default_factory=RoutingOptions)
    metadata: dict[str, Any] = Field(default_factory=dict)

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

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _conversation(self) -> InferenceRequest:
        if all(m.role is MessageRole.SYSTEM for m in self.messages):
            raise ValueError("messages need at least one non-system message")
        if self.tool_choice not in (None, "auto", "none", "required") and self.tool_choice not in {
            t.name for t in self.tools
        }:
            raise ValueError(f"tool_choice {self.tool_choice!r} names no tool of the request")
        return self

    @classmethod
    def create(
        cls,
        agent_did: str,
        messages: list[Message],
        model_id: str | None = None,
        enable_cache: bool = True,
        max_tokens: int = 1024,
        **fields: Any,
    ) -> InferenceRequest:
        """The seed's constructor; raises :class:`ValidationError` (E45xx) on bad input."""
        return parse_request(
            {
                "agent_did": agent_did,
                "messages": messages,
                "model_id": model_id,
                "enable_cache": enable_cache,
                "max_tokens": max_tokens,
                **fields,
            }
        )

    @property
    def system_prompt(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.role is MessageRole.SYSTEM)


SAMPLING_FIELDS = frozenset(
    {"max_tokens", "temperature", "top_p", "stop", "seed", "timeout", "deadline"}
)


def parse_request(data: Any, *, stored: bool = False) -> InferenceRequest:
    """Validate ``data`` (a dict, JSON text or a request) into a request, or raise E45xx.

    ``stored``: a request read back from a job's record, validated when it was submitted: its
    deadline is not measured again against this host's clock, and its ``agent_did`` is not held
    to a rule newer than the producer that queued it (a rolling upgrade).
    """
    context = {"stored": stored}
    try:
        if isinstance(data, InferenceRequest):
            return data
        if isinstance(data, str | bytes):
            return InferenceRequest.model_validate_json(data, context=context)
        return InferenceRequest.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise validation_error_from(exc) from None


def validation_error_from(
    exc: pydantic.ValidationError,
    parameters: frozenset[str] = SAMPLING_FIELDS,
    messages: frozenset[str] = frozenset({"messages"}),
) -> ValidationError:
    """Map pydantic's error list to one E45xx error naming every offending field: E4501 when
    ``messages`` are at fault, E4502 when only ``parameters`` are, else E4500."""
    problems = []
    fields: set[str] = set()
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        fields.add(str(err["loc"][0]) if err["loc"] else "request")
        problems.append(f"{loc}: {err['msg']}")
    kind: type[ValidationError] = InvalidRequest
    if fields & messages:
        kind = InvalidMessages
    elif fields and fields <= parameters:
        kind = InvalidParameters
    return kind("invalid request: " + "; ".join(problems), details={"errors": problems})
