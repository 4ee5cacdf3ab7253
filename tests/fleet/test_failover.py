"""A failing provider opens its breaker for every worker; traffic fails over and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway_client import ModelGateway, RoutingError
from l04.mock_upstream import REPLY
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

CHAT = "/v1/chat/completions"
pytestmark = pytest.mark.faults


@pytest.fixture
def two_workers(
    start_worker: Callable[..., WorkerProcess], upstream: MockUpstreamProcess
) -> list[WorkerProcess]:
    upstream.reset()
    env = {
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "OPENAI_API_KEY": "sk-test-failover",
        "ANTHROPIC_BASE_URL": upstream.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-failover",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2",
        "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "2",
    }
    return [start_worker("openai,anthropic", env=env), start_worker("openai,anthropic", env=env)]


def with_fallback() -> object:
    return make_request(
        "hi", model_id="gpt-4o-mini", routing={"fallback_models": ["claude-3-5-sonnet-20241022"]}
    )


async def test_breaker_opens_for_all_fails_over_and_recovers(
    gateway: ModelGateway, two_workers: list[WorkerProcess], upstream: MockUpstreamProcess
) -> None:
    upstream.faults({"status": 503, "count": 1000, "path": CHAT})  # OpenAI is down
    first = await gateway.execute(with_fallback())  # type: ignore[arg-type]
    assert (first.provider, first.model_id, first.content) == (
        "anthropic",
        "claude-3-5-sonnet-20241022",
        REPLY,
    )
    second = await gateway.execute(with_fallback())  # type: ignore[arg-type]
    assert second.provider == "anthropic"
    # Two jobs, each retried three times, opened the breaker (threshold 2): from now on no
    # worker calls OpenAI, and the router skips it at submit.
    calls = upstream.requests_to(CHAT)
    assert calls == 6
    for _ in range(4):
        assert (await gateway.execute(with_fallback())).provider == "anthropic"  # type: ignore[arg-type]
    assert upstream.requests_to(CHAT) == calls

    # OpenAI comes back; after the recovery timeout one probe closes the breaker.
    upstream.reset()
    await asyncio.sleep(2.2)
    answered = await gateway.execute(make_request("hi", model_id="gpt-4o-mini"))
    assert answered.provider == "openai"
    assert (await gateway.execute(with_fallback())).provider == "openai"  # type: ignore[arg-type]
    logs = "".join(w.log() for w in two_workers)
    assert "failing over to claude-3-5-sonnet-20241022" in logs


async def test_all_models_down_is_E4102(
    gateway: ModelGateway, two_workers: list[WorkerProcess], upstream: MockUpstreamProcess
) -> None:
    upstream.faults({"status": 500, "count": 1000})  # every provider is down
    with pytest.raises(RoutingError) as caught:
        await gateway.execute(with_fallback())  # type: ignore[arg-type]
    assert caught.value.code == "E4102"
    assert caught.value.details["chain"] == ["gpt-4o-mini", "claude-3-5-sonnet-20241022"]
