"""Results and chunks reach the caller once each, in order, whatever happens on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from gateway_client import GatewayError, ModelGateway, StreamChunk
from tests.conftest import make_request
from tests.processes import WorkerProcess

TEXT = "The quick brown fox jumps over the lazy dog while the gateway streams every piece."
EXPECTED = f"Mock response to: {TEXT}"


def streaming(chunks: int = 20, delay_ms: int = 100, **mock: object) -> dict[str, object]:
    return {"mock": {"chunks": chunks, "chunk_delay_ms": delay_ms, **mock}}


def assert_complete(chunks: list[StreamChunk]) -> None:
    body = [c for c in chunks if not c.is_final]
    assert [c.sequence for c in body] == list(range(len(body)))
    assert chunks[-1].is_final and chunks[-1].sequence == len(body)
    assert "".join(c.content_delta for c in chunks) == EXPECTED
    assert chunks[-1].response is not None and chunks[-1].response.content == EXPECTED


async def test_late_subscriber_gets_every_chunk_once_in_order(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    handle = await gateway.submit(make_request(TEXT, metadata=streaming(delay_ms=0)), stream=True)
    while (await handle.status()).state != "succeeded":
        await asyncio.sleep(0.05)
    # Subscribe only now, after the job ended and every announcement went unheard.
    chunks = [c async for c in handle.stream()]
    assert len(chunks) == 21
    assert_complete(chunks)
    assert (await handle.result()).content == EXPECTED  # and the result, also late


@pytest.mark.faults
async def test_stream_survives_its_connection_being_cut(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    start_worker("mock")
    handle = await gateway.submit(make_request(TEXT, metadata=streaming()), stream=True)
    chunks: list[StreamChunk] = []
    cuts = 0
    async for chunk in handle.stream():
        chunks.append(chunk)
        if chunk.sequence in (3, 9) and not chunk.is_final:
            # Drop the client's pub/sub connection (as a network blip or Redis failover would).
            cuts += redis_client.client_kill_filter(_type="pubsub")
    assert cuts >= 2
    assert_complete(chunks)


async def test_stream_resumes_from_the_last_sequence_seen(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    handle = await gateway.submit(make_request(TEXT, metadata=streaming(delay_ms=20)), stream=True)
    first = []
    async for chunk in handle.stream():
        first.append(chunk)
        if chunk.sequence == 6:
            break  # the consumer goes away
    rest = [c async for c in (await gateway.job(handle.job_id)).stream(after_sequence=6)]
    assert_complete(first + rest)


async def test_resuming_an_ended_job_past_its_last_event_returns_at_once(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    streamed = await gateway.submit(make_request(TEXT, metadata=streaming(delay_ms=0)), stream=True)
    final = [c async for c in streamed.stream()][-1]
    plain = await gateway.submit(make_request("not streamed", timeout=600))
    await plain.result(timeout=10)
    cases = [(streamed, final.sequence), (streamed, final.sequence + 5), (plain, 0), (plain, 99)]
    for handle, after in cases:
        again = await gateway.job(handle.job_id)
        # Its deadline is minutes away: before the fix this waited for it, then polled forever.
        rest = await asyncio.wait_for(_collect(again.stream(after_sequence=after)), timeout=5)
        assert rest == [], (handle.job_id, after)
    # One before the last still gets the final chunk.
    again = await gateway.job(streamed.job_id)
    rest = await asyncio.wait_for(_collect(again.stream(after_sequence=final.sequence - 1)), 5)
    assert [c.is_final for c in rest] == [True]


async def _collect(chunks: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [c async for c in chunks]


@pytest.mark.faults
async def test_job_held_by_a_killed_worker_finishes_on_another(
    broker_url: str, gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Redis: the message comes back after the visibility timeout. RabbitMQ: at once, when the
    # dead worker's connection closes; the new worker then waits for the job's lease to lapse.
    doomed = start_worker("mock")
    handle = await gateway.submit(
        make_request(TEXT, timeout=60, metadata={"mock": {"latency_ms": 3000}})
    )
    while (await handle.status()).state != "running":
        await asyncio.sleep(0.05)
    doomed.kill()
    start_worker("mock")
    response = await handle.result(timeout=45)
    assert response.content == EXPECTED
    assert response.attempt == 2


@pytest.mark.faults
async def test_a_job_that_kills_every_worker_that_takes_it_stops_with_E4206(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Each worker that takes the job dies with it; past L04_MAX_DELIVERIES (2 here) starts the
    next claim fails it, instead of feeding it to worker after worker until its deadline."""
    env = {"L04_MAX_DELIVERIES": "2"}
    handle = await gateway.submit(
        make_request(TEXT, timeout=90, metadata={"mock": {"latency_ms": 60_000}})
    )
    for attempt in (1, 2):
        doomed = start_worker("mock", env=env)
        while (status := await handle.status()).state != "running" or status.attempt < attempt:
            await asyncio.sleep(0.05)
        doomed.kill()
    start_worker("mock", env=env)
    with pytest.raises(GatewayError) as caught:
        await handle.result(timeout=45)
    assert caught.value.code == "E4206"
    assert "2 times" in caught.value.message
    assert (await handle.status()).attempt == 2


@pytest.mark.faults
async def test_stream_of_a_killed_worker_resumes_without_repeating_chunks(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    doomed = start_worker("mock")
    handle = await gateway.submit(
        make_request(TEXT, timeout=60, metadata=streaming(chunks=20, delay_ms=150)), stream=True
    )
    chunks: list[StreamChunk] = []
    async for chunk in handle.stream(timeout=50):
        chunks.append(chunk)
        if chunk.sequence == 5 and not chunk.is_final:
            doomed.kill()
            start_worker("mock")
    assert_complete(chunks)
    assert chunks[-1].response is not None and chunks[-1].response.attempt == 2


async def test_long_job_on_a_live_worker_is_not_handed_out_twice(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Visibility timeout is 4 s in the tests; the job runs three times that. Without the
    # heartbeat kombu would put the message back and the other worker would receive it.
    workers = [start_worker("mock"), start_worker("mock")]
    handle = await gateway.submit(
        make_request(TEXT, timeout=60, metadata={"mock": {"latency_ms": 12_000}})
    )
    response = await handle.result(timeout=40)
    assert response.attempt == 1
    deliveries = sum(w.log().count(f"l04.infer[{handle.job_id}] received") for w in workers)
    assert deliveries == 1
