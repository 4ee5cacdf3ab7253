"""Generated bad input (hypothesis): every invalid request is refused with an E45xx code before
anything is enqueued, and nothing that gets through crashes a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_client import GatewayError, InferenceRequest, ValidationError
from gateway_client.sync import SyncModelGateway
from gateway_core.request import parse_request
from tests.fleet import WorkerProcess

FIELDS = [
    "agent_did",
    "messages",
    "model_id",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "priority",
    "timeout",
    "deadline",
    "tools",
    "tool_choice",
    "response_format",
    "routing",
    "metadata",
    "enable_cache",
    "semantic_cache",
    "fail_fast",
    "request_id",
    "no_such_field",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "robot", ""])
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={"content": json_values | st.text(max_size=40), "tool_calls": json_values},
    ),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {},
    optional={name: (messages if name == "messages" else json_values) for name in FIELDS},
)


def valid_base() -> dict[str, Any]:
    return {"agent_did": "did:key:fuzz", "messages": [{"role": "user", "content": "hi"}]}


@settings(max_examples=400, deadline=None)
@given(requests)
def test_parse_request_accepts_or_refuses_with_an_E45xx_code(data: dict[str, Any]) -> None:
    try:
        request = parse_request(data)
    except ValidationError as error:
        assert error.code.startswith("E45")
        return
    assert isinstance(request, InferenceRequest)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
def test_one_bad_field_in_a_good_request_is_refused_cleanly(field: str, value: Any) -> None:
    data = {**valid_base(), field: value}
    try:
        parse_request(data)
    except ValidationError as error:
        assert error.code.startswith("E45")


@pytest.fixture
def sync_gateway(redis_url: str) -> Any:
    gateway = SyncModelGateway(redis_url=redis_url)
    yield gateway
    gateway.close()


def queued(client: redis.Redis) -> int:
    return sum(int(client.llen(name)) for name in client.scan_iter("l04.*"))


def test_submit_refuses_bad_requests_before_queueing_and_workers_survive(
    sync_gateway: SyncModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    worker = start_worker("mock")
    outcomes: dict[str, int] = {"refused": 0, "answered": 0, "failed": 0}

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.sampled_from(FIELDS), json_values)
    def submit_one(field: str, value: Any) -> None:
        data = {**valid_base(), "model_id": "mock", field: value, "timeout": 10}
        if field == "timeout":
            data["timeout"] = value
        before = queued(redis_client)
        try:
            sync_gateway.execute(data)  # type: ignore[arg-type]  # raw input, as a caller's
            outcomes["answered"] += 1
        except ValidationError as error:
            assert error.code.startswith("E45")
            assert queued(redis_client) == before  # nothing was enqueued
            outcomes["refused"] += 1
        except GatewayError as error:
            assert error.code.startswith("E4")  # a coded error, never a crash
            outcomes["failed"] += 1

    submit_one()
    assert outcomes["refused"] > 0 and outcomes["answered"] > 0
    assert worker.process is not None and worker.process.poll() is None
    assert "Traceback" not in worker.log()
