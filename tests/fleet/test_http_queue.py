"""What the door adds to an HTTP API: idempotent requests, cancellation when the client goes,
priorities and deadlines from the headers, and a wait in the queue instead of a 429."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from gateway_client import ModelGateway
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.processes import MockUpstreamProcess, ServerProcess, WorkerProcess

CHAT = "/v1/chat/completions"


def chat_body(text: str, model: str = "gpt-4o-mini", **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def only_job(redis_client: redis.Redis, timeout: float = 10) -> str:
    """The id of the one job in Redis (a dropped request never learned it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            k.decode().removeprefix("l04:job:{").removesuffix("}")
            for k in redis_client.scan_iter("l04:job:*")
            if k.decode().endswith("}")
        ]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no job was created")


async def state_of(gateway: ModelGateway, job_id: str, wanted: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = (await (await gateway.job(job_id)).status()).state
        if state == wanted:
            return state
        await asyncio.sleep(0.05)
    return state


@pytest.fixture
def door(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
) -> ServerProcess:
    start_worker("mock,openai", env=fleet_env(mock_upstream))
    return start_server(no_auth=True)


async def test_the_same_idempotency_key_is_one_provider_call(
    door: ServerProcess, mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"latency_ms": 1500, "count": 2})
    headers = {"Idempotency-Key": "order-7"}
    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:
        first = asyncio.create_task(client.post(CHAT, json=chat_body("once"), headers=headers))
        await asyncio.sleep(0.4)  # the second arrives while the first runs
        second = await client.post(CHAT, json=chat_body("once"), headers=headers)
        first_answer = await first
        # A client that drops before its answer, then retries with the same key.
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                CHAT,
                json=chat_body("dropped"),
                headers={"Idempotency-Key": "order-8"},
                timeout=0.3,
            )
        retried = await client.post(
            CHAT, json=chat_body("dropped"), headers={"Idempotency-Key": "order-8"}
        )
        third = await client.post(CHAT, json=chat_body("once"), headers=headers)
    for answer in (first_answer, second, third, retried):
        assert answer.status_code == 200, answer.text
    assert first_answer.json()["choices"] == second.json()["choices"] == third.json()["choices"]
    assert first_answer.headers["x-l04-job-id"] == third.headers["x-l04-job-id"]
    assert mock_upstream.requests_to(CHAT) == 2  # one for each key


async def test_a_retry_attaches_to_the_running_stream(
    door: ServerProcess, mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"latency_ms": 800, "count": 1})
    headers = {"Idempotency-Key": "stream-1"}
    body = chat_body("stream once", stream=True)
    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:

        async def read() -> str:
            async with client.stream("POST", CHAT, json=body, headers=headers) as answer:
                assert answer.status_code == 200
                return "".join([piece async for piece in answer.aiter_text()])

        both = await asyncio.gather(read(), read())
    texts = [
        "".join(
            json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in raw.split("\n\n")
            if e.startswith("data: {") and json.loads(e[6:])["choices"]
        )
        for raw in both
    ]
    assert texts[0] == texts[1] and texts[0]
    assert mock_upstream.requests_to(CHAT) == 1


async def test_a_client_that_drops_a_running_request_cancels_its_job(
    door: ServerProcess,
    mock_upstream: MockUpstreamProcess,
    gateway: ModelGateway,
    redis_client: redis.Redis,
) -> None:
    mock_upstream.faults({"latency_ms": 30_000, "count": 1})
    async with httpx.AsyncClient(base_url=door.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(CHAT, json=chat_body("nobody reads this"), timeout=1.5)
    job_id = only_job(redis_client)
    assert await state_of(gateway, job_id, "cancelled") == "cancelled"


async def test_a_client_that_drops_a_stream_cancels_its_job(
    door: ServerProcess,
    mock_upstream: MockUpstreamProcess,
    gateway: ModelGateway,
    redis_client: redis.Redis,
) -> None:
    mock_upstream.faults({"stall_after_chunks": 1, "count": 1})
    async with (
        httpx.AsyncClient(base_url=door.url, timeout=30) as client,
        client.stream("POST", CHAT, json=chat_body("stall", stream=True)) as answer,
    ):
        assert answer.status_code == 200
        async for piece in answer.aiter_text():
            if '"content":"' in piece and '"content":""' not in piece:
                break  # the first words arrived; the client goes
    job_id = only_job(redis_client)
    assert await state_of(gateway, job_id, "cancelled") == "cancelled"


async def test_a_dropped_queued_request_never_reaches_the_provider(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    gateway: ModelGateway,
    redis_client: redis.Redis,
) -> None:
    server = start_server(no_auth=True)  # no worker yet: the job waits in its queue
    async with httpx.AsyncClient(base_url=server.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(CHAT, json=chat_body("queued"), timeout=1)
    job_id = only_job(redis_client)
    assert await state_of(gateway, job_id, "cancelled") == "cancelled"
    start_worker("openai", env=fleet_env(mock_upstream))
    await asyncio.sleep(1.5)
    assert mock_upstream.requests_to(CHAT) == 0


async def test_priority_from_service_tier_and_the_header(
    door: ServerProcess, gateway: ModelGateway
) -> None:
    cases = [
        ({"service_tier": "flex"}, {}, "low"),
        ({"service_tier": "priority"}, {}, "high"),
        ({"service_tier": "auto"}, {}, "normal"),
        ({"service_tier": "flex"}, {"X-L04-Priority": "high"}, "high"),
    ]
    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:
        for fields, headers, priority in cases:
            answer = await client.post(
                CHAT, json=chat_body("p", model="mock", **fields), headers=headers
            )
            assert answer.status_code == 200, answer.text
            status = await (await gateway.job(answer.headers["x-l04-job-id"])).status()
            assert status.priority == priority, (fields, headers)
        bad = await client.post(
            CHAT, json=chat_body("p", model="mock"), headers={"X-L04-Priority": "urgent"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-L04-Priority"


async def test_the_deadline_header(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(no_auth=True, env={"L04_DEADLINE_GRACE": "0.5"})  # no worker
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        answer = await client.post(CHAT, json=chat_body("late"), headers={"X-L04-Timeout": "1"})
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "E4404"
        assert time.monotonic() - started < 5
        for bad in ("0", "-1", "soon", "nan", "1e9"):
            refused = await client.post(CHAT, json=chat_body("x"), headers={"X-L04-Timeout": bad})
            assert refused.status_code == 400, bad


async def test_a_full_queue_is_503_with_retry_after(
    start_server: Callable[..., ServerProcess], redis_client: redis.Redis
) -> None:
    server = start_server(no_auth=True, env={"L04_QUEUE_MAX_DEPTH": "1"})  # no worker
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        waiting = asyncio.create_task(
            client.post(CHAT, json=chat_body("first"), headers={"X-L04-Timeout": "3"})
        )
        await asyncio.to_thread(only_job, redis_client)  # the first is in the queue
        full = await client.post(CHAT, json=chat_body("second"))
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "E4403"
        assert int(full.headers["retry-after"]) >= 1
        assert (await waiting).status_code == 504


async def test_over_a_limit_waits_and_only_an_unservable_one_gets_429(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Two requests a minute for the model: the second waits (its deadline allows a minute),
    # the third, with a 2 s deadline, cannot be served in time and gets 429.
    start_worker("mock", env={"RATE_LIMIT_REQUESTS_PER_MINUTE": "1"})
    server = start_server(no_auth=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        first = await client.post(CHAT, json=chat_body("a", model="mock"))
        assert first.status_code == 200
        refused = await client.post(
            CHAT, json=chat_body("b", model="mock"), headers={"X-L04-Timeout": "2"}
        )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "E4401"
    assert int(refused.headers["retry-after"]) >= 1


async def test_an_idempotency_key_is_one_request(door: ServerProcess) -> None:
    headers = {"Idempotency-Key": "one-meaning"}
    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:
        first = await client.post(CHAT, json=chat_body("a", model="mock"), headers=headers)
        assert first.status_code == 200
        other = await client.post(CHAT, json=chat_body("b", model="mock"), headers=headers)
        assert other.status_code == 400
        assert other.json()["error"]["param"] == "Idempotency-Key"
        elsewhere = await client.post(
            "/v1/messages",
            json={
                "model": "mock",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "a"}],
            },
            headers=headers,
        )
        assert elsewhere.status_code == 400
        again = await client.post(CHAT, json=chat_body("a", model="mock"), headers=headers)
        assert again.json()["choices"] == first.json()["choices"]


async def test_an_error_answer_carries_the_request_and_job_ids(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(no_auth=True)  # no worker: the job's deadline passes in the queue
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        late = await client.post(
            CHAT,
            json=chat_body("late"),
            headers={"X-L04-Timeout": "1", "X-Request-Id": "req-7"},
        )
    assert late.status_code == 504
    assert late.headers["x-request-id"] == "req-7"
    assert late.headers["x-l04-job-id"]
