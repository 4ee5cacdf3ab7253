"""The rate limiter's guarantee, from the server timestamps its script returns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from gateway_core.keys import rate_limit as limit_key
from tests.processes import ROOT
from workers.control.rate_limiter import Limit, RateLimiter

WINDOW_S = 3.0  # the algorithm is window-agnostic; a short window keeps the test short
RUN_S = 9.0
PROCESSES = 8


def hammer(redis_url: str, mode: str, capacity: int) -> list[tuple[int, int]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "bin" / "hammer_limiter.py"),
                redis_url,
                mode,
                str(RUN_S),
                str(WINDOW_S),
                str(capacity),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        for _ in range(PROCESSES)
    ]
    admitted: list[tuple[int, int]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        admitted += [tuple(json.loads(line)) for line in out.splitlines()]  # type: ignore[misc]
    return sorted(admitted)


def sliding_sums(admitted: list[tuple[int, int]], window_ms: int) -> list[tuple[int, int]]:
    """For each admission, the amount admitted in the window that ends with it."""
    sums, total, start = [], 0, 0
    for ts, amount in admitted:
        total += amount
        while admitted[start][0] <= ts - window_ms:
            total -= admitted[start][1]
            start += 1
        sums.append((ts, total))
    return sums


@pytest.mark.parametrize(("mode", "capacity"), [("rpm", 300), ("tpm", 30_000)])
def test_eight_processes_never_exceed_the_limit_and_use_it(
    redis_url: str, mode: str, capacity: int
) -> None:
    admitted = hammer(redis_url, mode, capacity)
    window_ms = int(WINDOW_S * 1000)
    sums = sliding_sums(admitted, window_ms)
    assert max(total for _, total in sums) <= capacity
    # At saturation (every window after the first), nearly the whole limit is used.
    first, last = admitted[0][0], admitted[-1][0]
    steady = [total for ts, total in sums if first + window_ms <= ts <= last - 100]
    assert steady and max(steady) >= 0.95 * capacity
    # Across the whole run, admissions track capacity per window.
    windows = (last - first) / window_ms
    assert sum(a for _, a in admitted) >= 0.9 * capacity * windows


async def test_one_decision_checks_every_limit_and_takes_from_none_if_one_is_short(
    redis_url: str,
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    limiter = RateLimiter(client, window_s=60)
    rpm = limit_key("openai", "gpt-4o", "rpm")
    tpm = limit_key("openai", "gpt-4o", "tpm")
    agent = limit_key("openai", "gpt-4o", "rpm", agent="did:key:a")
    reserved = await limiter.admit([Limit(rpm, 10, 1), Limit(tpm, 1000, 900)])
    assert reserved.admitted
    refused = await limiter.admit([Limit(rpm, 10, 1), Limit(tpm, 1000, 200), Limit(agent, 5, 1)])
    assert not refused.admitted and refused.short == tpm
    assert 0 < refused.wait_ms <= 61_000  # at most one window and one sub-bucket
    sync = redis.Redis.from_url(redis_url)
    assert sum(int(v) for v in sync.hvals(rpm)) == 1  # the refused decision took nothing
    assert not sync.exists(agent)
    never = await limiter.admit([Limit(tpm, 1000, 5000)])
    assert not never.admitted and never.never
    # Settling a reservation with the real usage frees the difference at once (in the
    # sub-bucket the reservation was taken in: the decision's own, not a later one's).
    await limiter.settle([tpm], reserved.bucket, 900, 100)
    assert (await limiter.admit([Limit(tpm, 1000, 800)])).admitted
    assert len({k.split("}")[0] for k in (rpm, tpm, agent)}) == 1  # one hash slot
    sync.close()
    await client.aclose()
