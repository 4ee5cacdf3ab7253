"""Operating the fleet: Prometheus metrics scraped over HTTP from two workers and a producer, and
usage events delivered to a real local L01 server that goes down and comes back."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway_client import GatewayError, ModelGateway
from gateway_client.metrics import serve_metrics
from l04.redis_server import free_port
from tests.conftest import health_with_workers, make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    )


async def test_workers_and_a_producer_serve_the_seeds_metrics(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        start_worker(
            "mock",
            env={
                "L04_METRICS_PORT": str(port),
                "RATE_LIMIT_REQUESTS_PER_MINUTE": "12",
                "L04_RATE_LIMIT_WINDOW": "2",
            },
        )
    producer_port = serve_metrics(0, redis_url=redis_url, providers=["mock"])
    before = scrape(producer_port)

    slow = {"mock": {"latency_ms": 150}}
    answered = await asyncio.gather(
        *(gateway.execute(make_request(f"job {i}", metadata=slow)) for i in range(20))
    )
    cached = await gateway.execute(make_request("job 0", metadata=slow))
    failing = {"mock": {"fail": "E4201"}}
    for i in range(2):
        with pytest.raises(GatewayError):
            await gateway.execute(make_request(f"bad {i}", metadata=failing))
    assert cached.cached and len(answered) == 20

    workers = [scrape(port) for port in ports]
    success = [
        total(w, "l04_inference_requests_total", status="success", model="mock") for w in workers
    ]
    assert sum(success) == 21 and all(s > 0 for s in success)  # both did work
    errors = sum(total(w, "l04_inference_requests_total", status="error") for w in workers)
    assert errors == 2
    assert sum(total(w, "l04_cache_hits_total") for w in workers) == 1
    # Each claim looks the cache up, a deferred job's return too: at least one miss per job.
    assert sum(total(w, "l04_cache_misses_total") for w in workers) >= 22
    assert (
        sum(total(w, "l04_token_usage_total", direction="input", model="mock") for w in workers) > 0
    )
    assert sum(total(w, "l04_inference_latency_seconds_count", model="mock") for w in workers) == 21
    # 22 calls at 12 per 2 s: some waited in the queue, and were counted as deferred.
    assert sum(total(w, "l04_rate_limit_rejections_total", outcome="deferred") for w in workers) > 0
    for w in workers:
        assert total(w, "l04_gateway_info", layer="L04") == 1
        assert total(w, "l04_worker_processes", queue="l04.mock") == 1
        assert ("l04_usage_outbox_events", ()) in w
        assert ("l04_circuit_breaker_state", (("provider", "mock"),)) in w
        assert total(w, "l04_active_requests", provider="mock") == 0
        assert total(w, "l04_inference_latency_seconds_bucket", le="120.0") >= 0
        assert ("l04_queue_depth", (("priority", "low"), ("queue", "l04.mock"))) in w
        assert total(w, "l04_queue_wait_seconds_count") > 0

    after = scrape(producer_port)
    assert (
        total(after, "l04_jobs_submitted_total") - total(before, "l04_jobs_submitted_total") == 23
    )
    results = total(after, "l04_job_results_total", status="success") - total(
        before, "l04_job_results_total", status="success"
    )
    assert results == 21
    assert total(after, "l04_gateway_info", layer="L04") == 1
    assert total(after, "l04_circuit_breaker_state", provider="mock") == 0


@dataclass
class L01Server:
    """A stand-in for the L01 data layer: records every event it is sent."""

    port: int = field(default_factory=free_port)
    received: list[dict[str, object]] = field(default_factory=list)
    fail_after_recording: int = 0  # answer 500 to this many events it did record
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        assert request.headers["Authorization"] == "Bearer l01-test-key"
        if self.fail_after_recording > 0:
            self.fail_after_recording -= 1
            return web.json_response({"error": "try again"}, status=500)
        return web.json_response({"ok": True}, status=201)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/events", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def l01() -> AsyncIterator[L01Server]:
    server = L01Server()
    await server.up()
    yield server
    await server.down()


async def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_usage_events_survive_an_L01_outage(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess], l01: L01Server
) -> None:
    start_worker(
        "mock",
        env={"L01_BASE_URL": f"http://127.0.0.1:{l01.port}", "L01_API_KEY": "l01-test-key"},
    )
    jobs = [await gateway.execute(make_request(f"before {i}")) for i in range(5)]
    await wait_for(lambda: len(l01.received) >= 5, timeout=10)

    await l01.down()
    jobs += await asyncio.gather(*(gateway.execute(make_request(f"during {i}")) for i in range(10)))
    await asyncio.sleep(1.5)  # the shipper tries, fails, backs off
    l01.fail_after_recording = 2  # recorded but answered 500: these two will come again
    await l01.up()
    await wait_for(
        lambda: {e["event_id"] for e in l01.received} >= {f"l04-usage-{j.job_id}" for j in jobs},
        timeout=30,
    )
    ids = Counter(str(e["event_id"]) for e in l01.received)
    assert set(ids) == {f"l04-usage-{j.job_id}" for j in jobs}  # every event, nothing else
    # Each of the two 500s made exactly one more delivery, under the same event id.
    assert sum(ids.values()) == len(jobs) + 2
    event = next(e for e in l01.received if e["job_id"] == jobs[0].job_id)
    assert event["event_type"] == "inference_completed"
    assert event["agent_did"] == "did:key:test" and event["model_id"] == "mock"
    assert event["total_tokens"] == jobs[0].token_usage.total_tokens
    assert {"latency_ms", "cost_usd", "cached"} <= set(event)
    assert "l01-test-key" not in json.dumps(l01.received)


async def test_two_workers_share_a_provider_and_limits_and_breakers_hold_across_them(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
) -> None:
    limited = {"RATE_LIMIT_REQUESTS_PER_MINUTE": "10", "L04_RATE_LIMIT_WINDOW": "2"}
    start_worker("mock", env=limited)
    start_worker("mock", env=limited)
    start_worker(
        "openai",
        env={
            "OPENAI_BASE_URL": f"{mock_upstream.url}/v1",
            "OPENAI_API_KEY": "sk-test-health",
            "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2",
            "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "60",
        },
    )
    handles = [
        await gateway.submit(make_request(f"shared {i}", metadata={"mock": {"latency_ms": 50}}))
        for i in range(25)
    ]
    await asyncio.gather(*(h.result(timeout=30) for h in handles))
    jobs = [redis_client.hgetall(f"l04:job:{{{h.job_id}}}") for h in handles]
    assert len({job[b"worker"] for job in jobs}) == 2  # the work is shared
    finished = sorted(int(job[b"finished_ms"]) for job in jobs)
    for i in range(len(finished) - 10):  # one limit for both: at most 10 in any 2 s
        assert finished[i + 10] - finished[i] >= 2000 - 500  # run times vary under load

    mock_upstream.faults({"status": 503, "count": 1000, "path": "/v1/chat/completions"})
    for i in range(2):
        with pytest.raises(GatewayError):
            await gateway.execute(make_request(f"down {i}", model_id="gpt-4o-mini"))
    report = await health_with_workers(gateway, {"l04.mock": 2, "l04.openai": 1})
    assert report["redis"]["ok"]
    assert len(report["workers"]["l04.mock"]) == 2 and len(report["workers"]["l04.openai"]) == 1
    assert report["breakers"]["openai"] == "open" and report["breakers"]["mock"] == "closed"
    assert report["providers"]["mock"]["healthy"] and report["providers"]["mock"]["workers"] == 2
    assert report["providers"]["openai"]["breaker"] == "open"
    assert not report["providers"]["openai"]["healthy"]
    assert report["providers"]["anthropic"]["workers"] == 0
    assert report["providers"]["anthropic"]["problems"] == ["no worker"]
    assert report["gateway"] == "degraded"
    assert "openai: breaker open" in report["summary"]
    assert "anthropic: no worker" in report["summary"]
    assert report["queues"]["l04.mock"] == {"high": 0, "normal": 0, "low": 0}


async def test_a_job_answered_here_is_never_stopped_as_lost(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    """The heartbeat used to take a job whose answer had just been written (its lease gone) for
    one that ended elsewhere, and cancel what it still had to do: its usage record for L01.
    A quarter of 600 jobs were 'stopped' so, each a usage record at risk."""
    # A beat every 0.22 s; no L01 answers, so every usage record stays in the outbox.
    env = {"L04_VISIBILITY_TIMEOUT": "2", "L01_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    worker = start_worker("mock", 200, env)
    quick = {"mock": {"latency_ms": 300}}
    handles = [await gateway.submit(make_request(f"usage {i}", metadata=quick)) for i in range(600)]
    await asyncio.gather(*(h.result(timeout=60) for h in handles))
    await asyncio.sleep(0.5)
    assert worker.log().count("ended elsewhere") == 0
    assert worker.log().count("'stopped'") == 0
    assert redis_client.xlen("l04:usage") == 600
