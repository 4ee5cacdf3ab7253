"""Where a response's :class:`ResponseRecord` lives: one Redis string beside its job (the job's
hash tag), expiring with the job's answer, so that any server answers for any response."""

from __future__ import annotations

import pydantic
from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.store_errors import job_store_errors
from gateway_http.openai_responses import ResponseRecord


async def save(redis: Redis, record: ResponseRecord, expires_at: float) -> ResponseRecord:
    """Keep ``record`` until ``expires_at`` (epoch seconds). The first record of a job wins: a
    retry with the same Idempotency-Key gets the response (and creation time) of the first."""
    with job_store_errors():
        held = await redis.set(
            keys.job_response(record.job_id),
            record.model_dump_json(),
            nx=True,
            get=True,
            pxat=int(expires_at * 1000),
        )
    if not isinstance(held, str | bytes):
        return record
    return ResponseRecord.model_validate_json(held)


async def load(redis: Redis, job_id: str) -> ResponseRecord | None:
    """The record of the job's response; None if there is none (never made, not stored,
    expired, or unreadable)."""
    with job_store_errors():
        raw = await redis.get(keys.job_response(job_id))
    if raw is None:
        return None
    try:
        return ResponseRecord.model_validate_json(raw)
    except pydantic.ValidationError:
        return None
