"""The one task the fleet runs. Its argument is a small envelope: a schema version and a job id.

The request itself (the prompt) stays in the job's Redis hash, so task arguments seen by Celery's
logs, Flower and the broker carry no prompt text and no credentials. The task body only hands the
job to this process's asyncio runtime and blocks its pool slot until the job ends; the return
value is a one-word outcome, which is all Celery's "succeeded" log line will print.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.utils.imports import symbol_by_name

from gateway_core.queues import DELIVERY_KEY, INFER_TASK
from tasks.outcomes import RunOutcome
from tasks.worker_classes import JOB_RUNNER


@cache
def _job_runner() -> Callable[..., RunOutcome]:
    """The worker's runner, resolved on the first job (see tasks/worker_classes.py)."""
    runner: Callable[..., RunOutcome] = symbol_by_name(JOB_RUNNER)
    return runner


def register(app: Celery) -> Task:
    @app.task(name=INFER_TASK, bind=True, acks_late=True, ignore_result=True)
    def infer(self: Task, envelope: Any) -> str:
        properties = self.request.properties or {}
        tag = getattr(self.request, DELIVERY_KEY, None) or properties.get("delivery_tag")
        outcome: RunOutcome = _job_runner()(envelope, delivery_tag=tag)
        if outcome is RunOutcome.UNREPORTED:
            # The job could not report (its Redis went away mid-job): hand the message back
            # rather than acknowledge it, so the job runs again once Redis is back (the claim
            # then sees the lapsed lease; the deadline bounds the retries).
            raise Reject("job not reported; message handed back", requeue=True)
        return outcome.value

    return infer
