"""``AsyncioPool``: a Celery pool that runs inference jobs on the asyncio runtime, no thread each.

Celery's ``threads`` pool parks one OS thread per job for the whole provider call; at hundreds of
calls in flight those threads cost more CPU than the calls (GIL hand-offs, wake-ups). This pool
starts an ``l04.infer`` job on the worker's event loop as soon as Celery hands it over, and only
when the job has ended runs Celery's own tracer for it (on a few helper threads). The tracer calls
the task body, which finds the outcome ready and returns it at once, so acknowledgement (late, as
configured), task events for Flower and task signals all happen as Celery does them, at the right
time. Any other task goes straight to the helper threads, as in the ``threads`` pool.

It is the default pool of this app (``worker_pool``); ``-P threads`` still works, with the task
body then running the job itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from celery.concurrency.base import BasePool, apply_target

from gateway_core.queues import DELIVERY_KEY, INFER_TASK
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

TRACER_THREADS = 4
SHUTDOWN_GRACE_S = 60.0


class AsyncioPool(BasePool):
    signal_safe = False
    body_can_be_buffer = False

    def on_start(self) -> None:
        self._runtime = get_runtime()
        self._tracers = ThreadPoolExecutor(TRACER_THREADS, thread_name_prefix="l04-trace")
        self._jobs: set[Future[Any]] = set()

    def on_apply(
        self,
        target: Any,
        args: Any = None,
        kwargs: Any = None,
        callback: Any = None,
        accept_callback: Any = None,
        **_: Any,
    ) -> Any:
        envelope = _envelope_of(args)
        if envelope is None:
            return self._tracers.submit(
                apply_target, target, args, kwargs, callback, accept_callback
            )
        if accept_callback is not None:
            # Off the consumer's thread: it publishes the task-started event (a round trip).
            self._tracers.submit(accept_callback, os.getpid(), time.monotonic())
        job = self._runtime.start_job(envelope, _delivery_key(args[2]))
        self._jobs.add(job)

        def finished(done: Future[Any]) -> None:
            self._jobs.discard(done)
            self._tracers.submit(apply_target, target, args, kwargs, callback, None)

        job.add_done_callback(finished)
        return job

    def on_stop(self) -> None:
        """Warm shutdown: let the jobs in flight end (within a grace period), then their acks."""
        pending = list(self._jobs)
        if pending:
            log.info("waiting for %d jobs in flight to end", len(pending))
            wait(pending, timeout=SHUTDOWN_GRACE_S)
        self._tracers.shutdown(wait=True)
        self._runtime.close()

    def on_terminate(self) -> None:
        self._tracers.shutdown(wait=False, cancel_futures=True)

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info.update({"max-concurrency": self.limit, "in-flight": len(self._jobs)})
        return info


def _delivery_key(request: dict[str, Any] | None) -> str:
    """The key under which the runtime keeps this delivery's outcome until the task body asks.

    kombu's Redis transport puts a unique ``delivery_tag`` in the message's properties (also the
    key the heartbeat refreshes in ``unacked_index``). AMQP carries the delivery tag outside the
    properties (a per-channel counter, reused after a reconnect), so a key of this delivery's
    own is made and left in the request dict, which Celery hands to the task body unchanged
    (``self.request.l04_delivery``). Without it the task body would find no outcome and run the
    job a second time (the claim would refuse it, but the outcome would be wrong).
    """
    request = request if request is not None else {}
    properties = request.get("properties") or {}
    key = properties.get("delivery_tag")
    if not isinstance(key, str):
        key = request[DELIVERY_KEY] = f"delivery-{uuid.uuid4().hex}"
    return key


def _envelope_of(args: Any) -> Any | None:
    """The inference envelope of a tracer call, or None for any other task (or undecodable)."""
    try:
        name, _task_id, _request, body, content_type = args[0], args[1], args[2], args[3], args[4]
    except (TypeError, IndexError):
        return None
    if name != INFER_TASK or content_type != "application/json":
        return None
    try:
        task_args = json.loads(body)[0]
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return task_args[0] if task_args else None
