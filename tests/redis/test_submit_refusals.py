"""Submit refuses bad input before anything is enqueued (a real redis-server, no worker)."""

from __future__ import annotations

import time

import pytest
import redis

from gateway_client import (
    ConfigurationError,
    ModelGateway,
    RoutingError,
    ValidationError,
)
from gateway_core.queues import redis_priority_lists
from tests.conftest import make_request

DEEP: list[object] = []
for _ in range(300):
    DEEP = [DEEP]


def queued_in_redis(client: redis.Redis) -> int:
    return sum(int(client.llen(name)) for name in redis_priority_lists("l04.mock"))


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"messages": []}, "E4501"),
        ({"messages": [{"role": "user", "content": ""}]}, "E4501"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "E4501"),
        ({"max_tokens": 0}, "E4502"),
        ({"temperature": 7}, "E4502"),
        ({"timeout": -1}, "E4502"),
        ({"agent_did": ""}, "E4500"),
        ({"deadline": 1e300}, "E4502"),
        ({"deadline": float("inf")}, "E4502"),
        ({"deadline": float("nan")}, "E4502"),
        ({"deadline": time.time() + 2 * 86400}, "E4502"),
        ({"timeout": float("inf")}, "E4502"),
        ({"agent_did": "did:key:a\nb"}, "E4500"),
        ({"agent_did": "did:key:a\x00"}, "E4500"),
        ({"agent_did": "did:key:*"}, "E4500"),
        ({"agent_did": "did:key:{x}"}, "E4500"),
        ({"agent_did": "agent-7"}, "E4500"),
        ({"agent_did": "did:key:" + "a" * 250}, "E4500"),
        ({"metadata": {"x": object()}}, "E4500"),
        ({"metadata": {"x": float("nan")}}, "E4500"),
        # Plain JSON too deep for the job's record: was a PydanticSerializationError (a 502 at
        # the door, a batch whose line raised it never ended).
        ({"metadata": {"x": DEEP}}, "E4500"),
        ({"tools": [{"name": "f", "parameters": {"x": DEEP}}]}, "E4500"),
        ({"priority": "urgent"}, "E4500"),
        ({"surprise": True}, "E4500"),
    ],
)
async def test_invalid_requests_are_refused_at_submit_and_never_enqueued(
    gateway: ModelGateway, redis_client: redis.Redis, fields: dict[str, object], code: str
) -> None:
    data: dict[str, object] = {
        "agent_did": "did:key:test",
        "messages": [{"role": "user", "content": "hi"}],
        "model_id": "mock",
        **fields,
    }
    with pytest.raises(ValidationError) as caught:
        await gateway.submit(data)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert queued_in_redis(redis_client) == 0
    assert redis_client.keys("l04:job:*") == []


async def test_unknown_model_and_missing_capability_are_refused(
    gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await gateway.submit(make_request("hi", model_id="no-such-model"))
    assert caught.value.code == "E4001"
    with pytest.raises(RoutingError) as routed:
        await gateway.submit(make_request("hi", required_capabilities=["vision"]))
    assert routed.value.code == "E4101"
    assert queued_in_redis(redis_client) == 0


async def test_job_id_must_be_safe_for_redis_keys(gateway: ModelGateway) -> None:
    with pytest.raises(ValidationError) as caught:
        await gateway.submit(make_request("hi"), job_id="a}b{c")
    assert caught.value.code == "E4500"
