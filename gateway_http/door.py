"""What makes the door ours: a request becomes a job with a priority, a deadline, routing options
and an idempotency key, and waits in the fleet's queue; a client that goes away cancels it.

Both APIs (OpenAI's and Anthropic's) build an :class:`InferenceRequest` from their own body and
hand it here with the :class:`JobOptions` read from the headers and the ``l04`` body field.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.types import Receive

from config.catalog import Catalog
from gateway_client.handle import JobHandle
from gateway_core import keys
from gateway_core.errors import InvalidParameters, InvalidRequest, ModelNotAllowed
from gateway_core.queues import PROVIDERS
from gateway_core.request import MAX_TIMEOUT_S, InferenceRequest, Priority, RoutingStrategy
from gateway_http.sse import disconnected

T = TypeVar("T")
A = TypeVar("A", bound="Answered")

#: ``service_tier`` (OpenAI's names) to the fleet's priorities.
SERVICE_TIERS = {
    "priority": Priority.HIGH,
    "default": Priority.NORMAL,
    "auto": Priority.NORMAL,
    "scale": Priority.NORMAL,
    "standard_only": Priority.NORMAL,  # Anthropic's name for the default tier
    "flex": Priority.LOW,
}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_IDEMPOTENCY_KEY = 255


Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=16),
]
"""OpenAI's ``metadata`` (chat, responses, batches): at most 16 pairs, keys of up to 64
characters, values of up to 512, as OpenAI validates it. Kept with the job and its record, so
bounded here rather than only by the body's size."""


class L04Extension(BaseModel):
    """The ``l04`` body field (the OpenAI SDK's ``extra_body``): how the fleet routes the job."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    strategy: RoutingStrategy | None = None
    fallback_models: list[str] = Field(default_factory=list, max_length=8)
    provider: str | None = None
    region: str | None = None
    task_type: str | None = None
    semantic_cache: bool | None = None
    enable_cache: bool = True

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        if value is not None and value not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        return value

    def request_fields(self) -> dict[str, Any]:
        """The :class:`InferenceRequest` fields this extension sets."""
        routing: dict[str, Any] = {"fallback_models": list(self.fallback_models)}
        for name in ("provider", "region", "task_type"):
            if getattr(self, name) is not None:
                routing[name] = getattr(self, name)
        if self.strategy is not None:
            routing["strategy"] = self.strategy
        return {
            "routing": routing,
            "semantic_cache": self.semantic_cache,
            "enable_cache": self.enable_cache,
        }


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the agent a virtual key stands for (the key decides it, never the body)."""

    agent_did: str
    key_id: str | None = None
    models: tuple[str, ...] = ()  # empty: any model

    @property
    def label(self) -> str:
        return self.key_id or "none"


async def hold_idempotency_key(
    redis: Redis, options: JobOptions, endpoint: str, body: dict[str, Any], ttl_s: float
) -> None:
    """The first request with an Idempotency-Key fixes what the key means: the same key with
    another endpoint or body is refused (E4500), not answered with the first request's answer.
    One ``SET NX GET`` on the key's fingerprint, only for requests that carry a key."""
    if options.job_id is None:
        return
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fingerprint = hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()
    held = await redis.set(
        keys.idempotency(options.job_id), fingerprint, nx=True, get=True, ex=int(ttl_s) + 1
    )
    if held is not None and (held.decode() if isinstance(held, bytes) else held) != fingerprint:
        raise InvalidRequest(
            "this Idempotency-Key was used with another request (endpoint or body): use a new "
            "key for a new request",
            details={"param": "Idempotency-Key"},
        )


@dataclass(frozen=True, slots=True)
class JobOptions:
    request_id: str
    priority: Priority
    timeout: float
    job_id: str | None  # from Idempotency-Key: the same key from the same caller, the same job

    @property
    def idempotent(self) -> bool:
        return self.job_id is not None


def job_options(
    request: Request, caller: Caller, service_tier: Any, default_timeout: float
) -> JobOptions:
    """Priority, deadline, request id and idempotency from the headers (and ``service_tier``)."""
    headers = request.headers
    request_id = _request_id(headers.get("x-request-id"))
    request.scope["l04.request_id"] = request_id
    return JobOptions(
        request_id=request_id,
        priority=_priority(service_tier, headers.get("x-l04-priority")),
        timeout=_timeout(headers.get("x-l04-timeout"), default_timeout),
        job_id=_idempotent_job_id(caller, headers.get("idempotency-key")),
    )


def _request_id(given: str | None) -> str:
    if given and REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _priority(service_tier: Any, header: str | None) -> Priority:
    if header is not None:
        try:
            return Priority(header.strip().lower())
        except ValueError:
            raise InvalidParameters(
                f"X-L04-Priority must be high, normal or low, not {header[:40]!r}",
                details={"param": "X-L04-Priority"},
            ) from None
    if service_tier is None:
        return Priority.NORMAL
    if not isinstance(service_tier, str) or service_tier not in SERVICE_TIERS:
        raise InvalidParameters(
            f"service_tier must be one of {', '.join(SERVICE_TIERS)}",
            details={"param": "service_tier"},
        )
    return SERVICE_TIERS[service_tier]


def _timeout(header: str | None, default: float) -> float:
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise InvalidParameters(
            f"X-L04-Timeout must be seconds, more than 0 and at most {MAX_TIMEOUT_S:.0f}",
            details={"param": "X-L04-Timeout"},
        )
    return value


def _idempotent_job_id(caller: Caller, key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
            details={"param": "Idempotency-Key"},
        )
    # Scoped by the caller: two keys' equal Idempotency-Keys are two jobs.
    digest = hashlib.sha256(f"{caller.key_id or caller.agent_did}\n{key}".encode()).hexdigest()
    return f"idem-{digest[:40]}"


class Answered(Protocol):
    """What the headers say of an answer (a chat or an embeddings response)."""

    @property
    def provider(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def cached(self) -> bool: ...
    @property
    def queue_ms(self) -> float | None: ...


async def answer_headers(
    handle: JobHandle, options: JobOptions, response: Answered | None
) -> dict[str, str]:
    """x-request-id, x-l04-job-id, -provider, -model, -cache and -queue-ms.

    A whole answer says all of it; the start of a stream (``response`` None) is read from the
    job's record: provider, model and queue time, the cache not yet known.
    """
    headers = {"x-request-id": options.request_id, "x-l04-job-id": handle.job_id}
    if response is not None and response.queue_ms is not None:
        headers["x-l04-provider"] = response.provider
        headers["x-l04-model"] = response.model_id
        headers["x-l04-cache"] = "hit" if response.cached else "miss"
        headers["x-l04-queue-ms"] = str(round(response.queue_ms))
        return headers
    status = await handle.status()
    provider = response.provider if response else status.provider
    model = response.model_id if response else status.model_id
    if provider:
        headers["x-l04-provider"] = provider
    if model:
        headers["x-l04-model"] = model
    if response is not None:
        headers["x-l04-cache"] = "hit" if response.cached else "miss"
    if status.created_at and status.started_at:
        waited = (status.started_at - status.created_at).total_seconds() * 1000
        headers["x-l04-queue-ms"] = str(max(0, round(waited)))
    return headers


class ClientGone(Exception):
    """The client disconnected before its answer."""


async def unless_gone(awaitable: Awaitable[T], receive: Receive) -> T:
    """``awaitable``'s value, or :class:`ClientGone` (and ``awaitable`` cancelled) when the
    client disconnects first.

    One watcher task per request, which cancels this one if the client goes: cheaper than
    running ``awaitable`` as a task of its own beside it (measured: BENCHMARKS.md, issue 15).
    """
    waiting = asyncio.current_task()
    assert waiting is not None
    gone = asyncio.Event()
    answered = False

    async def watch() -> None:
        await disconnected(receive)
        if not answered:
            gone.set()
            waiting.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        value = await awaitable
        answered = True  # no await since the line above: the watcher cannot cut in between
        return value
    except asyncio.CancelledError:
        if gone.is_set() and waiting.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()


async def abandon(handle: JobHandle, options: JobOptions) -> None:
    """The client has gone: cancel its job (no tokens spent on an answer nobody reads), unless
    the request carried an Idempotency-Key: then it finishes for the retry to collect."""
    if not options.idempotent:
        await handle.cancel()


async def wait_for_answer(
    handle: JobHandle, result: Awaitable[A], options: JobOptions, receive: Receive
) -> tuple[A, dict[str, str]]:
    """The job's answer (``result``, the handle's result in its kind) and the response headers;
    :class:`ClientGone` if the client went away first."""
    try:
        response = await unless_gone(result, receive)
    except ClientGone:
        await abandon(handle, options)
        raise
    return response, await answer_headers(handle, options, response)


def check_models(caller: Caller, catalog: Catalog, request: InferenceRequest) -> None:
    """E4001 for an unknown model, E4409 for a model (or fallback) the caller's key may not use."""
    named = [request.model_id] if request.model_id else []
    for name in [*named, *request.routing.fallback_models]:
        check_model(caller, catalog, name)


def check_model(caller: Caller, catalog: Catalog, name: str) -> None:
    spec = catalog.resolve(name)
    if caller.models and spec.model_id not in caller.models:
        raise ModelNotAllowed(
            f"this key may not use model {spec.model_id!r}",
            details={"param": "model", "model_id": spec.model_id},
        )


def openai_metadata(body: Any) -> dict[str, Any]:
    """An OpenAI request's ``metadata``, with its caller identifiers (``user``,
    ``safety_identifier``, ``prompt_cache_key``) kept as ``openai.<name>``: they change no
    answer, so they pass, and they stay with the job for whoever reads it."""
    metadata: dict[str, Any] = dict(getattr(body, "metadata", None) or {})
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        if getattr(body, name, None) is not None:
            metadata.setdefault(f"openai.{name}", getattr(body, name))
    return metadata
