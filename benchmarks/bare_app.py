"""The baseline: a bare Celery task on the same broker, calling the same upstream over HTTP.

Started by ``benchmarks/run.py`` twice: ``-P threads`` on the default queue, and ``-P gevent``
on ``bare-gevent`` (the in-flight baseline). The client waits for each result through Celery's
Redis result backend.
"""

from __future__ import annotations

import os

import httpx
from celery import Celery

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8099")

app = Celery("bare", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)
# No connection limit: the gevent worker makes thousands of calls at once.
_client = httpx.Client(
    timeout=60, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None)
)
GEVENT_QUEUE = "bare-gevent"

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@app.task(name="bare.call")
def call() -> str:
    response = _client.post(f"{UPSTREAM}/v1/chat/completions", json=BODY)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


@app.task(name="bare.noop")
def noop() -> str:
    return "ok"
