"""What a worker counts (Prometheus) and reports (usage events for L01) about each job."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from config.catalog import ModelSpec
from gateway_core import keys, metrics
from gateway_core.embeddings import EmbeddingRequest, EmbeddingResponse
from gateway_core.request import InferenceRequest
from gateway_core.response import InferenceResponse
from workers.job_store import Claim

OUTBOX_TTL_S = 7 * 86_400


def claimed(claim: Claim) -> None:
    if claim.created_ms and claim.attempt == 1:
        waited = max(0.0, (claim.started_ms - claim.created_ms) / 1000)
        metrics.QUEUE_WAIT.labels(claim.provider, claim.priority).observe(waited)


def failed(provider: str, model: str, code: str) -> None:
    metrics.INFERENCE_REQUESTS.labels(provider, model, "error").inc()
    metrics.INFERENCE_ERRORS.labels(provider, code).inc()


def usage_event(
    request: InferenceRequest | EmbeddingRequest,
    response: InferenceResponse | EmbeddingResponse,
    claim: Claim,
) -> dict[str, Any]:
    """The seed's ``inference_completed`` event. Its id is the job's: one answer, one event
    (an embeddings job's too: its input tokens, no output tokens)."""
    usage = response.token_usage
    return {
        "event_id": f"l04-usage-{response.job_id}",
        "event_type": "inference_completed",
        "timestamp": time.time(),
        "agent_did": request.agent_did,
        "request_id": request.request_id,
        "job_id": response.job_id,
        "model_id": response.model_id,
        "provider": response.provider,
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "latency_ms": response.latency_ms,
        "cost_usd": response.cost,
        "cached": response.cached,
        "priority": claim.priority,
    }


async def succeeded(
    redis: Redis,
    request: InferenceRequest | EmbeddingRequest,
    spec: ModelSpec,
    response: InferenceResponse | EmbeddingResponse,
    claim: Claim,
    outbox_max: int,
) -> None:
    """Count the answer and put its usage event in the outbox L01 is fed from."""
    provider, model = spec.provider, spec.model_id
    metrics.INFERENCE_REQUESTS.labels(provider, model, "success").inc()
    metrics.INFERENCE_LATENCY.labels(provider, model).observe(response.latency_ms / 1000)
    if not response.cached:
        metrics.TOKEN_USAGE.labels("input", model).inc(response.token_usage.prompt_tokens)
        metrics.TOKEN_USAGE.labels("output", model).inc(response.token_usage.completion_tokens)
        metrics.COST.labels(model).inc(response.cost)
    if outbox_max:
        event = json.dumps(usage_event(request, response, claim), separators=(",", ":"))
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.USAGE_OUTBOX, {"e": event}, maxlen=outbox_max, approximate=True)
            # Like every key, the outbox expires: after a week without a single answer.
            pipe.expire(keys.USAGE_OUTBOX, OUTBOX_TTL_S)
            await pipe.execute()
