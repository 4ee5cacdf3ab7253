"""``ModelGateway``: the producer's side of the fleet.

``submit`` validates the request, resolves its model, checks the queue's depth, writes the job
record (once per job id) and sends a small message to the provider's priority queue. The answer
comes back through the job's event stream (see :mod:`gateway_client.listener`). ``embed`` does
the same for an embeddings job (the record's ``kind`` is ``embed``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic_core import PydanticSerializationError
from redis.asyncio import Redis

from config.catalog import Catalog, ModelSpec, cached_catalog
from config.settings import GatewaySettings, load_settings
from gateway_client.handle import EmbeddingJob, JobHandle
from gateway_client.health import fleet_health
from gateway_client.job_store import JobStore
from gateway_client.listener import EventListener
from gateway_client.router import LLMRouter, embedding_model, measured_latencies
from gateway_core import genai_attributes, metrics, tokens, trace_context
from gateway_core.breakers import BreakerState, catalog_breakers, read_states
from gateway_core.embeddings import EmbeddingRequest, parse_embedding_request
from gateway_core.errors import (
    BrokerUnavailable,
    GatewayError,
    InvalidMessages,
    InvalidParameters,
    InvalidRequest,
    KeyRefused,
    QueueFull,
    unknown_job,
)
from gateway_core.job_records import JobKind
from gateway_core.job_states import CreateOutcome, JobState
from gateway_core.messages import Message, MessageRole, ToolResult
from gateway_core.queues import (
    is_redis_broker,
    priority_value,
    queue_name,
    redis_priority_lists,
)
from gateway_core.redact import redact
from gateway_core.redis_pool import make_redis
from gateway_core.request import InferenceRequest, RoutingStrategy, parse_request
from gateway_core.response import InferenceResponse, StreamChunk
from gateway_core.store_errors import job_store_errors
from gateway_core.virtual_keys import KeyCache, VirtualKey, VirtualKeyStore
from gateway_core.webhooks import notify_field
from gateway_core.wire import JOB_ID_PATTERN, make_envelope
from tasks.app_config import create_app
from tasks.message import build_task_message, publish_job, redis_list_for
from tasks.queue_depth import read_depths

PROMPT_PREVIEW_CHARS = 120

#: The OpenTelemetry API's tracer: the application's TracerProvider decides what it records.
_tracer = trace.get_tracer("l04.gateway_client")


def _count_refusal(error: GatewayError, request: object) -> None:
    """A submit refused: by code, and a full queue as a refusal of the agent's too."""
    metrics.SUBMIT_REFUSALS.labels(error.code).inc()
    if isinstance(error, QueueFull):
        metrics.RATE_LIMIT_REJECTIONS.labels(
            metrics.agent_label(getattr(request, "agent_did", "unknown")), "refused"
        ).inc()


class ModelGateway:
    """Submit inference jobs to the fleet and get their answers.

    With no arguments it reads ``REDIS_URL`` and the other settings from the environment.
    """

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        *,
        redis_url: str | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        overrides: dict[str, Any] = {"REDIS_URL": redis_url} if redis_url else {}
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        self.catalog = catalog or cached_catalog(settings.catalog_path)
        self._redis = make_redis(settings.redis_url, sentinel=settings.sentinel)
        self._store = JobStore(
            self._redis,
            index_queued=is_redis_broker(settings.effective_broker_url),
            result_ttl=settings.result_ttl,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        self._listener = EventListener(self._redis, self._store)
        self._keys = KeyCache(VirtualKeyStore(self._redis))
        self._broker_url = settings.effective_broker_url
        self._broker_is_state_redis = self._broker_url == settings.redis_url
        # An AMQP broker (RabbitMQ) is reached through Celery/kombu only, never as a Redis.
        self._broker_redis: Redis | None = (
            self._redis
            if self._broker_is_state_redis
            else make_redis(self._broker_url, sentinel=settings.sentinel, variable="L04_BROKER_URL")
            if is_redis_broker(self._broker_url)
            else None
        )
        self._celery = create_app(settings)

    @property
    def redis(self) -> Redis:
        """The client of the job-state Redis (batches and tools build on it)."""
        return self._redis

    # -- the seed's API ----------------------------------------------------------------------

    async def execute(self, request: InferenceRequest) -> InferenceResponse:
        started = time.monotonic()
        handle = await self.submit(request)
        try:
            return await handle.result()
        finally:
            metrics.JOB_LATENCY.observe(time.monotonic() - started)

    async def stream(self, request: InferenceRequest) -> AsyncIterator[StreamChunk]:
        handle = await self.submit(request, stream=True)
        async for chunk in handle.stream():
            yield chunk

    async def execute_with_tools(
        self,
        request: InferenceRequest,
        tool_results: list[ToolResult],
        assistant_message: Message | None = None,
    ) -> InferenceResponse:
        """Send tool results back to the model and return its next answer.

        ``assistant_message`` is the model's turn that asked for the tools; if omitted, the
        request's last message must be it.
        """
        messages = list(request.messages)
        if assistant_message is not None:
            messages.append(assistant_message)
        if not messages or not messages[-1].tool_calls:
            raise InvalidMessages("execute_with_tools needs the assistant turn with tool_calls")
        asked = {call.id for call in messages[-1].tool_calls}
        for result in tool_results:
            if result.tool_call_id not in asked:
                raise InvalidMessages(f"tool result for unknown call {result.tool_call_id!r}")
            messages.append(
                Message(
                    role=MessageRole.TOOL, content=result.content, tool_call_id=result.tool_call_id
                )
            )
        follow_up = request.model_copy(
            update={"messages": messages, "request_id": uuid.uuid4().hex}
        )
        return await self.execute(parse_request(follow_up.model_dump()))

    async def health_check(self) -> dict[str, Any]:
        return await fleet_health(self._redis, self._broker_redis, self._celery, self.catalog)

    async def close(self) -> None:
        await self._listener.close()
        if self._broker_redis is not None and self._broker_redis is not self._redis:
            await self._broker_redis.aclose()
        await self._redis.aclose()

    async def __aenter__(self) -> ModelGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- jobs --------------------------------------------------------------------------------

    async def submit(
        self,
        request: InferenceRequest,
        job_id: str | None = None,
        *,
        stream: bool = False,
        key_id: str | None = None,
        notify: str | None = None,
    ) -> JobHandle:
        """Enqueue ``request``; the same ``job_id`` submitted twice is one job.

        ``key_id``: the virtual key the job came through (the HTTP front door), whose own
        limits the workers' admission applies beside the model's and the agent's. Its models
        bound the routing (E4409), and an unknown, revoked or expired key is E4408.

        ``notify``: send a webhook when the job ends (a background response): ``"response"``
        (the event's ``data.id`` is ``resp_<job_id>``) or ``"response:<id>"`` for another id.
        Whichever way the job ends, the same Lua script that ends it adds the event to the
        webhook outbox (README "Webhooks"); anything else is E4500.
        """
        try:
            with job_store_errors():
                return await self._submit(request, job_id, stream, key_id, notify)
        except GatewayError as error:
            _count_refusal(error, request)
            raise

    async def embed(
        self, request: EmbeddingRequest, job_id: str | None = None, *, key_id: str | None = None
    ) -> EmbeddingJob:
        """Enqueue an embeddings job; the same ``job_id`` submitted twice is one job.

        It goes where any call goes: its model's provider queue (E4403 when full), at its
        priority, under its deadline, and the worker admits its call by the same rate limits
        and quotas (one request, the input's tokens) and the same breaker. ``key_id``: the
        virtual key the job came through, recorded in the job as for :meth:`submit`.
        """
        try:
            request = parse_embedding_request(request)  # an embeddings job, whatever was passed
            with job_store_errors():
                handle = await self._submit(request, job_id, False, key_id)
        except GatewayError as error:
            _count_refusal(error, request)
            raise
        return EmbeddingJob(handle)

    async def _submit(
        self,
        request: InferenceRequest | EmbeddingRequest,
        job_id: str | None,
        stream: bool,
        key_id: str | None = None,
        notify: str | None = None,
    ) -> JobHandle:
        """The submit, in the span ``l04.submit`` (the parent of the workers' spans)."""
        # Not the API's status on exception: "{type}: {message}" would replace the code.
        with _tracer.start_as_current_span(
            "l04.submit",
            kind=SpanKind.PRODUCER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                handle = await self._submit_traced(request, job_id, stream, key_id, notify, span)
            except GatewayError as error:
                span.set_attribute("error.type", error.code)
                span.set_status(Status(StatusCode.ERROR, error.code))
                raise
            except Exception as exc:  # not a cancelled submit: that is no error
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            if span.is_recording():
                span.set_attribute("l04.job_id", handle.job_id)
            return handle

    async def _submit_traced(
        self,
        request: InferenceRequest | EmbeddingRequest,
        job_id: str | None,
        stream: bool,
        key_id: str | None,
        notify: str | None,
        span: trace.Span,
    ) -> JobHandle:
        kind = JobKind.EMBED if isinstance(request, EmbeddingRequest) else JobKind.CHAT
        request = self._parsed(request)
        if job_id is not None and not JOB_ID_PATTERN.match(job_id):
            raise InvalidRequest("job_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        job_id = job_id or uuid.uuid4().hex
        notify_as = None
        if notify is not None:
            try:
                notify_as = notify_field(notify, job_id)
            except ValueError as exc:
                raise InvalidParameters(str(exc)) from None
        chain = await self._chain(request, key_id)
        spec = chain[0]
        now = time.time()
        deadline = request.deadline or now + request.timeout
        if deadline <= now:
            raise InvalidParameters("the request's deadline has already passed")
        queue = queue_name(spec.provider)
        priority = priority_value(request.priority, self._broker_url)
        try:
            serialized = request.model_dump_json()
        except PydanticSerializationError:  # plain JSON, but nested past what it can be kept as
            raise InvalidRequest("the request's JSON is nested too deeply") from None
        fields = {
            "request": serialized,
            "provider": spec.provider,
            "model": spec.model_id,
            "queue": queue,
            "priority": request.priority.value,
            "stream": "1" if stream else "0",
            "deadline": repr(deadline),
            "agent_did": request.agent_did,
            "chain": json.dumps([m.model_id for m in chain]),
        }
        if kind is not JobKind.CHAT:  # absent: chat, as for every job before embeddings
            fields["kind"] = kind.value
        if key_id is not None:
            fields["key_id"] = key_id
        if notify_as is not None:  # read by gateway_core/lua/webhook.lua when the job ends
            fields["notify"] = notify_as
        # The caller's trace (this submit's span), for the workers' spans to join it.
        fields.update(trace_context.current_fields())
        if span.is_recording():
            span.set_attributes(
                genai_attributes.request_attributes(
                    genai_attributes.operation(kind.value), spec.provider, spec.model_id
                )
            )
        expire_at_ms = int((deadline + self.settings.result_ttl) * 1000)
        fields["reply_to"] = await self._listener.expect(
            job_id, deadline - now + self.settings.deadline_grace
        )
        try:
            state = await self._create(job_id, request, fields, queue, priority, expire_at_ms)
        except BaseException:
            self._listener.forget(job_id)
            raise
        if state is not CreateOutcome.CREATED:
            self._listener.forget(job_id)
        if state is CreateOutcome.FULL:
            raise self._queue_full(queue)
        if state is not CreateOutcome.CREATED:
            return await self._existing(job_id, kind)  # a job with this id exists: its handle
        metrics.JOBS_SUBMITTED.labels(spec.provider, request.priority.value).inc()
        return self._handle(job_id, deadline, kind)

    @staticmethod
    def _parsed(
        request: InferenceRequest | EmbeddingRequest,
    ) -> InferenceRequest | EmbeddingRequest:
        if isinstance(request, EmbeddingRequest):
            return parse_embedding_request(request)
        return parse_request(request)

    async def _chain(
        self, request: InferenceRequest | EmbeddingRequest, key_id: str | None
    ) -> list[ModelSpec]:
        """The models that may answer, in order: an embeddings job has its one model."""
        if isinstance(request, EmbeddingRequest):
            spec = embedding_model(self.catalog, request)
            if key_id is not None:
                (await self._usable_key(key_id)).check_model(spec.model_id, *spec.aliases)
            return [spec]
        return await self._route(request, key_id)

    async def _existing(self, job_id: str, kind: JobKind) -> JobHandle:
        """The handle of the job that has ``job_id`` already; E4500 if it is of another kind."""
        handle = await self.job(job_id)
        if handle.kind is not kind:
            raise InvalidRequest(
                f"job id {job_id} is taken by a {handle.kind.value} job",
                details={"job_id": job_id, "kind": handle.kind.value},
            )
        return handle

    async def _create(
        self,
        job_id: str,
        request: InferenceRequest | EmbeddingRequest,
        fields: dict[str, str],
        queue: str,
        priority: int,
        expire_at_ms: int,
    ) -> CreateOutcome | JobState:
        """Create the job and queue its message: CREATED, FULL, or the existing job's state."""
        if self._broker_is_state_redis:
            # One round trip: depth check, job record and queued message, atomically.
            state = await self._store.create(
                job_id,
                expire_at_ms,
                fields,
                queue_lists=redis_priority_lists(queue),
                max_depth=self.settings.queue_max_depth,
                message=build_task_message(
                    self._celery,
                    job_id,
                    make_envelope(job_id),
                    queue,
                    priority,
                    self._argsrepr(job_id, request),
                ),
                push_to=redis_list_for(queue, priority),
            )
        else:
            await self._check_depth(queue)
            state = await self._store.create(
                job_id,
                expire_at_ms,
                fields,
                queue_lists=[],
                max_depth=self.settings.queue_max_depth,
            )
            if state is CreateOutcome.CREATED:
                await self._send(job_id, queue, priority)
        return state

    def _argsrepr(self, job_id: str, request: InferenceRequest | EmbeddingRequest) -> str | None:
        """With L04_TASK_SHOW_PROMPT, a redacted preview of the prompt for Flower and the logs."""
        if not self.settings.task_show_prompt:
            return None
        text = (
            request.input[0] if isinstance(request, EmbeddingRequest) else request.messages[-1].text
        )
        preview = redact(text[:PROMPT_PREVIEW_CHARS])
        return f"[{{'job_id': {job_id!r}, 'prompt': {preview!r}}}]"

    async def _send(self, job_id: str, queue: str, priority: int) -> None:
        """Publish through Celery, for brokers other than the job-state Redis."""
        try:
            await asyncio.to_thread(publish_job, self._celery, job_id, queue, priority)
        except Exception as exc:
            error = self._broker_unreachable(exc)
            await self._store.cancel(
                job_id, {"type": "error", "error": error.to_payload()}, state=JobState.FAILED
            )
            raise error from None

    async def job(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (by this process or another)."""
        with job_store_errors():
            info = await self._store.status(job_id)
        if not info:
            raise unknown_job(job_id)
        kind = JobKind(info.get("kind") or JobKind.CHAT)
        return self._handle(job_id, float(info.get("deadline") or time.time()), kind)

    async def embedding_job(self, job_id: str) -> EmbeddingJob:
        """A handle on an embeddings job submitted earlier; E4500 for a chat job's id."""
        return EmbeddingJob(await self._existing(job_id, JobKind.EMBED))

    def _handle(self, job_id: str, deadline: float, kind: JobKind = JobKind.CHAT) -> JobHandle:
        return JobHandle(
            job_id, deadline, self._store, self._listener, self.settings.deadline_grace, kind
        )

    async def _route(self, request: InferenceRequest, key_id: str | None = None) -> list[ModelSpec]:
        """The model to answer and its fallbacks (see :class:`LLMRouter`), among the models
        the virtual key ``key_id`` may use."""
        key = await self._usable_key(key_id) if key_id is not None else None
        needs_health = request.model_id is None or bool(request.routing.fallback_models)
        unavailable = await self._open_breakers() if needs_health else set()
        latencies = (
            await measured_latencies(self._redis)
            if request.routing.strategy is RoutingStrategy.LATENCY_OPTIMIZED
            else {}
        )
        router = LLMRouter(self.catalog, latencies_ms=latencies, unavailable=unavailable, key=key)
        return router.route(request, tokens.count_messages(request.messages))

    async def _usable_key(self, key_id: str) -> VirtualKey:
        """The key's record (read at most once a second), or E4408."""
        key = await self._keys.get(key_id)
        if key is None:
            raise KeyRefused(f"unknown virtual key {key_id!r}", details={"key_id": key_id})
        key.check_usable()
        return key

    async def _open_breakers(self) -> set[str]:
        """Providers ("openai") and deployments ("openai:gpt-4o") whose breaker is open now."""
        names = catalog_breakers(
            self.catalog.providers, ((m.provider, m.model_id) for m in self.catalog)
        )
        states = await read_states(self._redis, names)
        return {name for name, state in states.items() if state is BreakerState.OPEN}

    async def _check_depth(self, queue: str) -> None:
        """E4403 past the depth limit, on a broker other than the job-state Redis."""
        try:
            depth = await read_depths([queue], broker_redis=self._broker_redis, app=self._celery)
        except Exception as exc:
            if self._broker_redis is not None:
                raise  # the job-state Redis's own errors are E4407 (see job_store_errors)
            raise self._broker_unreachable(exc) from None
        if depth[queue].total >= self.settings.queue_max_depth:
            raise self._queue_full(queue)

    @staticmethod
    def _broker_unreachable(exc: BaseException) -> BrokerUnavailable:
        """The broker could not be reached: retryable, and naming no URL (it holds a password)."""
        return BrokerUnavailable(
            f"could not enqueue the job: broker unreachable ({type(exc).__name__})",
            details={"retry_after": 1.0},
        )

    def _queue_full(self, queue: str) -> QueueFull:
        return QueueFull(
            f"queue {queue} is full ({self.settings.queue_max_depth} jobs waiting); retry later",
            details={
                "queue": queue,
                "max_depth": self.settings.queue_max_depth,
                "retry_after": 1.0,
            },
        )
