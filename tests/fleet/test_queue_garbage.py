"""Anything on a queue is safe (fault tier): generated values of every shape are pushed onto a real
worker's queue lists; each one ends in the dead-letter list with its reason, the worker goes on,
and a real job is answered after every batch."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from gateway_client import ModelGateway
from gateway_core.queues import redis_priority_lists
from gateway_core.wire import make_envelope
from l04.redis_server import LocalRedis
from tasks.app_config import create_app
from tasks.message import build_task_message
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import WorkerProcess
from workers.poison import MAX_MESSAGE_BYTES, PoisonMessage, screen

pytestmark = pytest.mark.faults
QUEUE = "l04.mock"
LISTS = redis_priority_lists(QUEUE)  # the lists kombu reads

HUGE = b"<a value over the size limit>"  # pushed as MAX_MESSAGE_BYTES + 1 bytes; small repr

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def valid_message() -> dict[str, Any]:
    """A message as submit queues it (for a job that does not exist)."""
    app = create_app(load_settings(REDIS_URL="redis://127.0.0.1:1/0"))
    job_id = uuid.uuid4().hex
    return dict(json.loads(build_task_message(app, job_id, make_envelope(job_id), QUEUE, 5)))


@st.composite
def broken_envelopes(draw: st.DrawFn) -> bytes:
    """A kombu envelope with fields removed, retyped, or its body or encoding spoiled."""
    message = valid_message()
    how = draw(st.sampled_from(["drop", "retype", "bad base64", "content type", "body"]))
    if how == "drop":
        path = draw(
            st.sampled_from(
                [
                    ("body",),
                    ("properties",),
                    ("headers",),
                    ("content-type",),
                    ("properties", "delivery_tag"),
                    ("properties", "delivery_info"),
                    ("properties", "delivery_info", "exchange"),
                    ("properties", "delivery_info", "routing_key"),
                    ("headers", "task"),
                ]
            )
        )
        target = message
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    elif how == "retype":
        field = draw(st.sampled_from(["body", "properties", "headers", "content-encoding"]))
        message[field] = draw(json_values.filter(lambda v: not isinstance(v, type(message[field]))))
    elif how == "bad base64":
        message["body"] = draw(st.text(min_size=1, max_size=30).map(lambda t: t + "!*"))
    elif how == "content type":
        message["content-type"] = draw(
            st.sampled_from(["text/plain", "application/x-python-serialize", ""])
        )
        message["content-encoding"] = draw(st.sampled_from(["utf-8", "binary", "latin-1"]))
    else:
        message["body"] = base64.b64encode(draw(st.binary(max_size=40))).decode()
    return json.dumps(message).encode()


garbage = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.text(min_size=1, max_size=100).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    broken_envelopes(),
    st.just(HUGE),
)


def test_the_screen_passes_what_submit_queues() -> None:
    payload = json.dumps(valid_message()).encode()
    assert screen(payload)["properties"]["delivery_info"]["routing_key"] == QUEUE
    for raw in (b"not json", b"[1,2,3]", b'"hello"', b"{}"):
        with pytest.raises(PoisonMessage):
            screen(raw)


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[LocalRedis, WorkerProcess]]:
    server = LocalRedis().start()
    worker = WorkerProcess(server.url, "mock", 20, {**FAST_RECOVERY}).start()
    yield server, worker
    worker.stop()
    server.stop()


@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # a shrink would restart the fleet's clock for minutes
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(values=st.lists(st.tuples(garbage, st.sampled_from(LISTS)), min_size=1, max_size=25))
def test_any_value_on_a_queue_is_set_aside_and_the_worker_goes_on(
    fleet: tuple[LocalRedis, WorkerProcess], values: list[tuple[bytes, str]]
) -> None:
    server, worker = fleet
    client = redis.Redis.from_url(server.url)
    try:
        client.delete("l04:dlq")
        for raw, name in values:
            client.lpush(name, b"x" * (MAX_MESSAGE_BYTES + 1) if raw is HUGE else raw)
        answer = asyncio.run(_one_job(server.url))
        assert answer
        deadline = time.monotonic() + 20
        while client.llen("l04:dlq") < len(values):
            assert time.monotonic() < deadline, (client.llen("l04:dlq"), len(values))
            time.sleep(0.05)
        time.sleep(0.2)
        records = [json.loads(r) for r in client.lrange("l04:dlq", 0, -1)]
        assert len(records) == len(values)  # each value once: none lost, none twice
        assert all(r["reason"] and "envelope" in r for r in records)
        assert sum(int(client.llen(name)) for name in LISTS) == 0
        assert client.hlen("unacked") == 0  # nothing stuck half-delivered
    finally:
        client.close()
    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    assert "Unrecoverable error" not in worker.log()


async def _one_job(url: str) -> str:
    gateway = ModelGateway(redis_url=url)
    try:
        return (await gateway.execute(make_request("still serving?", timeout=20))).content
    finally:
        await gateway.close()
