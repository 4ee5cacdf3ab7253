"""Putting a job back onto a provider's queue (failover, or the end of a rate-limit wait).

With the job-state Redis as the broker, the Celery message is built here and pushed by the same
Lua script that changes the job's state, so a job is queued if and only if its record says so.
With another broker (RabbitMQ) the script only changes the state and the message is published
through Celery afterwards.
"""

from __future__ import annotations

import asyncio

from celery import Celery

from gateway_core.queues import priority_value, queue_name
from gateway_core.request import Priority
from gateway_core.wire import make_envelope
from tasks.message import build_task_message, publish_job, redis_list_for


class Requeue:
    def __init__(self, app: Celery, broker_url: str, broker_is_state_redis: bool) -> None:
        self._app = app
        self._broker_url = broker_url
        self.in_script = broker_is_state_redis  # the Lua script pushes the message itself

    def message(self, job_id: str, provider: str, priority: str) -> tuple[str, str]:
        """The message and the Redis list to push it onto, or ('', '') for another broker."""
        if not self.in_script:
            return "", ""
        queue = queue_name(provider)
        value = priority_value(Priority(priority), self._broker_url)
        message = build_task_message(self._app, job_id, make_envelope(job_id), queue, value)
        return message, redis_list_for(queue, value)

    async def publish(self, job_id: str, provider: str, priority: str) -> None:
        """Publish through Celery (only for a broker other than the job-state Redis)."""
        queue = queue_name(provider)
        value = priority_value(Priority(priority), self._broker_url)
        await asyncio.to_thread(publish_job, self._app, job_id, queue, value)
