"""What became of one delivery of a job: the task's one-word return value.

The worker's runtime returns it and the task body hands it to Celery, whose "succeeded" log line
prints it (it never carries a prompt or an answer). Only ``UNREPORTED`` changes what happens to
the message: the task body hands it back to the broker instead of acknowledging it.
"""

from __future__ import annotations

from enum import StrEnum


class RunOutcome(StrEnum):
    # The job ran here.
    SUCCEEDED = "succeeded"
    CACHED = "cached"  # answered from the response cache
    FAILED = "failed"  # ended in a typed error
    FAILED_OVER = "failed-over"  # moved to the next model of its chain
    DEFERRED = "deferred"  # parked over a rate limit; its release requeues it
    FENCED = "fenced"  # another worker took it, or it ended elsewhere, while it ran here
    # The claim found it not to run (see gateway_core.job_states.ClaimOutcome).
    ALREADY_ENDED = "terminal"
    WAITING = "waiting"  # deferred: this copy of its message is not needed
    EXPIRED = "expired"  # its deadline had passed: the claim ended it
    LOST = "lost"  # started too often (L04_MAX_DELIVERIES): the claim failed it with E4206
    # The runtime's own.
    DEAD_LETTERED = "dead-lettered"  # unreadable, or for a job with no record: set aside
    STOPPED = "stopped"  # the worker shut down while it ran
    UNREPORTED = "unreported"  # it could not report (its Redis went away): hand the message back
