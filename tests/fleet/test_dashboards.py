"""The Grafana dashboard and the Prometheus alerts ask only for metrics the fleet exports: their
PromQL names are compared with a scrape of a real worker and of a real ``l04 serve`` that
answered a few jobs (successes, a stream, a cache hit, a retried error, a deferral, a refused
submit)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis
from prometheus_client import REGISTRY, generate_latest

from gateway_client import GatewayError, ModelGateway
from gateway_core import __version__
from l04.redis_server import LocalRedis, free_port
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import ServerProcess, WorkerProcess
from tests.promql import (
    alert_rules,
    dashboard,
    dashboard_exprs,
    defined_sample_names,
    metric_names,
    sample_names,
)

#: Counted only on an event these jobs do not cause (a failover needs a second model of a chain,
#: an orphan a lost broker message, a cache error a broken embedder, a webhook delivery a
#: configured receiver): compared with the metric definitions, since prometheus_client exports a
#: labelled metric only after its first use.
EVENT_ONLY = {
    "l04_failovers_total",
    "l04_orphaned_jobs_total",
    "l04_cache_errors_total",
    "l04_webhook_deliveries_total",
}


def _drive(redis_url: str, door: ServerProcess) -> None:
    """Jobs through the door (the producer and l04_http_* metrics are the server's) and through
    a Python producer (for the mock's per-request faults)."""
    with openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0) as sdk:
        ask = [{"role": "user", "content": "dashboard"}]
        sdk.chat.completions.create(model="mock", messages=ask)  # type: ignore[arg-type]
        sdk.chat.completions.create(model="mock", messages=ask)  # type: ignore[arg-type] # cached
        stream = sdk.chat.completions.create(
            model="mock",
            messages=[{"role": "user", "content": "streamed"}],
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    async def producer() -> None:
        async with ModelGateway(redis_url=redis_url) as gateway:
            # A provider error: retried within the job, then the job's error.
            with pytest.raises(GatewayError):
                await gateway.execute(make_request("fails", metadata={"mock": {"fail": "E4200"}}))
            with pytest.raises(GatewayError):  # refused at submit: E4001
                await gateway.submit(make_request("refused", model_id="nope"))
            # 8 at once over a limit of 6 per 2 s: some wait in the queue (deferred).
            await asyncio.gather(*(gateway.execute(make_request(f"many {i}")) for i in range(8)))

    asyncio.run(producer())


@pytest.fixture(scope="module")
def scrapes(redis_server: LocalRedis) -> Iterator[tuple[str, str, str]]:
    """The text of a worker's and of the server's /metrics after the jobs above, and this
    process's registry: a Python producer's, which ``serve_metrics`` would serve."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    port = free_port()
    env = {
        **FAST_RECOVERY,
        "L04_METRICS_PORT": str(port),
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "6",
        "L04_RATE_LIMIT_WINDOW": "2",
    }
    worker = WorkerProcess(redis_server.url, "mock", 50, env).start()
    server = ServerProcess(redis_server.url, no_auth=True).start()
    try:
        _drive(redis_server.url, server)
        worker_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        server_text = httpx.get(f"{server.url}/metrics", timeout=10).text
        yield worker_text, server_text, generate_latest(REGISTRY).decode()
    finally:
        server.stop(timeout=10)
        worker.stop(timeout=10)


def test_every_dashboard_and_alert_query_names_an_exported_metric(
    scrapes: tuple[str, str, str],
) -> None:
    exported = set().union(*(sample_names(text) for text in scrapes))
    defined = defined_sample_names()
    assert defined >= EVENT_ONLY
    queried = {name for expr in dashboard_exprs(dashboard()) for name in metric_names(expr)}
    alerted = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert queried and alerted <= queried  # what pages an operator is on the dashboard too
    assert queried - exported - EVENT_ONLY == set()
    # Each group the dashboard promises has its metrics exported by a real process.
    for needed in (
        "l04_inference_requests_total",
        "l04_inference_errors_total",
        "l04_retries_total",
        "l04_inference_latency_seconds_bucket",
        "l04_time_to_first_token_seconds_bucket",
        "l04_queue_wait_seconds_bucket",
        "l04_queue_depth",
        "l04_circuit_breaker_state",
        "l04_rate_limit_rejections_total",
        "l04_cache_hits_total",
        "l04_cost_usd_total",
        "l04_token_usage_total",
        "l04_active_requests",
        "l04_worker_processes",
        "l04_usage_outbox_events",
        "l04_submit_refusals_total",
        "l04_http_requests_total",
        "l04_http_time_to_first_byte_seconds_bucket",
        "l04_gateway_info",
    ):
        assert needed in queried and needed in exported, needed


def test_the_info_metric_once_per_endpoint(scrapes: tuple[str, str, str]) -> None:
    for text in scrapes[:2]:
        lines = [line for line in text.splitlines() if line.startswith("l04_gateway_info")]
        assert lines == [f'l04_gateway_info{{layer="L04",version="{__version__}"}} 1.0']
        assert "l04_gateway{" not in text  # the old gauge is gone
    # The door reports every catalog provider's queue, served or not (for L04QueueWithoutWorkers).
    assert 'l04_queue_depth{priority="high",queue="l04.openai"}' in scrapes[1]
