"""Every job ends in a result or a coded error before its deadline; cancelled jobs never run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from gateway_client import (
    DeadlineExceeded,
    JobCancelled,
    ModelGateway,
    ProviderError,
    RateLimitError,
)
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess


def openai_env(upstream: MockUpstreamProcess) -> dict[str, str]:
    return {"OPENAI_BASE_URL": f"{upstream.url}/v1", "OPENAI_API_KEY": "sk-test-deadlines"}


async def wait_until_drained(gateway: ModelGateway, queue: str, timeout: float = 20) -> None:
    """Until the broker holds no message of ``queue``, waiting or being worked on."""
    redis = gateway._redis  # the fleet's Redis, for the broker's own lists
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = sum(
            [await redis.llen(k) for k in (queue, f"{queue}\x06\x165", f"{queue}\x06\x169")]
        )
        if waiting == 0 and await redis.hlen("unacked") == 0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{queue} not drained")


async def test_deadline_passing_in_queue_ends_with_E4404_and_never_reaches_provider(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
) -> None:
    # No worker serves openai yet: the job can only wait in its queue.
    handle = await gateway.submit(make_request("late", model_id="gpt-4o-mini", timeout=1.0))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await handle.result()
    assert caught.value.code == "E4404" and not caught.value.started
    assert not isinstance(caught.value, RateLimitError)
    assert time.monotonic() - started < 1.0 + gateway.settings.deadline_grace + 1.0
    assert (await handle.status()).state == "expired"

    # A worker that arrives later takes the message and drops it.
    start_worker("openai", env=openai_env(mock_upstream))
    await wait_until_drained(gateway, "l04.openai")
    assert mock_upstream.requests_to("/v1/chat/completions") == 0


async def test_deadline_passing_while_running_ends_with_E4205_in_time(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    request = make_request("slow", timeout=1.5, metadata={"mock": {"latency_ms": 10_000}})
    handle = await gateway.submit(request)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await handle.result()
    assert caught.value.code == "E4205" and caught.value.started
    assert not isinstance(caught.value, ProviderError)
    # The worker reported it at the deadline, not the caller after its grace period.
    assert time.monotonic() - started < 1.5 + 1.0
    assert (await handle.status()).state == "failed"


async def test_job_whose_worker_never_reports_is_ended_by_the_caller(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    handle = await gateway.submit(
        make_request("orphan", timeout=2.0, metadata={"mock": {"latency_ms": 10_000}})
    )
    while (await handle.status()).state != "running":
        await asyncio.sleep(0.05)
    worker.kill()  # nobody is left to report the deadline
    with pytest.raises(DeadlineExceeded) as caught:
        await handle.result(timeout=10)
    assert caught.value.code == "E4205"


async def test_cancelled_queued_job_never_reaches_provider(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
) -> None:
    handle = await gateway.submit(make_request("cancel me", model_id="gpt-4o-mini"))
    assert await handle.cancel() is True
    assert await handle.cancel() is False  # already ended
    with pytest.raises(JobCancelled) as caught:
        await handle.result()
    assert caught.value.code == "E4405" and not isinstance(caught.value, RateLimitError)

    start_worker("openai", env=openai_env(mock_upstream))
    await wait_until_drained(gateway, "l04.openai")
    assert mock_upstream.requests_to("/v1/chat/completions") == 0
    assert (await handle.status()).state == "cancelled"


async def test_cancelling_a_running_job_stops_its_call(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    handle = await gateway.submit(make_request("long", metadata={"mock": {"latency_ms": 30_000}}))
    while (await handle.status()).state != "running":
        await asyncio.sleep(0.05)
    assert await handle.cancel() is True
    with pytest.raises(JobCancelled):
        await handle.result()
    # The worker stops the call within a heartbeat or two and frees the message.
    await wait_until_drained(gateway, "l04.mock", timeout=10)
    assert f"job {handle.job_id} ended elsewhere; stopping its call" in worker.log()
