"""Rate limits and quotas in the job path, through real workers: waiting in the queue, priority
and fairness while waiting, deadlines, fail-fast, settlement and quotas (E4402)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from config.catalog import load_catalog
from gateway_client import InferenceResponse, JobCancelled, ModelGateway, RateLimitError
from gateway_client.handle import JobHandle
from l04.mock_upstream import REPLY
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

CHAT = "/v1/chat/completions"
WINDOW_S = 2.0  # the limiter's window in these tests: "per minute" means per 2 s here

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-limited"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
limits = { requests_per_minute = 3 }

[[models]]
model_id = "mock-tpm"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
limits = { tokens_per_minute = 400 }

[[models]]
model_id = "mock-priced"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
cost_per_1k_input = 1.0
cost_per_1k_output = 1.0

[agents."did:key:token-quota"]
token_quota = 200

[agents."did:key:cost-quota"]
cost_quota = 0.1
"""


@pytest.fixture
def catalog_path(tmp_path: Path) -> str:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    return str(path)


@pytest.fixture
def limited_worker(
    start_worker: Callable[..., WorkerProcess], catalog_path: str
) -> Callable[..., WorkerProcess]:
    def start(concurrency: int = 20) -> WorkerProcess:
        env = {"L04_CATALOG": catalog_path, "L04_RATE_LIMIT_WINDOW": str(WINDOW_S)}
        return start_worker("mock", concurrency=concurrency, env=env)

    return start


@pytest.fixture
async def client(redis_url: str, catalog_path: str) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(redis_url=redis_url, catalog=load_catalog(catalog_path))
    yield gateway
    await gateway.close()


def finished_ms(redis_client: redis.Redis, handle: JobHandle) -> int:
    return int(redis_client.hget(f"l04:job:{{{handle.job_id}}}", "finished_ms") or 0)


async def test_a_burst_over_the_limit_completes_late_without_errors(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    limited_worker()
    started = time.monotonic()
    handles = [
        await client.submit(make_request(f"q{i}", model_id="mock-limited")) for i in range(9)
    ]
    results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, InferenceResponse) and r.model_id == "mock-limited" for r in results)
    # 3 per window: 9 jobs need three windows, so the last ones waited at least two.
    assert elapsed >= 2 * WINDOW_S - 0.2
    deferrals = [
        int(redis_client.hget(f"l04:job:{{{h.job_id}}}", "deferrals") or 0) for h in handles
    ]
    assert sum(1 for d in deferrals if d) >= 6
    assert all(r.attempt == 1 for r in results)  # waiting is not an attempt
    finished = sorted(finished_ms(redis_client, h) for h in handles)
    # Never more than 3 admitted in one sliding window. Finish times lag admissions by each
    # job's own run time, which a loaded machine stretches: 500 ms of slack (a limiter that let
    # them all through would finish them within a few ms of each other).
    for i in range(len(finished) - 3):
        assert finished[i + 3] - finished[i] >= WINDOW_S * 1000 - 500


async def test_waiting_jobs_hold_no_worker_slot(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess]
) -> None:
    limited_worker(concurrency=2)
    waiting = [
        await client.submit(make_request(f"w{i}", model_id="mock-limited")) for i in range(9)
    ]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    # Two worker slots and six jobs waiting for the limit: an unlimited model still runs now.
    quick = await asyncio.gather(*(client.execute(make_request(f"u{i}")) for i in range(4)))
    assert all(r.model_id == "mock" for r in quick)
    assert time.monotonic() - started < WINDOW_S
    await asyncio.gather(*(h.result(timeout=30) for h in waiting))


async def test_normal_jobs_overtake_waiting_low_ones_and_agents_take_turns(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    limited_worker()
    batch = [
        await client.submit(
            make_request(f"low{i}", model_id="mock-limited", priority="low", agent_did="did:key:a")
        )
        for i in range(12)
    ]
    await asyncio.sleep(0.5)  # the batch saturates the limit; nine of its jobs wait
    other_agent = [
        await client.submit(
            make_request(f"b{i}", model_id="mock-limited", priority="low", agent_did="did:key:b")
        )
        for i in range(2)
    ]
    interactive = [
        await client.submit(
            make_request(f"n{i}", model_id="mock-limited", priority="normal", agent_did="did:key:a")
        )
        for i in range(3)
    ]
    everything = batch + other_agent + interactive
    await asyncio.gather(*(h.result(timeout=60) for h in everything))
    last_normal = max(finished_ms(redis_client, h) for h in interactive)
    batch_after_normal = sum(1 for h in batch if finished_ms(redis_client, h) > last_normal)
    # Without priorities the three NORMAL jobs (of the batch's own agent) would queue behind the
    # nine waiting LOW ones.
    assert batch_after_normal >= 6
    last_b = max(finished_ms(redis_client, h) for h in other_agent)
    batch_after_b = sum(1 for h in batch if finished_ms(redis_client, h) > last_b)
    # Agent b's two LOW jobs take turns with agent a's batch instead of waiting for all of it.
    assert batch_after_b >= 3


async def test_a_wait_past_the_deadline_and_fail_fast_end_in_E4401(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess]
) -> None:
    limited_worker()
    admitted = [
        await client.submit(make_request(f"a{i}", model_id="mock-limited")) for i in range(3)
    ]
    await asyncio.gather(*(h.result(timeout=10) for h in admitted))

    started = time.monotonic()
    with pytest.raises(RateLimitError) as too_near:
        await client.execute(make_request("soon", model_id="mock-limited", timeout=0.8))
    assert too_near.value.code == "E4401"
    assert too_near.value.details["limit"] == "model requests per minute"
    assert too_near.value.details["retry_after"] > 0

    with pytest.raises(RateLimitError) as fast:
        await client.execute(make_request("now", model_id="mock-limited", fail_fast=True))
    assert fast.value.code == "E4401"
    # At most a window and one sub-bucket (the limiter counts whole sub-buckets of window/60).
    assert 0 < fast.value.retry_after <= WINDOW_S * 61 / 60
    # Both were refused by the worker at once, not when their deadline passed.
    assert time.monotonic() - started < 0.8 + 0.5


async def test_tokens_per_minute_reserve_the_estimate_and_settle_real_usage(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    limited_worker()
    response = await client.execute(make_request("count me", model_id="mock-tpm", max_tokens=300))
    key = "l04:rl:{mock:mock-tpm}:tpm"
    counted = sum(int(v) for v in redis_client.hgetall(key).values())
    # The reservation (prompt + 300) was replaced by what the call really used.
    assert counted == response.token_usage.total_tokens < 300
    with pytest.raises(RateLimitError) as never:
        await client.execute(make_request("too big", model_id="mock-tpm", max_tokens=1000))
    assert never.value.code == "E4401" and not never.value.retryable


@pytest.mark.parametrize("agent", ["did:key:token-quota", "did:key:cost-quota"])
async def test_a_spent_quota_is_E4402(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess], agent: str
) -> None:
    limited_worker()
    answered = 0
    for i in range(20):
        request = make_request(f"q{i}", model_id="mock-priced", agent_did=agent, max_tokens=30)
        try:
            await client.execute(request)
        except RateLimitError as error:
            assert error.code == "E4402" and not error.retryable
            assert error.details["quota"] == ("tokens" if "token" in agent else "cost")
            assert error.details["used"] <= error.details["limit"]
            break
        answered += 1
    else:
        pytest.fail("the quota never ran out")
    assert answered >= 2  # settled usage, not the reserved estimate, is what counts


async def test_a_cancelled_waiting_job_never_runs(
    client: ModelGateway, limited_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    limited_worker()
    handles = [
        await client.submit(make_request(f"c{i}", model_id="mock-limited")) for i in range(4)
    ]
    deadline = time.monotonic() + 10
    while True:  # three run in the window; the fourth waits for the next one
        states = [redis_client.hget(f"l04:job:{{{h.job_id}}}", "state") for h in handles]
        if b"deferred" in states or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert b"deferred" in states
    waiting = handles[states.index(b"deferred")]
    await waiting.cancel()
    with pytest.raises(JobCancelled) as cancelled:
        await waiting.result(timeout=10)
    assert cancelled.value.code == "E4405"
    await asyncio.sleep(WINDOW_S + 0.3)  # past the wait: the mover must not revive it
    assert redis_client.hget(f"l04:job:{{{waiting.job_id}}}", "state") == b"cancelled"


@pytest.mark.faults
async def test_a_provider_429_waits_in_the_queue_until_retry_after(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
) -> None:
    env = {"OPENAI_BASE_URL": f"{mock_upstream.url}/v1", "OPENAI_API_KEY": "sk-test-429"}
    start_worker("openai", env=env)
    mock_upstream.faults({"status": 429, "count": 2, "retry_after": 1, "path": CHAT})
    started = time.monotonic()
    handle = await gateway.submit(make_request("busy?", model_id="gpt-4o-mini"))
    response = await handle.result(timeout=20)
    assert response.content == REPLY and response.attempt == 1
    assert time.monotonic() - started >= 2.0  # two Retry-After waits of 1 s each
    assert redis_client.hget(f"l04:job:{{{handle.job_id}}}", "deferrals") == b"2"

    mock_upstream.faults({"status": 429, "count": 1, "retry_after": 5, "path": CHAT})
    with pytest.raises(RateLimitError) as too_late:
        await gateway.execute(make_request("still busy?", model_id="gpt-4o-mini", timeout=2))
    assert too_late.value.code == "E4401" and too_late.value.retry_after == 5
