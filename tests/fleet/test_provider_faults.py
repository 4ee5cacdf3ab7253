"""Provider faults through the fleet (``pytest -m faults``): a real worker calling the mock
upstream over HTTP with the OpenAI adapter. The adapters' own mapping of each fault to a code is
in test_adapters; here the question is what the caller sees at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis

from gateway_client import ModelGateway
from gateway_core.job_records import parse_entry
from gateway_core.keys import job_events
from l04.mock_upstream import REPLY, REPLY_PIECES
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

pytestmark = pytest.mark.faults
CHAT = "/v1/chat/completions"


def event_types(redis_client: redis.Redis, job_id: str) -> list[str]:
    """The job's recorded events, by type: what any caller, now or later, would be given."""
    return [parse_entry(i, f).type for i, f in redis_client.xrange(job_events(job_id))]


@pytest.fixture
def openai_worker(
    start_worker: Callable[..., WorkerProcess], upstream: MockUpstreamProcess
) -> WorkerProcess:
    upstream.reset()
    return start_worker(
        "openai",
        env={
            "OPENAI_BASE_URL": f"{upstream.url}/v1",
            "OPENAI_API_KEY": "sk-faults",
            # A stalled stream is noticed after a second without a byte.
            "L04_PROVIDER_TIMEOUT": "1",
        },
    )


@pytest.mark.parametrize("fault", [{"cut_after_chunks": 3}, {"stall_after_chunks": 3}])
async def test_a_stream_cut_or_stalled_midway_continues_without_repeating(
    gateway: ModelGateway,
    openai_worker: WorkerProcess,
    upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
    fault: dict[str, object],
) -> None:
    upstream.faults({**fault, "path": CHAT})
    handle = await gateway.submit(make_request("cut me", model_id="gpt-4o-mini"), stream=True)
    chunks = [c async for c in handle.stream(timeout=30)]
    body = [c for c in chunks if not c.is_final]
    # Three pieces came before the fault; the retried call's first three are not sent again.
    assert [c.content_delta for c in body] == REPLY_PIECES
    assert [c.sequence for c in body] == list(range(len(REPLY_PIECES)))
    final = chunks[-1]
    assert final.is_final and final.response is not None and final.response.content == REPLY
    assert upstream.requests_to(CHAT) == 2
    assert event_types(redis_client, handle.job_id) == ["chunk"] * len(REPLY_PIECES) + ["result"]


async def test_5xx_burst_and_429_storm_end_in_answers_each_given_once(
    gateway: ModelGateway,
    openai_worker: WorkerProcess,
    upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
) -> None:
    jobs = 20
    upstream.faults(
        {"status": 503, "count": 10, "path": CHAT},
        {"status": 429, "count": 10, "retry_after": 1, "path": CHAT},
    )
    started = time.monotonic()
    handles = [
        await gateway.submit(make_request(f"storm {i}", model_id="gpt-4o-mini"))
        for i in range(jobs)
    ]
    responses = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert [r.content for r in responses] == [REPLY] * jobs
    assert time.monotonic() - started >= 1.0  # the 429s' Retry-After was waited out
    assert upstream.requests_to(CHAT) == jobs + 20
    for handle in handles:
        assert event_types(redis_client, handle.job_id) == ["result"]
