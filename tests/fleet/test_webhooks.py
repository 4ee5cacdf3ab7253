"""Signed webhooks end to end: real workers deliver from the Redis outbox to a real receiver,
and the official openai SDK's ``webhooks.unwrap`` verifies every request it got.

One worker serves the module (started by the first test that needs it); the first test runs
before it, with a worker of its own that it SIGKILLs. The backoff starts at 2 s (so that three
attempts carry three distinct ``webhook-timestamp`` seconds) and an attempt times out after 1 s
(so a dead deliverer's lease lapses 6 s after it took the delivery).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
import redis

from gateway_client.gateway import ModelGateway
from gateway_client.webhook_outbox import WebhookOutbox
from gateway_core import keys
from gateway_core.virtual_keys import VirtualKey, VirtualKeyStore
from gateway_core.webhooks import new_secret
from l04.redis_server import LocalRedis, free_port
from tests.conftest import make_request
from tests.processes import ServerProcess, WorkerProcess

GLOBAL_SECRET = new_secret()


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: str

    def unwrap(self, secret: str) -> Any:
        """The event, as the SDK verifies it (raises if the signature or timestamp is bad)."""
        return openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(
            self.body, self.headers
        )


@dataclass
class Receiver:
    """A webhook receiver: records every request by path; answers each path's scripted statuses
    in turn (200 after them); a path in ``hang`` waits (until released) before answering."""

    port: int
    got: dict[str, list[Received]] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    hang: dict[str, threading.Event] = field(default_factory=dict)
    held: list[threading.Event] = field(default_factory=list)  # released at the end
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.got.get(path, []))

    def wait_for(self, path: str, count: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests(path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.requests(path))} requests, not {count}")

    def events(self, path: str, secret: str) -> list[Any]:
        return [r.unwrap(secret) for r in self.requests(path)]


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            with receiver.lock:
                receiver.got.setdefault(self.path, []).append(
                    Received(time.monotonic(), dict(self.headers.items()), body)
                )
                planned = receiver.script.get(self.path) or []
                status = planned.pop(0) if planned else 200
                hang = receiver.hang.pop(self.path, None)
                if hang is not None:
                    receiver.held.append(hang)
            if hang is not None:
                hang.wait(30)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver(free_port())
    server = serve(found)
    yield found
    for event in [*found.hang.values(), *found.held]:
        event.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fleet(redis_server: LocalRedis, receiver: Receiver) -> Iterator[dict[str, str]]:
    """The module's Redis (emptied once) and the workers' environment."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield {
        "L04_WEBHOOK_URL": receiver.url("/global"),
        "L04_WEBHOOK_SECRET": GLOBAL_SECRET,
        "L04_WEBHOOK_BACKOFF_S": "2",
        "L04_WEBHOOK_TIMEOUT": "1",
    }


@pytest.fixture(scope="module")
def worker(redis_server: LocalRedis, fleet: dict[str, str]) -> Iterator[WorkerProcess]:
    process = WorkerProcess(redis_server.url, "mock", 20, fleet, name="webhooks").start()
    yield process
    process.stop(timeout=10)


async def a_key(redis_url: str, path: str, receiver: Receiver) -> tuple[VirtualKey, str]:
    """A virtual key with its own webhook at ``path``, and that webhook's secret."""
    client = redis.asyncio.Redis.from_url(redis_url)
    secret = new_secret()
    try:
        key, _ = await VirtualKeyStore(client).create(
            agent_did="did:key:hooks", webhook_url=receiver.url(path), webhook_secret=secret
        )
    finally:
        await client.aclose()
    return key, secret


async def add_event(redis_url: str, event_type: str, object_id: str, key_id: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await WebhookOutbox(client).add(event_type, object_id, key_id)
    finally:
        await client.aclose()


def test_a_worker_killed_holding_a_delivery_leaves_it_to_another(
    request: pytest.FixtureRequest,
    redis_server: LocalRedis,
    fleet: dict[str, str],
    receiver: Receiver,
) -> None:
    key, secret = asyncio.run(a_key(redis_server.url, "/killed", receiver))
    receiver.hang["/killed"] = threading.Event()
    doomed = WorkerProcess(redis_server.url, "mock", 5, fleet, name="doomed").start()
    try:
        asyncio.run(add_event(redis_server.url, "batch.completed", "batch_k1", key.id))
        receiver.wait_for("/killed", 1, timeout=5)  # the doomed worker is posting it
        doomed.kill()
    finally:
        doomed.kill()
    request.getfixturevalue("worker")  # another worker: it takes the delivery when its lease lapses
    first, second = receiver.wait_for("/killed", 2, timeout=20)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    event = second.unwrap(secret)
    assert event.type == "batch.completed" and event.data.id == "batch_k1"
    assert second.at - first.at < 15  # within the lease (1 s timeout + 5 s) and a poll


def test_a_background_response_sends_completed_to_both_webhooks_signed_with_each_secret(
    redis_server: LocalRedis, worker: WorkerProcess, receiver: Receiver
) -> None:
    key_secret_holder: dict[str, str] = {}

    async def with_secret() -> tuple[str, float]:
        key, secret = await a_key(redis_server.url, "/key-a", receiver)
        key_secret_holder["secret"] = secret
        async with ModelGateway(redis_url=redis_server.url) as gateway:
            handle = await gateway.submit(make_request("hooks"), key_id=key.id, notify="response")
            await handle.result(timeout=30)
            return handle.job_id, time.monotonic()

    job_id, answered_at = asyncio.run(with_secret())
    secret = key_secret_holder["secret"]
    (to_key,) = receiver.wait_for("/key-a", 1, timeout=10)
    event = to_key.unwrap(secret)
    assert event.type == "response.completed" and event.data.id == f"resp_{job_id}"
    assert event.object == "event" and event.id == to_key.headers["webhook-id"]
    assert abs(event.created_at - time.time()) < 10
    with pytest.raises(openai.InvalidWebhookSignatureError):
        to_key.unwrap(GLOBAL_SECRET)  # each webhook has its own secret
    to_global = [
        r for r in receiver.wait_for("/global", 1, timeout=10) if f"resp_{job_id}" in r.body
    ]
    (global_event,) = [r.unwrap(GLOBAL_SECRET) for r in to_global]
    assert global_event.id == event.id  # one event, one webhook-id, wherever it goes
    first_attempt_s = min(to_key.at, to_global[0].at) - answered_at
    print(f"first webhook attempt {first_attempt_s * 1000:.0f} ms after the answer")
    assert first_attempt_s < 5


def test_a_receiver_answering_500_twice_gets_the_event_three_times_with_one_id(
    redis_server: LocalRedis, worker: WorkerProcess, receiver: Receiver
) -> None:
    key, secret = asyncio.run(a_key(redis_server.url, "/flaky", receiver))
    receiver.script["/flaky"] = [500, 500]
    asyncio.run(add_event(redis_server.url, "batch.failed", "batch_f1", key.id))
    attempts = receiver.wait_for("/flaky", 3, timeout=20)
    time.sleep(1.0)
    assert len(receiver.requests("/flaky")) == 3  # the 200 ended it
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert len(set(stamps)) == 3 and stamps == sorted(stamps)  # each signed afresh
    for attempt in attempts:
        assert attempt.unwrap(secret).data.id == "batch_f1"
    assert attempts[1].at - attempts[0].at >= 0.9  # the backoff: 2 s, jittered down to 1


def test_a_receiver_that_times_out_is_retried_and_holds_up_no_other(
    redis_server: LocalRedis, worker: WorkerProcess, receiver: Receiver
) -> None:
    slow_key, slow_secret = asyncio.run(a_key(redis_server.url, "/slow", receiver))
    fast_key, fast_secret = asyncio.run(a_key(redis_server.url, "/fast", receiver))
    receiver.hang["/slow"] = threading.Event()  # its first request never gets an answer
    asyncio.run(add_event(redis_server.url, "batch.completed", "batch_s1", slow_key.id))
    receiver.wait_for("/slow", 1, timeout=5)
    added = time.monotonic()
    asyncio.run(add_event(redis_server.url, "batch.completed", "batch_q1", fast_key.id))
    (fast,) = receiver.wait_for("/fast", 1, timeout=5)
    assert fast.at - added < 1.0  # while the slow one still hangs
    assert fast.unwrap(fast_secret).data.id == "batch_q1"
    first, second = receiver.wait_for("/slow", 2, timeout=10)  # timed out after 1 s: again
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.unwrap(slow_secret).data.id == "batch_s1"
    assert second.at - first.at >= 1.0


def test_cancelled_and_incomplete_responses_send_their_events(
    redis_server: LocalRedis, worker: WorkerProcess, receiver: Receiver
) -> None:
    async def run() -> tuple[str, str]:
        async with ModelGateway(redis_url=redis_server.url) as gateway:
            slow = make_request("slow", metadata={"mock": {"latency_ms": 20_000}})
            cancelled = await gateway.submit(slow, notify="response:resp_custom1")
            await asyncio.sleep(0.3)
            assert await cancelled.cancel()
            short = make_request("one two three four five six seven eight", max_tokens=2)
            incomplete = await gateway.submit(short, notify="response")
            await incomplete.result(timeout=30)
            return cancelled.job_id, incomplete.job_id

    _, incomplete_id = asyncio.run(run())
    deadline = time.monotonic() + 10
    wanted = {"response.cancelled": "resp_custom1", "response.incomplete": f"resp_{incomplete_id}"}
    seen: dict[str, str] = {}
    while time.monotonic() < deadline and seen != wanted:
        events = receiver.events("/global", GLOBAL_SECRET)
        seen = {e.type: e.data.id for e in events if e.data.id in wanted.values()}
        time.sleep(0.05)
    assert seen == wanted


def test_a_receiver_down_then_up_gets_the_event_later(
    redis_server: LocalRedis, worker: WorkerProcess
) -> None:
    late = Receiver(free_port())  # nothing listens there yet
    key, secret = asyncio.run(a_key(redis_server.url, "/late", late))
    asyncio.run(add_event(redis_server.url, "batch.expired", "batch_l1", key.id))
    time.sleep(2.5)  # the first attempts are refused
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.zcard(keys.WEBHOOK_OUTBOX) >= 1  # waiting for its retry
    finally:
        client.close()
    server = serve(late)
    try:
        (got,) = late.wait_for("/late", 1, timeout=15)
        event = got.unwrap(secret)
        assert event.type == "batch.expired" and event.data.id == "batch_l1"
    finally:
        server.shutdown()
        server.server_close()
    log = worker.log()
    assert secret not in log and GLOBAL_SECRET not in log
    assert json.dumps(secret)[1:-1] not in log


def test_a_background_response_over_http_announces_its_end_to_its_keys_webhook(
    redis_server: LocalRedis, worker: WorkerProcess, receiver: Receiver
) -> None:
    """The whole path a user takes: a key made with a webhook, ``responses.create(background=
    True)`` through ``l04 serve`` with the openai SDK, and the event at the key's receiver."""
    secret = new_secret()

    async def key_and_token() -> tuple[VirtualKey, str]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            return await VirtualKeyStore(client).create(
                agent_did="did:key:http-hooks",
                webhook_url=receiver.url("/http-key"),
                webhook_secret=secret,
            )
        finally:
            await client.aclose()

    _, token = asyncio.run(key_and_token())
    server = ServerProcess(redis_server.url).start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0) as sdk:
            created = sdk.responses.create(model="mock", input="announce me", background=True)
            assert created.status == "queued"
            (got,) = receiver.wait_for("/http-key", 1, timeout=15)
            event = got.unwrap(secret)
            assert event.type == "response.completed" and event.data.id == created.id
            assert sdk.responses.retrieve(created.id).status == "completed"
    finally:
        server.stop(timeout=10)
    assert token not in server.log() and secret not in server.log()
