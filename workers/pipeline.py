"""One job, start to finish, inside a worker: claim, call the provider, report.

The claim is atomic (see ``workers/lua/job_claim.lua``): a job that was cancelled, has expired
or already ended is never sent to a provider. The provider call runs under the job's deadline.
Every outcome, including bugs, ends in exactly one terminal event with an E4xxx code.

A chat job (the record's kind ``chat``) may be answered from the response cache, streamed, and
failed over along its chain. An embeddings job (kind ``embed``) runs through the same admission
(one request, the input's tokens), breaker, retries and deadline, then writes its vectors whole;
it has no cache (an indexing run rarely embeds one text twice, and a repeated job id is one job
already) and no fallback model (its chain is its one model: see ``gateway_client/router.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import tracing
from config.catalog import Catalog, ModelSpec
from config.settings import GatewaySettings
from gateway_core import metrics
from gateway_core.embeddings import EmbeddingRequest, EmbeddingResponse, parse_embedding_request
from gateway_core.errors import (
    AllModelsUnavailable,
    CircuitOpen,
    DeadlineExceeded,
    GatewayError,
    MalformedResponse,
    ProviderFailed,
    ProviderTimeout,
    RateLimited,
    StreamInterrupted,
)
from gateway_core.job_records import JobKind
from gateway_core.job_states import ClaimOutcome
from gateway_core.request import InferenceRequest, parse_request
from gateway_core.response import InferenceResponse, TokenUsage
from gateway_core.virtual_keys import VirtualKey
from tasks.outcomes import RunOutcome
from workers import job_trace, observe
from workers.cache.response_cache import Lookup, ResponseCache, cached_chunks
from workers.control.admission import Admission, AdmittedRequest, Deferred
from workers.control.circuit_breaker import CircuitBreakers
from workers.control.latency import LatencyTracker
from workers.events import EventWriter, JobFenced
from workers.failover import Failover
from workers.job_store import Claim, WorkerJobStore
from workers.log_format import current_job
from workers.providers import (
    CallContext,
    EmbeddingResult,
    ProviderAdapter,
    ProviderResult,
    ProviderSet,
)
from workers.requeue import Requeue
from workers.retry import retry_delay

log = logging.getLogger(__name__)

#: Redis itself failing (BusyLoadingError, a restarted server loading its data, is one).
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)

# Errors that say the provider is unhealthy: they count against its breaker and fail over.
HEALTH_FAILURES = (ProviderFailed, ProviderTimeout, StreamInterrupted)


# A provider's 429 without Retry-After parks the job this long before it asks again.
PROVIDER_429_MIN_WAIT_S = 1.0


# What a claim that does not run the job makes of this delivery (GONE: no record, see run()).
NOT_RUN: dict[ClaimOutcome, RunOutcome | None] = {
    ClaimOutcome.TERMINAL: RunOutcome.ALREADY_ENDED,
    ClaimOutcome.DEFERRED: RunOutcome.WAITING,
    ClaimOutcome.EXPIRED: RunOutcome.EXPIRED,
    ClaimOutcome.LOST: RunOutcome.LOST,
    ClaimOutcome.GONE: None,
}


class _Used(Protocol):
    """A provider call's answer, as admission settles it."""

    @property
    def usage(self) -> TokenUsage: ...


R = TypeVar("R")
U = TypeVar("U", bound=_Used)


@dataclass(frozen=True, slots=True)
class Answer:
    """A job's answer, ready to report: the request, the model that answered, the response."""

    request: InferenceRequest | EmbeddingRequest
    spec: ModelSpec
    response: InferenceResponse | EmbeddingResponse
    outcome: RunOutcome


class ProviderUnavailable(Exception):
    """The provider failed retryably (after retries) or its breaker is open: try the next model."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.code)
        self.error = error


class JobPipeline:
    def __init__(
        self,
        store: WorkerJobStore,
        providers: ProviderSet,
        catalog: Catalog,
        settings: GatewaySettings,
        worker_id: str,
        breakers: CircuitBreakers,
        failover: Failover,
        latencies: LatencyTracker,
        admission: Admission,
        requeue: Requeue,
        cache: ResponseCache,
    ) -> None:
        self._cache = cache
        self._admission = admission
        self._requeue = requeue
        self._breakers = breakers
        self._latencies = latencies
        self._failover = failover
        self._store = store
        self._providers = providers
        self._catalog = catalog
        self._settings = settings
        self._worker_id = worker_id
        # Jobs this worker has claimed and not yet finished: the only ones whose leases it renews
        # and whose calls it may stop when they end elsewhere.
        self.claimed: set[str] = set()

    async def run(self, job_id: str) -> RunOutcome | None:
        """Run the job; returns its outcome, or None when it has no record (GONE)."""
        claim_started_ns = time.time_ns()
        claim = await self._claim(job_id)
        if claim.outcome in (ClaimOutcome.LOST, ClaimOutcome.EXPIRED):
            await self._trace_not_run(job_id, claim, claim_started_ns)
        if claim.outcome is ClaimOutcome.LOST:
            # No worker came back from this job: it may be what kills them.
            log.warning("job %s failed with E4206: started %s times", job_id, claim.detail)
            return NOT_RUN[claim.outcome]
        if claim.outcome is not ClaimOutcome.RUN:
            log.info("job %s not run: %s %s", job_id, claim.outcome, claim.detail)
            return NOT_RUN[claim.outcome]
        self.claimed.add(job_id)
        observe.claimed(claim)
        current_job.set((job_id, _request_id(claim.request_json)))
        span = job_trace.start_job(job_id, claim, claim_started_ns)
        outcome: RunOutcome | None = None
        try:
            outcome = await self._run_claimed(job_id, claim)
            return outcome
        finally:
            self.claimed.discard(job_id)
            if span is not None:
                span.end(outcome)

    async def _trace_not_run(self, job_id: str, claim: Claim, claimed_ns: int) -> None:
        """The claim ended the job (README "Tracing"): its span in the caller's trace, tracing
        on only; a Redis failure here costs the span, not the job (it has ended)."""
        if not tracing.enabled():
            return
        try:
            traceparent, tracestate, code = await self._store.ended_trace(job_id)
        except REDIS_ERRORS as exc:
            log.info("job %s: its end not traced (%s)", job_id, type(exc).__name__)
            return
        outcome = NOT_RUN[claim.outcome] or ""
        job_trace.not_run(job_id, traceparent, tracestate, outcome, code, claimed_ns)

    async def _run_claimed(self, job_id: str, claim: Claim) -> RunOutcome:
        writer = EventWriter(
            self._store,
            job_id,
            self._worker_id,
            claim.attempt,
            on_ended=lambda: self.claimed.discard(job_id),
        )
        started = time.monotonic()
        try:
            await writer.resume(claim.events_so_far)
            if claim.kind is JobKind.EMBED:
                answer = await self._embed(job_id, claim, writer, started)
            else:
                answer = await self._chat(job_id, claim, writer, started)
        except ProviderUnavailable as unavailable:
            return await self._fail_over(job_id, claim, writer, unavailable.error)
        except Deferred as deferred:
            return await self._defer(job_id, claim, deferred)
        except JobFenced:
            log.info("job %s ended elsewhere while attempt %d ran", job_id, claim.attempt)
            return RunOutcome.FENCED
        except GatewayError as error:
            log.info("job %s failed: %s", job_id, error.code)
            observe.failed(claim.provider, claim.model, error.code)
            job_trace.failed(error.code)
            await writer.error(error)
            return RunOutcome.FAILED
        except REDIS_ERRORS:
            # Redis went away under the job (a restart, a failover): not the job's fault, and
            # not a provider error. The runtime hands the message back (Reject, requeue) and the
            # job runs again once Redis answers, instead of ending in E4200.
            raise
        except Exception as exc:
            # A bug must not leave the caller waiting: report it with a code, log the type only.
            log.exception("job %s: unexpected %s", job_id, type(exc).__name__)
            observe.failed(claim.provider, claim.model, "E4200")
            job_trace.failed("E4200")
            await writer.error(
                ProviderFailed(
                    f"internal error in the worker ({type(exc).__name__})",
                    retryable=False,
                )
            )
            return RunOutcome.FAILED
        return await self._answered(claim, writer, answer)

    async def _chat(self, job_id: str, claim: Claim, writer: EventWriter, started: float) -> Answer:
        request = parse_request(claim.request_json, stored=True)
        spec = self._catalog.resolve(claim.model)
        adapter = self._providers.get(claim.provider)
        ctx = CallContext(job_id=job_id, attempt=claim.attempt)
        with job_trace.cache_lookup() as lookup_span:
            lookup = await self._cache.lookup(request, spec)
            job_trace.cache_result(
                lookup_span,
                lookup.hit.kind if lookup.hit else None,
                lookup.hit.similarity if lookup.hit else None,
            )
        if lookup.hit is not None:
            return await self._answer_from_cache(request, spec, claim, writer, lookup, started)
        result = await self._guarded_call(
            spec, claim, writer, lambda: self._call(adapter, request, spec, ctx, writer, claim)
        )
        await self._cache.store(lookup, result)
        content = writer.streamed_text if claim.stream else result.content
        response = _response(job_id, request, spec, claim, result, content, started, cached=False)
        return Answer(request, spec, response, RunOutcome.SUCCEEDED)

    async def _embed(
        self, job_id: str, claim: Claim, writer: EventWriter, started: float
    ) -> Answer:
        """An embeddings job: admitted, guarded and retried as a chat call, never cached."""
        request = parse_embedding_request(claim.request_json, stored=True)
        spec = self._catalog.resolve(claim.model)
        adapter = self._providers.get(claim.provider)
        ctx = CallContext(job_id=job_id, attempt=claim.attempt)
        key = await self._admission.virtual_key(claim.key_id)
        prompt_tokens = (
            request.input_tokens(spec.tokenizer)
            if self._admission.needs_token_count(spec, request.agent_did, key)
            else 0
        )

        def call() -> Awaitable[EmbeddingResult]:
            return self._admitted_calls(
                request,
                spec,
                ctx,
                claim,
                key,
                prompt_tokens,
                lambda: adapter.create_embeddings(request, spec, ctx),
            )

        result = await self._guarded_call(spec, claim, writer, call)
        _check_vectors(result, request, spec)
        usage = result.usage
        response = EmbeddingResponse(
            request_id=request.request_id,
            job_id=job_id,
            model_id=spec.model_id,
            provider=spec.provider,
            vectors=result.vectors,
            token_usage=usage,
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            cost=spec.cost(usage.prompt_tokens, 0),
            attempt=claim.attempt,
            queue_ms=queue_ms(claim),
        )
        return Answer(request, spec, response, RunOutcome.SUCCEEDED)

    async def _answered(self, claim: Claim, writer: EventWriter, answer: Answer) -> RunOutcome:
        if not await writer.result(answer.response):
            return RunOutcome.FENCED
        await observe.succeeded(
            self._store.redis,
            answer.request,
            answer.spec,
            answer.response,
            claim,
            self._settings.usage_outbox_max if self._settings.usage_events else 0,
        )
        return answer.outcome

    async def _answer_from_cache(
        self,
        request: InferenceRequest,
        spec: ModelSpec,
        claim: Claim,
        writer: EventWriter,
        lookup: Lookup,
        started: float,
    ) -> Answer:
        """Answer without calling the provider; a stream gets its chunks like any other."""
        assert lookup.hit is not None
        result = lookup.hit.result
        if claim.stream:
            for piece in cached_chunks(result.content):
                await writer.chunk(piece)
        response = _response(
            writer.job_id, request, spec, claim, result, result.content, started, cached=True
        )
        log.info("job %s answered from the %s cache", writer.job_id, lookup.hit.kind)
        return Answer(request, spec, response, RunOutcome.CACHED)

    async def _guarded_call(
        self,
        spec: ModelSpec,
        claim: Claim,
        writer: EventWriter,
        call: Callable[[], Awaitable[R]],
    ) -> R:
        """The provider ``call`` under the job's deadline and the provider's circuit breaker."""
        permit = await self._breakers.allow_call(spec.provider, spec.model_id)
        if not permit.allowed:
            raise ProviderUnavailable(
                CircuitOpen(
                    f"circuit open for {spec.provider} ({spec.model_id})",
                    details={
                        "provider": spec.provider,
                        "model_id": spec.model_id,
                        "retry_after": permit.retry_in_ms / 1000,
                    },
                )
            )
        timeout = asyncio.timeout(max(0.0, claim.deadline - time.time()))
        called = time.monotonic()
        try:
            async with timeout:
                result = await call()
        except TimeoutError:
            if not timeout.expired():
                raise
            raise DeadlineExceeded(
                "deadline passed while the job was running", code="E4205", retryable=False
            ) from None
        except GatewayError as error:
            if isinstance(error, HEALTH_FAILURES):
                await self._breakers.record_call(spec.provider, spec.model_id, success=False)
                if not writer.emitted:
                    raise ProviderUnavailable(error) from None
            raise
        if not permit.clean:
            await self._breakers.record_call(spec.provider, spec.model_id, success=True)
        self._latencies.record(spec.model_id, (time.monotonic() - called) * 1000)
        return result

    async def _fail_over(
        self, job_id: str, claim: Claim, writer: EventWriter, error: GatewayError
    ) -> RunOutcome:
        spec = await self._failover.next_model(claim)
        if spec is None:
            final = error
            if len(claim.chain) > 1:
                final = AllModelsUnavailable(
                    f"every model of the chain is unavailable (last: {error.code})",
                    details={"chain": list(claim.chain), "last_error": error.code},
                )
            log.info("job %s failed: %s", job_id, final.code)
            observe.failed(claim.provider, claim.model, final.code)
            job_trace.failed(final.code)
            await writer.error(final)
            return RunOutcome.FAILED
        log.info(
            "job %s: %s on %s, failing over to %s", job_id, error.code, claim.model, spec.model_id
        )
        moved = await self._failover.hand_off(
            job_id, self._worker_id, claim, spec, reason=error.code
        )
        if moved:
            metrics.FAILOVERS.labels(claim.model, spec.model_id).inc()
        return RunOutcome.FAILED_OVER if moved else RunOutcome.FENCED

    async def _defer(self, job_id: str, claim: Claim, deferred: Deferred) -> RunOutcome:
        """Park the job outside any worker until the limiter's wait is over."""
        metrics.RATE_LIMIT_REJECTIONS.labels(
            metrics.agent_label(deferred.agent_did), "deferred"
        ).inc()
        message, target = self._requeue.message(job_id, claim.provider, claim.priority)
        parked = await self._store.defer(
            job_id, self._worker_id, deferred.wait_ms, message, target, limit=deferred.limit
        )
        log.info(
            "job %s: over the %s limit of %s, deferred %d ms",
            job_id,
            deferred.limit,
            claim.model,
            deferred.wait_ms,
        )
        return RunOutcome.DEFERRED if parked else RunOutcome.FENCED

    async def _claim(self, job_id: str) -> Claim:
        lease_ms = int(self._settings.lease_ttl * 1000)
        claim = await self._store.claim(job_id, self._worker_id, lease_ms)
        if claim.outcome is not ClaimOutcome.BUSY:
            return claim
        # Another live worker holds this job (a duplicate delivery): wait until it finishes or
        # its lease lapses, keeping this message so that the job cannot be lost meanwhile.
        while claim.outcome is ClaimOutcome.BUSY:
            pause = min(self._settings.lease_ttl, max(0.05, int(claim.detail) / 1000))
            await asyncio.sleep(pause)
            claim = await self._store.claim(job_id, self._worker_id, lease_ms)
        return claim

    async def _call(
        self,
        adapter: ProviderAdapter,
        request: InferenceRequest,
        spec: ModelSpec,
        ctx: CallContext,
        writer: EventWriter,
        claim: Claim,
    ) -> ProviderResult:
        key = await self._admission.virtual_key(claim.key_id)
        prompt_tokens = (
            adapter.count_tokens(request, spec)
            if self._admission.needs_token_count(spec, request.agent_did, key)
            else 0
        )

        async def attempt() -> ProviderResult:
            if claim.stream:
                return await self._stream(adapter, request, spec, ctx, writer)
            return await adapter.complete(request, spec, ctx)

        return await self._admitted_calls(request, spec, ctx, claim, key, prompt_tokens, attempt)

    async def _admitted_calls(
        self,
        request: AdmittedRequest,
        spec: ModelSpec,
        ctx: CallContext,
        claim: Claim,
        key: VirtualKey | None,
        prompt_tokens: int,
        attempt: Callable[[], Awaitable[U]],
    ) -> U:
        """``attempt`` the provider call, each time admitted by the rate limits and quotas, and
        again after a retryable error (backoff, never past the deadline); a provider's own 429
        parks the job instead (:class:`Deferred`)."""
        call = 1
        while True:
            # Every call to the provider, retries included, is admitted by the rate limits.
            with job_trace.admission():
                ticket = await self._admission.admit(
                    ctx.job_id,
                    request,
                    spec,
                    priority=claim.priority,
                    deadline=claim.deadline,
                    prompt_tokens=prompt_tokens,
                    key=key,
                )
            active = metrics.ACTIVE_REQUESTS.labels(spec.provider)
            active.inc()
            try:
                with job_trace.provider_call(
                    claim.kind.value, spec.provider, spec.model_id, request
                ) as call_span:
                    result = await attempt()
                    job_trace.answered(call_span, spec.model_id, result)
            except BaseException as exc:
                active.dec()
                await asyncio.shield(self._admission.settle(ticket, None, 0.0))
                if not isinstance(exc, GatewayError):
                    raise
                error = exc
                # A stream cut after it delivered chunks is retried like any other call; the
                # retry's chunks skip what the caller already has (see EventWriter.begin_call).
                if isinstance(error, RateLimited):
                    # The provider's own limit (429): wait in the queue, not in a worker slot.
                    wait = max(error.retry_after or 0.0, PROVIDER_429_MIN_WAIT_S)
                    if time.time() + wait < claim.deadline:
                        raise Deferred(
                            int(wait * 1000), "provider's own", request.agent_did
                        ) from None
                    raise
                delay = retry_delay(error, call, claim.deadline - time.time())
                if delay is None:
                    raise
                log.info(
                    "job %s: %s, call %d retried in %.2fs", ctx.job_id, error.code, call, delay
                )
                metrics.RETRIES.labels(spec.provider, error.code).inc()
                await self._note_retry(ctx.job_id, error.code, call, delay)
                await asyncio.sleep(delay)
                call += 1
                continue
            active.dec()
            usage = result.usage
            cost = spec.cost(usage.prompt_tokens, usage.completion_tokens)
            await self._admission.settle(ticket, usage, cost)
            return result

    async def _note_retry(self, job_id: str, code: str, call: int, delay: float) -> None:
        """The retry on the job's timeline; a Redis failure here costs the note, not the job
        (the retry itself needs no Redis)."""
        entry = {"event": "retry", "code": code, "call": call, "delay_ms": int(delay * 1000)}
        try:
            await self._store.note(job_id, self._worker_id, entry)
        except REDIS_ERRORS as exc:
            log.info("job %s: retry not noted on its timeline (%s)", job_id, type(exc).__name__)

    async def _stream(
        self,
        adapter: ProviderAdapter,
        request: InferenceRequest,
        spec: ModelSpec,
        ctx: CallContext,
        writer: EventWriter,
    ) -> ProviderResult:
        final = None
        called = time.monotonic()
        first = True
        writer.begin_call()
        async for delta in adapter.stream(request, spec, ctx):
            if delta.text:
                if first:
                    first = False
                    waited = time.monotonic() - called
                    metrics.TIME_TO_FIRST_TOKEN.labels(spec.provider, spec.model_id).observe(waited)
                    job_trace.first_token(waited)
                await writer.chunk(delta.text)
            if delta.usage is not None or delta.finish_reason is not None:
                final = delta
        if final is None or final.usage is None:
            raise StreamInterrupted("the stream ended without usage or finish reason")
        return ProviderResult(
            content=writer.streamed_text,
            usage=final.usage,
            finish_reason=final.finish_reason or "stop",
            tool_calls=final.tool_calls,
        )


def _check_vectors(result: EmbeddingResult, request: EmbeddingRequest, spec: ModelSpec) -> None:
    """One vector per input, all of one length (the one asked for, if any): else E4600."""
    lengths = {len(vector) for vector in result.vectors}
    wanted = {request.dimensions} if request.dimensions is not None else lengths
    if len(result.vectors) != len(request.input) or len(lengths) != 1 or lengths != wanted:
        raise MalformedResponse(
            f"{spec.provider} answered {len(result.vectors)} vectors of lengths "
            f"{sorted(lengths)} for {len(request.input)} inputs"
            + (f" of {request.dimensions} dimensions" if request.dimensions else ""),
            details={"model_id": spec.model_id},
        )


def _request_id(request_json: str) -> str:
    """The request id for log lines, without parsing the whole request."""
    marker = '"request_id":"'
    start = request_json.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return request_json[start : request_json.find('"', start)]


def queue_ms(claim: Claim) -> float | None:
    """How long the job waited in the queue before this claim (None: no creation time)."""
    if not claim.created_ms:
        return None
    return float(max(0, claim.started_ms - claim.created_ms))


def _response(
    job_id: str,
    request: InferenceRequest,
    spec: ModelSpec,
    claim: Claim,
    result: ProviderResult,
    content: str,
    started: float,
    *,
    cached: bool,
) -> InferenceResponse:
    """The job's answer; a cached one cost nothing."""
    usage = result.usage
    return InferenceResponse(
        request_id=request.request_id,
        job_id=job_id,
        model_id=spec.model_id,
        provider=spec.provider,
        content=content,
        tool_calls=result.tool_calls,
        finish_reason=result.finish_reason,
        token_usage=usage,
        latency_ms=round((time.monotonic() - started) * 1000, 3),
        cached=cached,
        cost=0.0 if cached else spec.cost(usage.prompt_tokens, usage.completion_tokens),
        attempt=claim.attempt,
        queue_ms=queue_ms(claim),
    )
