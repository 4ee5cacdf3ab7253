"""Generated bad input submitted to a real worker: every invalid request is refused with an
E45xx code before anything is enqueued, and nothing that gets through crashes a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_client import GatewayError, ValidationError
from gateway_client.sync import SyncModelGateway
from tests.bad_requests import FIELDS, json_values, valid_base
from tests.processes import WorkerProcess


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
