"""Operating ``l04 serve``: health, readiness, metrics (summed over --workers), access logs,
the OpenAPI document, draining on SIGTERM, and the refusals that keep it safe."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from gateway_client import ModelGateway
from gateway_core import __version__
from l04.redis_server import LocalRedis
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.processes import ROOT, MockUpstreamProcess, ServerProcess, WorkerProcess

CHAT = "/v1/chat/completions"
SLOW = {"model": "mock", "messages": [{"role": "user", "content": "slow"}]}


def scrape(server: ServerProcess) -> dict[str, float]:
    """Every sample of the server's /metrics, by its line's name and labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_health_and_readiness(
    start_server: Callable[..., ServerProcess], start_worker: Callable[..., WorkerProcess]
) -> None:
    server = start_server()  # with auth: these need no key
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    not_ready = httpx.get(f"{server.url}/ready")
    assert not_ready.status_code == 503  # no worker on any queue yet
    start_worker("mock")
    deadline = time.monotonic() + 15
    while httpx.get(f"{server.url}/ready").status_code != 200:
        assert time.monotonic() < deadline, "not ready with a worker running"
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_the_openapi_document_describes_every_endpoint(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(no_auth=True)
    document = httpx.get(f"{server.url}/openapi.json").json()
    paths = document["paths"]
    for path, method in [
        ("/v1/chat/completions", "post"),
        ("/v1/messages", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model}", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], path
    body = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert "messages" in json.dumps(body)
    assert "bearer" in document["components"]["securitySchemes"]
    chat = paths["/v1/chat/completions"]["post"]
    assert {"400", "401", "429", "503"} <= set(chat["responses"]) and "422" not in chat["responses"]
    assert {p["name"] for p in chat["parameters"]} >= {"Idempotency-Key", "X-L04-Timeout"}


def test_request_metrics_are_summed_over_server_processes(
    start_server: Callable[..., ServerProcess], start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    server = start_server(no_auth=True, workers=2)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(12):
            # A new connection each time: the kernel spreads them over both processes.
            answer = httpx.post(f"{server.url}{CHAT}", json=SLOW, timeout=30)
            assert answer.status_code == 200
        del client
    samples = scrape(server)
    counted = samples[
        'l04_http_requests_total{endpoint="/v1/chat/completions",key_id="none",status="200"}'
    ]
    assert counted == 12
    assert any(name.startswith("l04_http_request_duration_seconds") for name in samples)
    assert any(name.startswith("l04_http_time_to_first_byte_seconds") for name in samples)
    # The Info once for the server, not once per process.
    assert [n for n in samples if n.startswith("l04_gateway_info")] == [
        f'l04_gateway_info{{layer="L04",version="{__version__}"}}'
    ]


def test_access_log_lines_are_json_without_prompts(
    start_server: Callable[..., ServerProcess], start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    server = start_server(no_auth=True)
    secret_prompt = "my-private-prompt-text"
    answer = httpx.post(
        f"{server.url}{CHAT}",
        json={"model": "mock", "messages": [{"role": "user", "content": secret_prompt}]},
        headers={"Authorization": "Bearer sk-l04-not-a-real-key-but-secret"},
        timeout=30,
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the access line is written as the response ends: poll for it
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("endpoint") == CHAT]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert access and access[-1]["http_status"] == 200
    assert access[-1]["job_id"] == answer.headers["x-l04-job-id"]
    assert secret_prompt not in server.log()
    assert "sk-l04-not-a-real-key" not in server.log()


def test_no_auth_is_refused_on_a_non_loopback_address() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "l04", "serve", "--no-auth", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode != 0
    assert b"--no-auth is refused" in completed.stderr


async def test_sigterm_drains(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
) -> None:
    """Open requests finish; a new request on a kept-alive connection gets 503; no new
    connections are accepted; the process exits 0."""
    start_worker("openai", env=fleet_env(mock_upstream))
    server = start_server(no_auth=True)
    mock_upstream.faults({"chunk_delay_ms": 400, "count": 1})
    slow = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "slowly"}],
    }
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as streaming,
        httpx.AsyncClient(base_url=server.url, timeout=30) as kept_alive,
    ):
        assert (await kept_alive.get("/health")).status_code == 200  # opens its connection
        headers = {"X-L04-Timeout": "20"}
        async with streaming.stream("POST", CHAT, json=slow, headers=headers) as stream:
            assert stream.status_code == 200
            pieces = stream.aiter_text()
            await pieces.__anext__()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 3  # the slow stream stays open longer than this
            while (await kept_alive.get("/health")).status_code != 503:
                assert time.monotonic() < deadline, "still healthy after SIGTERM"
                await asyncio.sleep(0.05)
            while True:  # and it stops taking connections
                try:
                    socket.create_connection(("127.0.0.1", server.port), 1).close()
                except OSError:
                    break
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.05)
            rest = "".join([piece async for piece in pieces])
        assert rest.rstrip().endswith("data: [DONE]")
    assert server.process.wait(timeout=30) == 0


@pytest.mark.parametrize("path", ["/v1/models", CHAT, "/v1/messages"])
def test_auth_is_on_by_default(start_server: Callable[..., ServerProcess], path: str) -> None:
    server = start_server()
    method = httpx.get if path == "/v1/models" else httpx.post
    answer = method(f"{server.url}{path}", timeout=10)  # type: ignore[operator]
    assert answer.status_code == 401
    assert answer.json()


async def test_a_frozen_redis_is_a_503_by_the_deadline() -> None:
    """Redis stops answering (SIGSTOP: a network partition): a request gets 503 E4407 soon
    after its deadline instead of hanging, and the server answers again once Redis does."""
    store = LocalRedis().start()
    server = ServerProcess(store.url, no_auth=True, env={"L04_DEADLINE_GRACE": "0.5"}).start()
    try:
        assert store.process is not None
        store.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            frozen = await client.post(CHAT, json=SLOW, headers={"X-L04-Timeout": "2"})
            waited = time.monotonic() - started
            assert frozen.status_code == 503, frozen.text
            assert frozen.json()["error"]["code"] == "E4407"
            assert frozen.headers["retry-after"]
            assert waited < 2 + 0.5 + 3 + 2  # deadline, grace, the door's slack, a margin
            store.process.send_signal(signal.SIGCONT)
            thawed = await client.post(CHAT, json=SLOW, headers={"X-L04-Timeout": "2"})
            assert thawed.status_code in (200, 504)  # no worker here: its deadline passes
            assert "Traceback" not in server.log()
    finally:
        if store.process is not None:
            store.process.send_signal(signal.SIGCONT)
        server.stop()
        store.stop()


async def test_a_stream_cut_by_the_drains_end_says_so_and_cancels_its_job(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    gateway: ModelGateway,
) -> None:
    start_worker("openai", env=fleet_env(mock_upstream))
    server = start_server(no_auth=True, env={"L04_HTTP_DRAIN_GRACE": "1"})
    mock_upstream.faults({"stall_after_chunks": 2, "count": 1})
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "s"}]}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        client.stream("POST", CHAT, json=body) as stream,
    ):
        job_id = stream.headers["x-l04-job-id"]
        pieces = stream.aiter_text()
        await pieces.__anext__()
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        rest = "".join([piece async for piece in pieces])
    assert '"code":"E4400"' in rest  # the last event: the server shut down, retry elsewhere
    assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 1 + 3  # the grace, once
    status = await (await gateway.job(job_id)).status()
    assert status.state == "cancelled"
