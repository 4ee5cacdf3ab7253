"""The message submit pushes is the message Celery and kombu would have published."""

from __future__ import annotations

import base64
import json

import redis

from config.settings import load_settings
from gateway_core.queues import INFER_TASK
from gateway_core.wire import make_envelope
from tasks.app_config import create_app
from tasks.message import build_task_message, redis_list_for


def test_message_matches_what_kombu_publishes(redis_url: str, redis_client: redis.Redis) -> None:
    app = create_app(load_settings(REDIS_URL=redis_url))
    envelope = make_envelope("job-1")
    app.send_task(
        INFER_TASK,
        args=[envelope],
        task_id="job-1",
        queue="l04.mock",
        routing_key="l04.mock",
        priority=5,
        ignore_result=True,
    )
    published = json.loads(redis_client.rpop(redis_list_for("l04.mock", 5)))  # type: ignore[arg-type]
    ours = json.loads(build_task_message(app, "job-1", envelope, "l04.mock", 5))

    assert set(ours) == set(published)
    for field in ("content-type", "content-encoding"):
        assert ours[field] == published[field]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(published["body"])
    )
    ignore = {"argsrepr", "kwargsrepr", "origin"}  # ours hides arguments; origin is per process
    assert {k: v for k, v in ours["headers"].items() if k not in ignore} == {
        k: v for k, v in published["headers"].items() if k not in ignore
    }
    assert set(ours["properties"]) == set(published["properties"])
    for field in ("priority", "body_encoding", "delivery_mode", "correlation_id"):
        assert ours["properties"][field] == published["properties"][field]
    assert ours["properties"]["delivery_info"]["routing_key"] == "l04.mock"
    assert ours["headers"]["argsrepr"] == "[{'job_id': 'job-1'}]"


def test_priorities_map_to_kombus_lists() -> None:
    assert redis_list_for("l04.mock", 0) == "l04.mock"
    assert redis_list_for("l04.mock", 5) == "l04.mock\x06\x165"
    assert redis_list_for("l04.mock", 9) == "l04.mock\x06\x169"
