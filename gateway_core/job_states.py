"""A job's states and which transition leads where: the one state machine producers and
workers both read. The transitions themselves are Lua scripts, each atomic on the server's clock:
the producer's in ``gateway_client/lua/``, the worker's in ``workers/lua/``. ::

    queued ──claim──▶ running ──finish──▶ succeeded | failed
     ▲ │                 │  ▲
     │ │                 │  └── claim again after the lease lapsed (worker died): attempt + 1
     │ │                 ├──defer──▶ deferred (over a rate limit, held by no worker)
     │ │                 └──hand_off──▶ queued on the next model's queue (failover)
     │ └─────────────────┴──▶ cancelled (cancel) | expired (deadline passed)
     │                   └──▶ failed E4206 (claimed more than L04_MAX_DELIVERIES times)
     ├──release (the wait is over)── deferred
     └──requeue_orphan: its message lost, put back once (lost again: failed E4206)

Exactly one terminal event (result or error) is ever written: each terminal transition checks
the state inside its script.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DEFERRED = "deferred"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)

# Which transition takes a job from which state to which: what the scripts implement and
# tests/redis/test_job_transitions.py checks, one transition and each of its refusals at a time.
TRANSITIONS: dict[str, tuple[frozenset[JobState], frozenset[JobState]]] = {
    "create": (frozenset(), frozenset({JobState.QUEUED})),
    "claim": (
        frozenset({JobState.QUEUED, JobState.RUNNING}),
        frozenset({JobState.RUNNING, JobState.EXPIRED, JobState.FAILED}),
    ),
    # A worker's answer is taken from a job queued or deferred with no lease too: a Redis
    # failover that lost its claim leaves the job so (workers/lua/job_finish.lua).
    "finish": (
        frozenset({JobState.RUNNING, JobState.QUEUED, JobState.DEFERRED}),
        frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    ),
    "defer": (frozenset({JobState.RUNNING}), frozenset({JobState.DEFERRED})),
    "release": (frozenset({JobState.DEFERRED}), frozenset({JobState.QUEUED})),
    "hand_off": (frozenset({JobState.RUNNING}), frozenset({JobState.QUEUED})),
    "cancel": (
        frozenset({JobState.QUEUED, JobState.RUNNING, JobState.DEFERRED}),
        frozenset({JobState.CANCELLED, JobState.FAILED}),
    ),
    "expire": (
        frozenset({JobState.QUEUED, JobState.RUNNING, JobState.DEFERRED}),
        frozenset({JobState.EXPIRED}),
    ),
    # The orphan sweeper's (workers/orphans.py): a queued job whose message the broker lost.
    "requeue_orphan": (
        frozenset({JobState.QUEUED}),
        frozenset({JobState.QUEUED, JobState.FAILED}),
    ),
}


class CreateOutcome(StrEnum):
    """What ``create`` did; an existing job's state is returned as its :class:`JobState`."""

    CREATED = "created"
    FULL = "full"  # the queue holds L04_QUEUE_MAX_DEPTH messages already


class ClaimOutcome(StrEnum):
    """What a worker learns when it claims a job."""

    RUN = "run"  # the job is this worker's to run now
    BUSY = "busy"  # another worker holds its lease (a redelivered copy)
    TERMINAL = "terminal"  # it ended already
    DEFERRED = "deferred"  # it waits for a rate limit; its release requeues it
    EXPIRED = "expired"  # its deadline passed: this claim ended it
    LOST = "lost"  # claimed more than L04_MAX_DELIVERIES times: this claim failed it (E4206)
    GONE = "gone"  # no record (expired, or never created)


class FinishOutcome(StrEnum):
    """What a terminal transition did."""

    WRITTEN = "written"  # this call wrote the job's one terminal event
    ENDED = "ended"  # the job had ended already (or is gone): nothing written
    FENCED = "fenced"  # another worker holds the job's lease
    NOT_YET = "not_yet"  # expire: the deadline (plus grace) has not passed on the server's clock


class OrphanOutcome(StrEnum):
    """What the orphan sweeper did with a queued job whose message two sweeps found nowhere."""

    REQUEUED = "requeued"  # put back on its queue (the first time its message was lost)
    FAILED = "failed"  # lost again, or no message can be built for it: E4206 written
    SKIPPED = "skipped"  # no longer queued, or queued anew meanwhile: nothing to do
    FENCED = "fenced"  # another sweeper holds the sweeper's lease: nothing done


FINISH_REPLIES = {
    1: FinishOutcome.WRITTEN,
    0: FinishOutcome.ENDED,
    -2: FinishOutcome.FENCED,
    -3: FinishOutcome.NOT_YET,
}
