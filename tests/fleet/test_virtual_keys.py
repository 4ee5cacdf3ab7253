"""A virtual key's own limits, applied by real workers through the same admission as every job:
its requests per minute shared by every producer, its quotas (E4402), no limits when it has
none, and a job whose key is revoked after submit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis

from config.catalog import load_catalog
from gateway_client import InferenceResponse, KeyRefused, ModelGateway, RateLimitError
from gateway_core.job_records import text
from gateway_core.virtual_keys import VirtualKey, VirtualKeyStore
from tests.conftest import make_request
from tests.processes import ServerProcess, WorkerProcess

# The limiter's window here: "per minute" means per 5 s, long enough that a loaded machine still
# makes the key's three calls inside one window.
WINDOW_S = 5.0
AGENT = "did:key:keyed-agent"

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-b"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-priced"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
cost_per_1k_input = 1.0
cost_per_1k_output = 1.0
"""


@pytest.fixture
def catalog_path(tmp_path: Path) -> str:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    return str(path)


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess], catalog_path: str) -> WorkerProcess:
    env = {"L04_CATALOG": catalog_path, "L04_RATE_LIMIT_WINDOW": str(WINDOW_S)}
    return start_worker("mock", concurrency=20, env=env)


@pytest.fixture
async def producers(redis_url: str, catalog_path: str) -> AsyncIterator[list[ModelGateway]]:
    """Two producers, as two front-door servers would be: nothing shared but Redis."""
    gateways = [
        ModelGateway(redis_url=redis_url, catalog=load_catalog(catalog_path)) for _ in range(2)
    ]
    yield gateways
    for gateway in gateways:
        await gateway.close()


async def a_key(gateway: ModelGateway, **limits: object) -> VirtualKey:
    record, _ = await VirtualKeyStore(gateway.redis).create(agent_did=AGENT, **limits)  # type: ignore[arg-type]
    return record


def job_field(r: redis.Redis, job_id: str, field: str) -> str:
    return text(r.hget(f"l04:job:{{{job_id}}}", field))


async def test_a_keys_rpm_holds_across_producers_and_models(
    producers: list[ModelGateway], worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    one, two = producers
    key = await a_key(one, rpm=2)
    started = time.monotonic()
    first = [
        await one.submit(make_request("a", agent_did=AGENT, model_id="mock"), key_id=key.id),
        await two.submit(make_request("b", agent_did=AGENT, model_id="mock-b"), key_id=key.id),
    ]
    await asyncio.gather(*(h.result(timeout=10) for h in first))
    # Without the key the same agent is not limited (the models and the agent have no limits).
    await two.execute(make_request("free", agent_did=AGENT, model_id="mock", fail_fast=True))
    # The third with the key, from either producer and on either model, is over its 2.
    with pytest.raises(RateLimitError) as refused:
        handle = await two.submit(
            make_request("c", agent_did=AGENT, model_id="mock-b", fail_fast=True), key_id=key.id
        )
        await handle.result(timeout=10)
    assert time.monotonic() - started < WINDOW_S  # still inside the first window
    error = refused.value
    assert error.code == "E4401"
    assert error.details["limit"] == "key requests per minute" and error.details["capacity"] == 2
    # Until the sub-bucket the first admission went to leaves the window: at most one
    # sub-bucket (window / 60) longer than the window.
    assert 0 < error.retry_after <= WINDOW_S * 61 / 60  # type: ignore[operator]
    assert key.id in error.message

    # Without fail_fast the third waits in the queue (deferred), then is answered.
    waiting = await one.submit(make_request("d", agent_did=AGENT, model_id="mock"), key_id=key.id)
    answer = await waiting.result(timeout=15)
    assert isinstance(answer, InferenceResponse) and answer.attempt == 1
    assert int(job_field(redis_client, waiting.job_id, "deferrals") or 0) >= 1
    finished = [int(job_field(redis_client, h.job_id, "finished_ms")) for h in first]
    last = int(job_field(redis_client, waiting.job_id, "finished_ms"))
    assert last - min(finished) >= WINDOW_S * 1000 - 500  # no 3 within one sliding window


@pytest.mark.parametrize(
    ("limits", "model", "which"),
    [({"token_quota": 200}, "mock", "tokens"), ({"cost_quota": 0.1}, "mock-priced", "cost")],
)
async def test_a_spent_key_quota_is_E4402(
    producers: list[ModelGateway],
    worker: WorkerProcess,
    limits: dict[str, object],
    model: str,
    which: str,
) -> None:
    one, two = producers
    key = await a_key(one, **limits)
    answered = 0
    for i in range(20):
        gateway = producers[i % 2]
        request = make_request(f"q{i}", agent_did=AGENT, model_id=model, max_tokens=30)
        try:
            await (await gateway.submit(request, key_id=key.id)).result(timeout=10)
        except RateLimitError as error:
            assert error.code == "E4402" and not error.retryable
            assert error.details["quota"] == which and error.details["key_id"] == key.id
            assert error.details["used"] <= error.details["limit"]
            assert f"key {key.id}" in error.message
            break
        answered += 1
    else:
        pytest.fail("the key's quota never ran out")
    assert answered >= 2
    # The agent itself has no quota: the same agent without the key is still served.
    await two.execute(make_request("free", agent_did=AGENT, model_id=model, max_tokens=30))


async def test_a_key_without_limits_adds_none(
    producers: list[ModelGateway], worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    key = await a_key(producers[0])
    handles = [
        await producers[i % 2].submit(
            make_request(f"n{i}", agent_did=AGENT, model_id=("mock", "mock-b")[i % 2]),
            key_id=key.id,
        )
        for i in range(12)
    ]
    answers = await asyncio.gather(*(h.result(timeout=15) for h in handles))
    assert all(isinstance(a, InferenceResponse) and a.attempt == 1 for a in answers)
    assert all(job_field(redis_client, h.job_id, "key_id") == key.id for h in handles)
    assert not any(job_field(redis_client, h.job_id, "deferrals") for h in handles)
    written = [text(k) for k in redis_client.scan_iter("*")]
    assert not [k for k in written if "{key:" in k]  # no rate-limit or quota key for it


async def test_a_job_whose_key_is_revoked_after_submit_still_runs(
    producers: list[ModelGateway], worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    one, two = producers
    key = await a_key(one, rpm=1)
    first = await one.submit(make_request("a", agent_did=AGENT), key_id=key.id)
    await first.result(timeout=10)
    queued = await one.submit(make_request("b", agent_did=AGENT), key_id=key.id)
    deadline = time.monotonic() + 5
    while job_field(redis_client, queued.job_id, "state") != "deferred":
        assert time.monotonic() < deadline, "the second job never waited for the key's limit"
        await asyncio.sleep(0.02)
    assert await VirtualKeyStore(two.redis).revoke(key.id)
    # Admitted at submit: it runs when its wait is over (documented), under the key's limits.
    answer = await queued.result(timeout=15)
    assert isinstance(answer, InferenceResponse)
    # New requests with the key are refused by every producer within a second.
    await asyncio.sleep(1.0)
    for gateway in producers:
        with pytest.raises(KeyRefused) as refused:
            await gateway.submit(make_request("c", agent_did=AGENT), key_id=key.id)
        assert refused.value.code == "E4408" and refused.value.details["reason"] == "revoked"


# -- over HTTP: two front-door servers on one Redis ----------------------------------------------


def chat(server: ServerProcess, key: str, text_: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **headers},
        json={"model": "mock", "messages": [{"role": "user", "content": text_}], "max_tokens": 10},
        timeout=30,
    )


def test_two_servers_share_a_keys_limit_and_both_refuse_it_once_revoked(
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    catalog_path: str,
    redis_url: str,
) -> None:
    start_worker("mock", concurrency=20, env={"L04_CATALOG": catalog_path})
    servers = [start_server(env={"L04_CATALOG": catalog_path}) for _ in range(2)]
    made = subprocess.run(
        [str(Path(sys.executable).parent / "l04"), "keys", "create", "--agent", AGENT,
         "--models", "mock", "--rpm", "2", "--json"],
        env={**os.environ, "REDIS_URL": redis_url, "L04_CATALOG": catalog_path},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    created = json.loads(made.stdout)
    key, key_id = created["key"], created["id"]

    # Distinct prompts (a cached answer takes from no limit): two admitted, one per server...
    assert chat(servers[0], key, "one").status_code == 200
    assert chat(servers[1], key, "two").status_code == 200
    # ...and the third, on either server, waits for the key's window, past its 1 s deadline.
    third = chat(servers[0], key, "three", **{"X-L04-Timeout": "1"})
    assert third.status_code == 429 and third.json()["error"]["code"] == "E4401"
    assert "key requests per minute" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) >= 1
    # A model the key may not use: 403, never called.
    other = httpx.post(
        f"{servers[1].url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "mock-b", "messages": [{"role": "user", "content": "b"}]},
        timeout=30,
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "E4409"

    revoked = subprocess.run(
        [str(Path(sys.executable).parent / "l04"), "keys", "revoke", key_id],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True, text=True,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    for server in servers:
        refused = chat(server, key, "after")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "E4408"
        assert key not in refused.text
    assert time.monotonic() - started < 3.0  # at once: no cache to wait out
    for server in servers:
        assert key not in server.log()  # the access log holds the key's id at most
