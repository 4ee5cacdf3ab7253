"""Kill loops: short jobs flowing while the worker, or Redis, is killed and restarted, again.

    python -m benchmarks.kill_loop --runs 10                    # the worker SIGKILLed 10 times
    python -m benchmarks.kill_loop --runs 10 --redis-restarts   # Redis SIGKILLed 3 times

The creed under test: every job ends in a result or a typed error before its deadline, exactly
once, whatever dies on the way. Each run starts from nothing (:mod:`benchmarks.fault_fleet`): a
private redis-server, the mock upstream answering after ``--latency-ms``, called through the
worker's OpenAI adapter so that provider calls are counted there, and ``l04 worker`` processes.

* **Worker kills** (issue 17): ``--jobs`` jobs (3,000 of 200 ms, deadline 240 s) are queued. A
  worker (concurrency 100) starts, works 0.5 to 1.5 ``--interval`` (1 s) after it says it is
  ready, and is SIGKILLed (with any child process); the next one starts at once. After
  ``--kills`` (10) kills a last worker stays. ``L04_VISIBILITY_TIMEOUT`` is 5 s, so a dead
  worker's messages come back within about 6 s.
* **Redis restarts**: one worker (concurrency 200), 1,500 jobs of 1 s; Redis (append-only,
  ``appendfsync always``, so that a SIGKILL loses no write it acknowledged) is SIGKILLed and
  started again each time the worker holds about 180 messages, ``--kills`` (3) times. The
  worker stays up.

Then every job has ``--settle`` seconds (60) after the last fault to end. A run passes when every
job has exactly one terminal event and none ended in an error: the provider never fails here, so
a deadline error (E4404, E4205) or any other is the fleet's. Per run it prints: jobs, answered
(one terminal event), duplicates (more than one), stranded (none), deadline and other errors, the
time from the last fault to the last answer, provider calls and claims (a claim killed before
its call makes none), and how many times a fault left kombu's restore mutex held. For a failing
run it adds where each stranded job's message is (queue list, ``unacked``, nowhere), what its
record says and which workers logged receiving it (:mod:`benchmarks.job_census`). Exit status 1
if any run failed. ``tests/fleet/test_kill_loop.py`` runs one of each in the slow tier.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.fault_fleet import (
    UPSTREAM_PATH,
    FaultNote,
    Fleet,
    LoopSetup,
    held_messages,
    kill_with_children,
    submit_all,
    wait_for,
    wait_until_ended,
)
from benchmarks.job_census import Census, take_census

QUEUE = "l04.openai"

WORKER_KILLS = LoopSetup(
    "worker", jobs=3000, kills=10, interval_s=1.0, concurrency=100, latency_ms=200
)
REDIS_RESTARTS = LoopSetup(
    "redis", jobs=1500, kills=3, interval_s=0.0, concurrency=200, latency_ms=1000
)


@dataclass
class RunResult:
    setup: LoopSetup
    census: Census
    faults: list[FaultNote] = field(default_factory=list)
    upstream_calls: int = 0
    wall_s: float = 0.0
    # Stranded job -> the workers (by start order, from 1) whose log says they received it.
    received_by: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every job answered once, and none failed: the provider never fails here, so any
        error (a deadline error or another) is the fleet's."""
        census = self.census
        return census.answered == len(census.fates) and census.duplicates == 0 and not census.errors

    @property
    def tail_s(self) -> float | None:
        """From the last fault to the last job's end."""
        last = self.census.last_finished_ms
        if last is None or not self.faults:
            return None
        return last / 1000 - self.faults[-1].at

    @property
    def mutex_left_held(self) -> int:
        """How many times a fault left kombu's restore mutex held by a sweep that will never
        release it (one such lock, seen after several faults, counts once)."""
        return len({note.mutex_token for note in self.faults if note.leaked})

    def line(self, run: int) -> str:
        c = self.census
        tail = "-" if self.tail_s is None else f"{self.tail_s:.1f} s"
        others = {code: n for code, n in c.errors.items() if code not in ("E4404", "E4205")}
        return (
            f"run {run:2d}: jobs {len(c.fates)}  answered {c.answered}  "
            f"duplicates {c.duplicates}  stranded {len(c.stranded)}  "
            f"deadline errors {c.deadline_errors}  other errors {others or 0}  "
            f"last fault -> last answer {tail}  provider calls {self.upstream_calls}  "
            f"claims {c.attempts}  mutex left held {self.mutex_left_held}x  "
            f"({self.wall_s:.0f} s) {'ok' if self.ok else 'FAILED'}"
        )

    def details(self) -> list[str]:
        """For a failing run: the stranded jobs by where their message is and their state."""
        c = self.census
        mutex = "free" if c.mutex_ttl_s is None else f"TTL {c.mutex_ttl_s:.0f} s"
        lines = [
            f"  unacked_mutex {mutex}, "
            f"unacked {c.unacked}, unacked_index {c.unacked_index}, queued {c.queued_messages}, "
            f"dead letters {c.dead_letters}",
            "  faults: "
            + ", ".join(
                f"{n.unacked} held"
                + (f" mutex held, {n.mutex_ttl_s or 0:.0f} s to go" if n.leaked else "")
                for n in self.faults
            ),
        ]
        if c.errors:
            lines.append(f"  errors: {dict(c.error_messages())}")
        if c.stranded:
            lines.append(f"  stranded by message/state: {dict(c.stranded_summary())}")
            for fate in c.stranded[:10]:
                received = self.received_by.get(fate.job_id) or "none"
                lines.append(
                    f"    {fate.job_id}: {fate.state}, attempt {fate.attempt}, "
                    f"message {fate.where}, received by workers {received}"
                )
        return lines


def worker_kills(fleet: Fleet, rng: random.Random) -> list[FaultNote]:
    """Each worker works 0.5 to 1.5 ``interval_s`` after it is ready (so that the kills fall at
    every point of its cycles, as a tester's would), then is SIGKILLed; a last one stays."""
    notes = []
    for _ in range(fleet.setup.kills):
        worker = fleet.start_worker()
        time.sleep(fleet.setup.interval_s * rng.uniform(0.5, 1.5))
        kill_with_children(worker)
        note = fleet.note()
        note.leaked = note.mutex_token is not None  # no worker is alive to be sweeping
        notes.append(note)
    fleet.start_worker()
    return notes


def redis_restarts(fleet: Fleet) -> list[FaultNote]:
    """Each time the worker holds about ``concurrency`` jobs, Redis is SIGKILLed and restarted.

    The mutex counts as left held when the same holder still has it 2 s after the restart: a
    sweep takes milliseconds, so that holder's sweep was cut by the restart (the key came back
    from the append-only file) or died on the way, and will never release it.
    """
    notes = []
    for _ in range(fleet.setup.kills):
        wait_for(lambda: held_messages(fleet) >= 0.9 * fleet.setup.concurrency, timeout=5)
        fleet.server.stop(kill=True)
        fleet.server.start()
        note = fleet.note()
        time.sleep(2.0)
        later = fleet.note()
        note.leaked = note.mutex_token is not None and later.mutex_token == note.mutex_token
        note.mutex_ttl_s = later.mutex_ttl_s
        notes.append(note)
    return notes


def run_once(setup: LoopSetup, seed: int | None = None) -> RunResult:
    """One run from nothing; ``seed`` picks the kill times (random when None)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="l04-kill-loop-") as workdir:
        fleet = Fleet(setup, Path(workdir))
        try:
            fleet.start()
            if setup.faults == "worker":
                job_ids = submit_all(fleet.server.url, setup)
                notes = worker_kills(fleet, random.Random(seed))
            else:
                fleet.start_worker()
                job_ids = submit_all(fleet.server.url, setup)
                notes = redis_restarts(fleet)
            wait_until_ended(fleet, job_ids, time.monotonic() + setup.settle_s)
            client = fleet.client()
            try:
                census = take_census(client, job_ids, QUEUE)
            finally:
                client.close()
            calls = fleet.upstream.requests_to(UPSTREAM_PATH)
        finally:
            fleet.close()
    received = fleet.received([fate.job_id for fate in census.stranded])
    return RunResult(setup, census, notes, calls, time.monotonic() - started, received)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kill_loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--redis-restarts", action="store_true", help="restart Redis instead")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--kills", type=int, help="faults per run (10 kills, 3 restarts)")
    parser.add_argument("--interval", type=float, help="seconds each worker works (1)")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--settle", type=float, help="seconds after the last fault (60)")
    args = parser.parse_args(argv)
    setup = REDIS_RESTARTS if args.redis_restarts else WORKER_KILLS
    given = {
        "jobs": args.jobs,
        "kills": args.kills,
        "interval_s": args.interval,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "settle_s": args.settle,
    }
    setup = replace(setup, **{k: v for k, v in given.items() if v is not None})
    print(f"{setup} on {os.cpu_count()} cores", flush=True)
    failed = 0
    for run in range(1, args.runs + 1):
        result = run_once(setup)
        print(result.line(run), flush=True)
        if not result.ok or result.mutex_left_held:
            print("\n".join(result.details()), flush=True)
        failed += not result.ok
    print(f"{args.runs - failed} of {args.runs} runs passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
