"""Every Lua script, loaded into a real redis-server and run on each edge case its header lists.

A script's header (``workers/lua/job_claim.lua``) lists its edge cases, one ``situation ->
result`` line each. Each case has one test below, registered with ``@case(script, situation)``;
``test_every_edge_case_in_a_header_has_its_test`` reads every header and fails when a case has
no test or a test names no case. The scripts are driven directly (KEYS and ARGV as their header
gives them), on the server's clock: a time-dependent case sets its timestamps with HSET or ZADD,
or its TTLs with PX, rather than sleeping. (tests/redis/test_job_transitions.py drives the job
store's Python methods; this file drives the scripts under them.)
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import load_settings
from gateway_core import keys
from gateway_core.lua_scripts import register, script_source
from gateway_core.queues import QUEUE_BELL_CAP, REDIS_UNACKED, REDIS_UNACKED_INDEX
from gateway_core.wire import make_envelope
from tasks.app_config import create_app
from tasks.message import build_task_message
from tests.processes import ROOT
from workers.intake import TAKE_SHA, TAKE_SOURCE, take_args

SHARED_PACKAGE = "gateway_core"
SCRIPT_PACKAGES = ("gateway_client", "workers")


def _lua_names(package: str) -> list[str]:
    folder = files(package).joinpath("lua")
    return sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))


SCRIPTS = {name: package for package in SCRIPT_PACKAGES for name in _lua_names(package)}
SHARED = _lua_names(SHARED_PACKAGE)


def raw_text(name: str) -> str:
    return files(SCRIPTS[name]).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def header(name: str) -> list[str]:
    """The comment lines a script opens with."""
    lines = raw_text(name).splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]


_CASE_LINE = re.compile(r"^--\s{2,}(\S.*)$")


def edge_cases(name: str) -> list[str]:
    """The situations under ``-- Edge cases:``, whitespace collapsed (a line with no ``->``
    continues the result above it)."""
    lines = header(name)
    found: list[str] = []
    for line in lines[lines.index("-- Edge cases:") + 1 :]:
        match = _CASE_LINE.match(line)
        if match is None:
            break
        if "->" in match.group(1):
            found.append(" ".join(match.group(1).split("->", 1)[0].split()))
        else:
            assert found, f"{name}: a continuation line before any case: {line!r}"
    return found


CASES: dict[tuple[str, str], Callable[..., Any]] = {}


def case(script: str, situation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the test of one edge case of ``script``'s header."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        assert (script, situation) not in CASES, f"two tests for {script}: {situation}"
        CASES[script, situation] = test
        return test

    return mark


def run(r: redis.Redis, name: str, keys_: list[str], args: list[Any]) -> Any:
    """Runs the script as the code does: through gateway_core.lua_scripts.register (EVALSHA)."""
    return register(r, SCRIPTS[name], name)(keys=keys_, args=args)


def s(value: Any) -> Any:
    """Bytes decoded, lists decoded item by item."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [s(v) for v in value]
    return value


def members(r: redis.Redis, key: str) -> set[str]:
    return {s(m) for m in r.smembers(key)}


def hgetall(r: redis.Redis, key: str) -> dict[str, str]:
    return {s(k): s(v) for k, v in r.hgetall(key).items()}


def server_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


# --- the loader and the headers ----------------------------------------------------------------


@pytest.fixture
def probe_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A package of its own on sys.path, to load scripts the repository does not hold."""
    package = f"lua_probe_{uuid.uuid4().hex}"
    (tmp_path / package / "lua").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, text: str) -> str:
        (tmp_path / package / "lua" / f"{name}.lua").write_text(text)
        return package

    yield write
    sys.modules.pop(package, None)


def test_an_include_is_replaced_by_the_shared_file(
    redis_client: redis.Redis, probe_package: Callable[..., str]
) -> None:
    clock = files(SHARED_PACKAGE).joinpath("lua", "clock.lua").read_text(encoding="utf-8")
    package = probe_package(
        "clock_probe",
        "-- include: clock\nreturn {now_ms(), now_whole_seconds(), tostring(now_seconds())}\n",
    )
    source = script_source(package, "clock_probe")
    assert source.startswith(clock) and "-- include:" not in source
    before = server_ms(redis_client)
    ms, seconds, precise = register(redis_client, package, "clock_probe")()
    after = server_ms(redis_client)
    assert before <= ms <= after  # the server's clock, in ms
    assert before // 1000 <= seconds <= after // 1000
    assert before / 1000 - 0.001 <= float(precise) <= after / 1000 + 0.001


def test_the_job_scripts_get_both_shared_files_in_order() -> None:
    source = script_source("workers", "job_claim")
    assert "-- include:" not in source
    assert source.index("local function now_seconds") < source.index("local function finish")


def test_an_unknown_include_fails_when_the_script_is_loaded(
    probe_package: Callable[..., str],
) -> None:
    package = probe_package("bad", "-- bad: x\n-- include: nope\nreturn 1\n")
    with pytest.raises(FileNotFoundError, match=r"lua/bad\.lua includes 'nope': there is no "):
        script_source(package, "bad")
    # A name that is no file name either (not left as a comment for Redis to trip on).
    probe_package("worse", "-- include: Clock\nreturn now_ms()\n")
    with pytest.raises(FileNotFoundError, match=r"lua/worse\.lua includes 'Clock'"):
        script_source(package, "worse")


def test_every_lua_file_of_the_repository_is_a_script_or_a_shared_file() -> None:
    skipped = {"build", "test-artifacts"}  # and hidden folders: .venv, .git
    folders = [
        d for d in ROOT.iterdir() if d.is_dir() and d.name[0] != "." and d.name not in skipped
    ]
    found = {str(p.relative_to(ROOT)) for folder in folders for p in folder.rglob("*.lua")}
    found |= {p.name for p in ROOT.glob("*.lua")}
    known = {f"{package}/lua/{name}.lua" for name, package in SCRIPTS.items()}
    known |= {f"{SHARED_PACKAGE}/lua/{name}.lua" for name in SHARED}
    assert found == known
    assert len(SCRIPTS) == sum(len(_lua_names(p)) for p in SCRIPT_PACKAGES)  # names unique


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_opens_with_its_header(name: str) -> None:
    lines = header(name)
    assert lines[0].startswith(f"-- {name}: "), "the first line names the script"
    text = "\n".join(lines)
    for part in ("KEYS:", "ARGV:", "Edge cases:"):
        assert part in text, f"{name}'s header has no {part}"
    assert re.search(r"\b[Rr]eturns\b", text), f"{name}'s header says not what it returns"
    assert edge_cases(name), f"{name} lists no edge case"


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_file_defines_helpers_only(redis_client: redis.Redis, name: str) -> None:
    text = files(SHARED_PACKAGE).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    assert text.startswith("-- "), "it opens with a comment saying what it holds"
    assert "KEYS" not in text and "ARGV" not in text, "a helper takes what it needs as arguments"
    # Redis compiles it (with clock.lua, which the others need before them).
    source = script_source("gateway_core", "clock") + text + "\nreturn 1\n"
    assert redis_client.eval(source, 0) == 1


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_compiles_in_redis(redis_client: redis.Redis, name: str) -> None:
    script = register(redis_client, SCRIPTS[name], name)
    assert s(redis_client.script_load(script_source(SCRIPTS[name], name))) == script.sha


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_edge_case_in_a_header_has_its_test(name: str) -> None:
    listed = edge_cases(name)
    assert len(listed) == len(set(listed)), f"{name} lists a case twice"
    tested = [situation for script, situation in CASES if script == name]
    assert sorted(listed) == sorted(tested)


def test_every_case_test_names_a_script() -> None:
    assert {script for script, _ in CASES} == set(SCRIPTS)
    for test in CASES.values():
        assert test.__name__.startswith("test_"), f"{test.__name__} would not run"


# --- the job's scripts --------------------------------------------------------------------------

JOB = "j1"
J, EVENTS, LEASE = keys.job(JOB), keys.job_events(JOB), keys.job_lease(JOB)
JOB_KEYS = [J, EVENTS, LEASE]
CHANNEL = keys.job_channel(JOB)
INBOX = keys.client_inbox("producer-1")
TTL = 600
RESULT = json.dumps({"type": "result", "response": {"text": "hi"}})
CANCEL = json.dumps({"type": "error", "error": {"code": "E4403", "message": "cancelled"}})


def a_job(r: redis.Redis, state: str, job_id: str = JOB, **fields: Any) -> None:
    """A job record as job_create leaves it, in ``state``; its deadline a minute away."""
    record: dict[str, Any] = {
        "state": state,
        "attempt": 0,
        "request": "{}",
        "provider": "mock",
        "model": "mock-1",
        "stream": "0",
        "deadline": repr(time.time() + 60),
        "created_ms": server_ms(r),
        "reply_to": INBOX,
        "expire_at_ms": server_ms(r) + 3_600_000,
    }
    r.hset(keys.job(job_id), mapping={**record, **fields})


def events(r: redis.Redis, job_id: str = JOB) -> list[dict[str, Any]]:
    """The job's stream: each event with its n."""
    return [
        {"n": int(f[b"n"]), **json.loads(f[b"e"])} for _, f in r.xrange(keys.job_events(job_id))
    ]


def error_code(r: redis.Redis) -> str:
    (event,) = events(r)
    assert event["type"] == "error"
    return str(event["error"]["code"])


def ended(r: redis.Redis, state: str) -> None:
    """The job ended in ``state``: lease gone, finished_ms set, its keys expire in TTL."""
    record = hgetall(r, J)
    assert record["state"] == state
    assert abs(int(record["finished_ms"]) - server_ms(r)) < 5_000
    assert not r.exists(LEASE)
    assert 0 < r.ttl(J) <= TTL and 0 < r.ttl(EVENTS) <= TTL


@case("job_append", "running, lease ours")
def test_append_while_running_and_holding_the_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running")
    r.set(LEASE, "w1", px=10_000)
    listener = r.pubsub()
    listener.subscribe(CHANNEL, INBOX)
    for _ in range(2):  # both subscriptions confirmed before anything is published
        assert listener.get_message(timeout=2)["type"] == "subscribe"
    chunk = json.dumps({"type": "chunk", "text": "a"})
    assert run(r, "job_append", JOB_KEYS, ["w1", CHANNEL, chunk]) == 0
    assert run(r, "job_append", JOB_KEYS, ["w1", CHANNEL, chunk]) == 1
    assert [e["n"] for e in events(r)] == [0, 1]
    assert 0 < r.pttl(EVENTS) <= 3_600_000  # expires with the job (expire_at_ms)
    heard = [listener.get_message(timeout=2) for _ in range(4)]
    listener.close()
    first_id = s(r.xrange(EVENTS)[0][0])
    on_channel = [s(m["data"]) for m in heard if s(m["channel"]) == CHANNEL]
    on_inbox = [s(m["data"]) for m in heard if s(m["channel"]) == INBOX]
    assert on_channel[0] == f"0\n{first_id}\n{chunk}"
    assert on_inbox[0] == f"{CHANNEL}\n0\n{first_id}\n{chunk}"
    assert len(on_channel) == len(on_inbox) == 2


@case("job_append", "not running (ended ...)")
def test_append_after_the_job_ended(redis_client: redis.Redis) -> None:
    a_job(redis_client, "cancelled")
    redis_client.set(LEASE, "w1")
    assert run(redis_client, "job_append", JOB_KEYS, ["w1", CHANNEL, RESULT]) == -1
    assert not redis_client.exists(EVENTS)


@case("job_append", "lease another worker's")
def test_append_by_a_worker_that_lost_the_lease(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running")
    redis_client.set(LEASE, "w2")
    assert run(redis_client, "job_append", JOB_KEYS, ["w1", CHANNEL, RESULT]) == -2
    assert not redis_client.exists(EVENTS)


@case("job_append", "lease lapsed, not taken")
def test_append_after_the_lease_lapsed(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running")
    redis_client.set(LEASE, "w1", px=1)
    time.sleep(0.01)
    assert run(redis_client, "job_append", JOB_KEYS, ["w1", CHANNEL, RESULT]) == -2
    assert not redis_client.exists(EVENTS)


QUEUED = keys.QUEUED_JOBS


def claim(r: redis.Redis, worker: str = "w1", max_deliveries: int = 10) -> list[str]:
    args = [worker, 5_000, CHANNEL, TTL, max_deliveries, JOB]
    return s(run(r, "job_claim", [*JOB_KEYS, QUEUED], args))


@case("job_claim", "queued")
def test_claim_a_queued_job(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "queued", stream="1", created_ms=1234)
    r.xadd(EVENTS, {"n": 0, "e": "{}"})
    before = server_ms(r)
    got = claim(r)
    assert got[:6] == ["run", "1", "{}", "mock", "mock-1", "1"]
    assert float(got[6]) == float(hgetall(r, J)["deadline"])
    assert got[7] == "1234" and got[8] == "1"  # created_ms, events so far
    assert before <= int(got[9]) <= server_ms(r)
    # No chain, priority, kind, key, trace context: the defaults.
    assert got[10:] == ["[]", "normal", "chat", "", "", ""]
    record = hgetall(r, J)
    assert (record["state"], record["attempt"], record["worker"]) == ("running", "1", "w1")
    assert record["started_ms"] == got[9]
    assert s(r.get(LEASE)) == "w1" and 0 < r.pttl(LEASE) <= 5_000


@case("job_claim", "submitted with a virtual key")
def test_claim_a_job_submitted_with_a_virtual_key(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued", key_id="vk_0123456789abcdef", priority="high")
    assert claim(redis_client)[11:14] == ["high", "chat", "vk_0123456789abcdef"]


@case("job_claim", "submitted inside a trace")
def test_claim_a_job_submitted_inside_a_trace(redis_client: redis.Redis) -> None:
    """Its caller's W3C context, the same on a later attempt (the record keeps it)."""
    r = redis_client
    context = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    a_job(r, "queued", **context, tracestate="vendor=1")
    assert claim(r)[14:] == [context["traceparent"], "vendor=1"]
    r.delete(keys.job_lease(JOB))  # the worker died: the next claim is attempt 2
    again = claim(r, worker="w2")
    assert again[1] == "2" and again[14:] == [context["traceparent"], "vendor=1"]


@case("job_claim", "running, its lease lapsed (worker died)")
def test_claim_a_job_whose_worker_died(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(
        r,
        "running",
        attempt=1,
        worker="w0",
        started_ms=99,
        chain='["a","b"]',
        priority="high",
        kind="embed",
    )
    got = claim(r)
    assert got[:2] == ["run", "2"] and got[10:13] == ['["a","b"]', "high", "embed"]
    record = hgetall(r, J)
    assert (record["attempt"], record["worker"], record["started_ms"]) == ("2", "w1", "99")
    assert s(r.get(LEASE)) == "w1"


@case("job_claim", "running, lease held")
def test_claim_a_job_another_worker_runs(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1, worker="w0")
    r.set(LEASE, "w0", px=3_000)
    before = hgetall(r, J)
    busy, left = claim(r)
    assert busy == "busy" and 0 < int(left) <= 3_000
    assert hgetall(r, J) == before and s(r.get(LEASE)) == "w0"


@case("job_claim", "ended")
def test_claim_an_ended_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "succeeded")
    assert claim(redis_client) == ["terminal", "succeeded"]
    assert not redis_client.exists(LEASE)


@case("job_claim", "deferred (waits for a rate limit)")
def test_claim_a_deferred_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "deferred", deadline=repr(time.time() - 1))
    assert claim(redis_client) == ["deferred", "deferred"]  # its release decides, not a claim
    assert hgetall(redis_client, J)["state"] == "deferred"


@case("job_claim", "deadline passed")
def test_claim_a_job_past_its_deadline(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "queued", deadline=repr(time.time() - 1))
    assert claim(r) == ["expired", "queued"]
    assert error_code(r) == "E4404"
    ended(r, "expired")
    r.delete(J, EVENTS)
    a_job(r, "running", deadline=repr(time.time() - 1), attempt=1)
    r.set(LEASE, "w0", px=5_000)  # even while its worker holds it
    assert claim(r) == ["expired", "running"]
    assert error_code(r) == "E4205"
    ended(r, "expired")


@case("job_claim", "the attempt would pass max deliveries")
def test_claim_a_job_claimed_max_deliveries_times(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=2)
    assert claim(r, max_deliveries=3)[:2] == ["run", "3"]  # the last delivery allowed
    r.delete(LEASE)  # and its worker died too
    assert claim(r, max_deliveries=3) == ["lost", "3"]
    (event,) = events(r)
    assert event["error"] == {
        "code": "E4206",
        "message": "the job was started 3 times and no worker finished it",
        "retryable": False,
    }
    ended(r, "failed")


@case("job_claim", "failed over before (attempts - failovers under max)")
def test_claim_a_job_that_failed_over(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "queued", attempt=3, failovers=2)  # two hand-offs, one lost start
    assert claim(r, max_deliveries=3)[:2] == ["run", "4"]
    r.delete(LEASE)
    assert claim(r, max_deliveries=3)[:2] == ["run", "5"]
    r.delete(LEASE)
    assert claim(r, max_deliveries=3) == ["lost", "3"]


@case("job_claim", "no record")
def test_claim_a_job_with_no_record(redis_client: redis.Redis) -> None:
    assert claim(redis_client) == ["gone"]
    assert redis_client.keys("*") == []


@case("job_claim", "in the index of queued jobs")
def test_claim_takes_the_job_out_of_the_queued_index(redis_client: redis.Redis) -> None:
    r = redis_client
    for state, outcome in (("queued", "run"), ("succeeded", "terminal")):
        r.delete(J, LEASE)
        a_job(r, state)
        r.zadd(QUEUED, {JOB: 1, "other": 2})
        assert claim(r)[0] == outcome
        assert s(r.zrange(QUEUED, 0, -1)) == ["other"]
    r.delete(J)
    r.zadd(QUEUED, {JOB: 1})
    assert claim(r) == ["gone"]  # its record expired: out of the index too
    assert s(r.zrange(QUEUED, 0, -1)) == ["other"]


DEFERRED_SET = keys.DEFERRED


def defer(r: redis.Redis, worker: str = "w1") -> int:
    return int(
        run(r, "job_defer", [J, LEASE, DEFERRED_SET], [worker, 2_000, "msg", "queue-list", JOB])
    )


@case("job_defer", "running, lease ours")
def test_defer_a_running_job(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=2, deferrals=1)
    r.set(LEASE, "w1")
    before = server_ms(r)
    assert defer(r) == 1
    record = hgetall(r, J)
    assert (record["state"], record["attempt"], record["deferrals"]) == ("deferred", "1", "2")
    assert (record["requeue"], record["requeue_to"]) == ("msg", "queue-list")
    assert before + 2_000 <= int(record["ready_ms"]) <= server_ms(r) + 2_000
    assert r.zscore(DEFERRED_SET, JOB) == int(record["ready_ms"])
    assert not r.exists(LEASE)


@case("job_defer", "not running")
def test_defer_a_job_that_is_not_running(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued")
    redis_client.set(LEASE, "w1")
    before = hgetall(redis_client, J)
    assert defer(redis_client) == 0
    assert hgetall(redis_client, J) == before and not redis_client.exists(DEFERRED_SET)


@case("job_defer", "lease not ours (or gone)")
def test_defer_by_a_worker_without_the_lease(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=1)
    before = hgetall(redis_client, J)
    assert defer(redis_client) == 0  # gone
    redis_client.set(LEASE, "w2")
    assert defer(redis_client) == 0  # another's
    assert hgetall(redis_client, J) == before and not redis_client.exists(DEFERRED_SET)
    assert s(redis_client.get(LEASE)) == "w2"


def finish(r: redis.Redis, worker: str = "w1", state: str = "succeeded") -> int:
    return int(run(r, "job_finish", JOB_KEYS, [worker, CHANNEL, state, RESULT, TTL]))


@case("job_finish", "running, lease ours")
def test_finish_a_job_this_worker_runs(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1, worker="w1")
    r.set(LEASE, "w1")
    assert finish(r) == 1
    assert [e["type"] for e in events(r)] == ["result"]
    assert hgetall(r, J)["finished_by"] == "w1"
    ended(r, "succeeded")
    # The timeline's last entry is stamped with the record's finished_ms (one clock read).
    raw = json.loads(r.lindex(keys.job_timeline(JOB), -1))
    assert (raw["event"], raw["t"]) == ("ended", int(hgetall(r, J)["finished_ms"]))


@case("job_finish", "running, lease lapsed and not taken")
def test_finish_after_the_lease_lapsed(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=1, worker="w1")
    assert finish(redis_client, state="failed") == 1
    assert len(events(redis_client)) == 1
    ended(redis_client, "failed")


@case("job_finish", "running, lease another worker's")
def test_finish_by_a_worker_that_lost_the_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=2, worker="w2")
    redis_client.set(LEASE, "w2")
    assert finish(redis_client) == -2
    assert not redis_client.exists(EVENTS)
    assert hgetall(redis_client, J)["state"] == "running"


@case("job_finish", "queued or deferred, no lease (its claim lost in a failover)")
def test_finish_of_a_job_whose_claim_was_lost(redis_client: redis.Redis) -> None:
    for state in ("queued", "deferred"):
        redis_client.delete(J, EVENTS)
        a_job(redis_client, state, attempt=0)
        assert finish(redis_client) == 1
        assert [e["type"] for e in events(redis_client)] == ["result"]
        ended(redis_client, "succeeded")


@case("job_finish", "ended by this same worker (a retried call whose first reply was lost)")
def test_finish_sent_twice_by_the_same_worker(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=1)
    redis_client.set(LEASE, "w1")
    assert finish(redis_client) == 1
    assert finish(redis_client) == 1
    assert len(events(redis_client)) == 1  # one terminal event


@case("job_finish", "ended otherwise, or no record")
def test_finish_a_job_that_ended_elsewhere_or_has_no_record(redis_client: redis.Redis) -> None:
    a_job(redis_client, "cancelled")  # cancelled: no finished_by
    assert finish(redis_client) == 0
    redis_client.hset(J, mapping={"state": "succeeded", "finished_by": "w2"})
    assert finish(redis_client) == 0
    assert not redis_client.exists(EVENTS)
    redis_client.delete(J)
    assert finish(redis_client) == 0
    assert redis_client.keys("*") == []


QUEUE = "l04:queue:next"


def hand_off(r: redis.Redis, worker: str = "w1", message: str = "msg", index: str = JOB) -> int:
    push_to = QUEUE if message else J
    args = [worker, "other", "other-1", "next", message, index]
    return int(run(r, "job_hand_off", [J, LEASE, push_to, QUEUED], args))


@case("job_hand_off", "running, lease ours")
def test_hand_off_a_running_job(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    assert hand_off(r) == 1
    record = hgetall(r, J)
    assert (record["state"], record["provider"], record["model"]) == ("queued", "other", "other-1")
    assert (record["queue"], record["failovers"]) == ("next", "1")
    assert not r.exists(LEASE)
    assert s(r.lrange(QUEUE, 0, -1)) == ["msg"]
    assert abs(int(r.zscore(QUEUED, JOB) or 0) - server_ms(r)) < 5_000  # queued since now
    r.hset(J, "state", "running")
    r.set(LEASE, "w1")
    assert hand_off(r, message="") == 1  # another broker publishes: nothing pushed
    assert hgetall(r, J)["failovers"] == "2" and r.llen(QUEUE) == 1 and r.type(J) == b"hash"


@case("job_hand_off", "no job id to index ('')")
def test_hand_off_with_no_queued_index(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=1)
    redis_client.set(LEASE, "w1")
    assert hand_off(redis_client, index="") == 1
    assert hgetall(redis_client, J)["state"] == "queued"
    assert not redis_client.exists(QUEUED)


@case("job_hand_off", "not running")
def test_hand_off_a_job_that_is_not_running(redis_client: redis.Redis) -> None:
    a_job(redis_client, "deferred")
    redis_client.set(LEASE, "w1")
    before = hgetall(redis_client, J)
    assert hand_off(redis_client) == 0
    assert hgetall(redis_client, J) == before and not redis_client.exists(QUEUE)


@case("job_hand_off", "lease not ours (or gone)")
def test_hand_off_by_a_worker_without_the_lease(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running")
    before = hgetall(redis_client, J)
    assert hand_off(redis_client) == 0
    redis_client.set(LEASE, "w2")
    assert hand_off(redis_client) == 0
    assert hgetall(redis_client, J) == before and not redis_client.exists(QUEUE)


def release(r: redis.Redis, limit: int = 100, index: str = "1") -> list[str]:
    args = [limit, f"{keys.PREFIX}:job:", index]
    return s(run(r, "job_release", [DEFERRED_SET, QUEUED], args))


def a_deferred_job(r: redis.Redis, job_id: str, due_in_ms: int, message: str = "msg") -> None:
    a_job(r, "deferred", job_id, requeue=message, requeue_to="queue-list", priority="high")
    r.zadd(DEFERRED_SET, {job_id: server_ms(r) + due_in_ms})


@case("job_release", "due, still deferred")
def test_release_a_due_job(redis_client: redis.Redis) -> None:
    r = redis_client
    a_deferred_job(r, "d1", -1)
    assert release(r) == ["d1", "mock", "high"]
    record = hgetall(r, keys.job("d1"))
    assert record["state"] == "queued" and "requeue" not in record
    assert s(r.lrange("queue-list", 0, -1)) == ["msg"]
    assert not r.exists(DEFERRED_SET)
    assert abs(int(r.zscore(QUEUED, "d1") or 0) - server_ms(r)) < 5_000


@case("job_release", "due, not to be indexed ('')")
def test_release_with_no_queued_index(redis_client: redis.Redis) -> None:
    a_deferred_job(redis_client, "d1", -1)
    assert release(redis_client, index="") == ["d1", "mock", "high"]
    assert hgetall(redis_client, keys.job("d1"))["state"] == "queued"
    assert not redis_client.exists(QUEUED)


@case("job_release", "due, no stored message")
def test_release_a_due_job_with_no_stored_message(redis_client: redis.Redis) -> None:
    r = redis_client
    a_deferred_job(r, "d1", -1, message="")
    a_job(r, "deferred", "d2")  # no requeue fields at all, no priority stored
    r.zadd(DEFERRED_SET, {"d2": server_ms(r) - 1})
    assert release(r) == ["d1", "mock", "high", "d2", "mock", "normal"]
    assert hgetall(r, keys.job("d2"))["state"] == "queued"
    assert not r.exists("queue-list")


@case("job_release", "due, no longer deferred (cancelled, expired, gone)")
def test_release_drops_jobs_no_longer_deferred(redis_client: redis.Redis) -> None:
    r = redis_client
    a_deferred_job(r, "d1", -1)
    r.hset(keys.job("d1"), "state", "cancelled")
    a_deferred_job(r, "d2", -1)
    r.hset(keys.job("d2"), "state", "expired")
    r.zadd(DEFERRED_SET, {"d3": server_ms(r) - 1})  # no record
    assert release(r) == []
    assert not r.exists(DEFERRED_SET, "queue-list", keys.job("d3"))
    assert hgetall(r, keys.job("d1"))["state"] == "cancelled"


@case("job_release", "not due yet")
def test_release_leaves_jobs_not_due(redis_client: redis.Redis) -> None:
    a_deferred_job(redis_client, "d1", 60_000)
    assert release(redis_client) == []
    assert s(redis_client.zrange(DEFERRED_SET, 0, -1)) == ["d1"]
    assert hgetall(redis_client, keys.job("d1"))["state"] == "deferred"


@case("job_release", "more due than the limit")
def test_release_moves_at_most_the_limit(redis_client: redis.Redis) -> None:
    r = redis_client
    for i, job_id in enumerate(("d1", "d2", "d3")):
        a_deferred_job(r, job_id, -3 + i)
    assert release(r, limit=2)[::3] == ["d1", "d2"]  # the longest due first
    assert s(r.zrange(DEFERRED_SET, 0, -1)) == ["d3"]
    assert release(r, limit=2)[::3] == ["d3"]


def renew(r: redis.Redis, job_ids: list[str], worker: str = "w1") -> list[int]:
    pairs = [k for job_id in job_ids for k in (keys.job(job_id), keys.job_lease(job_id))]
    return list(run(r, "job_renew", pairs, [worker, 10_000]))


@case("job_renew", "lease ours")
def test_renew_a_lease_this_worker_holds(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", worker="w1")
    redis_client.set(LEASE, "w1", px=1_000)
    assert renew(redis_client, [JOB]) == []
    assert 1_000 < redis_client.pttl(LEASE) <= 10_000


@case("job_renew", "lease gone, job running here (Redis restarted)")
def test_renew_takes_back_a_lost_lease_of_a_job_it_runs(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", worker="w1")
    assert renew(redis_client, [JOB]) == []
    assert s(redis_client.get(LEASE)) == "w1" and 0 < redis_client.pttl(LEASE) <= 10_000


@case("job_renew", "lease gone, job answered by this worker just now")
def test_renew_keeps_a_job_this_worker_just_answered(redis_client: redis.Redis) -> None:
    a_job(redis_client, "succeeded", "j1", worker="w1")
    a_job(redis_client, "failed", "j2", worker="w1")
    assert renew(redis_client, ["j1", "j2"]) == []
    assert not redis_client.exists(keys.job_lease("j1"), keys.job_lease("j2"))


@case(
    "job_renew",
    "lease another worker's, or job ended elsewhere, cancelled, expired, or gone",
)
def test_renew_reports_the_jobs_this_worker_lost(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", "ours", worker="w1")
    r.set(keys.job_lease("ours"), "w1")
    a_job(r, "running", "taken", worker="w2")
    r.set(keys.job_lease("taken"), "w2")
    a_job(r, "succeeded", "elsewhere", worker="w2")
    a_job(r, "cancelled", "cancelled", worker="w1")
    a_job(r, "expired", "expired", worker="w1")
    jobs = ["ours", "taken", "elsewhere", "cancelled", "expired", "gone"]
    assert renew(r, jobs) == [1, 2, 3, 4, 5]
    assert s(r.get(keys.job_lease("taken"))) == "w2"
    assert not r.exists(*(keys.job_lease(j) for j in jobs[2:]))


def cancel(r: redis.Redis) -> int:
    return int(run(r, "job_cancel", JOB_KEYS, [CHANNEL, "cancelled", CANCEL, TTL]))


@case("job_cancel", "queued, running or deferred")
def test_cancel_a_job_that_has_not_ended(redis_client: redis.Redis) -> None:
    r = redis_client
    for state in ("queued", "running", "deferred"):
        r.delete(J, EVENTS)
        a_job(r, state)
        r.set(LEASE, "w1")
        assert cancel(r) == 1, state
        assert error_code(r) == "E4403"
        ended(r, "cancelled")


@case("job_cancel", "already ended")
def test_cancel_an_ended_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running")
    assert cancel(redis_client) == 1
    assert cancel(redis_client) == 0
    assert len(events(redis_client)) == 1


@case("job_cancel", "no record")
def test_cancel_a_job_with_no_record(redis_client: redis.Redis) -> None:
    assert cancel(redis_client) == 0
    assert redis_client.keys("*") == []


Q_HIGH, Q_NORMAL = "l04:q:high", "l04:q:normal"


def create(
    r: redis.Redis,
    message: str = "msg",
    depth: int = 3,
    index: str = JOB,
    expire_in_ms: int = 60_000,
    **fields: str,
) -> str:
    expire_at = server_ms(r) + expire_in_ms
    push_to = Q_NORMAL if message else J
    flat = [x for pair in {"provider": "mock", **fields}.items() for x in pair]
    keys_ = [J, Q_HIGH, Q_NORMAL, push_to, QUEUED]
    return str(s(run(r, "job_create", keys_, [expire_at, depth, message, index, *flat])))


@case("job_create", "new job, room in the queue")
def test_create_a_new_job(redis_client: redis.Redis) -> None:
    r = redis_client
    r.lpush(Q_HIGH, "a")
    before = server_ms(r)
    assert create(r, request="{}") == "created"
    record = hgetall(r, J)
    assert (record["state"], record["attempt"], record["request"]) == ("queued", "0", "{}")
    assert before <= int(record["created_ms"]) <= server_ms(r)
    assert 0 < r.pttl(J) <= 60_000
    assert s(r.lrange(Q_NORMAL, 0, -1)) == ["msg"]
    assert r.zscore(QUEUED, JOB) is not None


@case("job_create", "a job with this id exists")
def test_create_a_job_that_exists(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running")
    before = hgetall(redis_client, J)
    assert create(redis_client, provider="other") == "running"
    assert hgetall(redis_client, J) == before and not redis_client.exists(Q_NORMAL)


@case("job_create", "the queue's lists hold max depth")
def test_create_when_the_queue_is_full(redis_client: redis.Redis) -> None:
    redis_client.lpush(Q_HIGH, "a", "b")
    redis_client.lpush(Q_NORMAL, "c")
    assert create(redis_client, depth=3) == "full"
    assert not redis_client.exists(J) and redis_client.llen(Q_NORMAL) == 1
    assert not redis_client.exists(QUEUED)


@case("job_create", "no message ('')")
def test_create_with_no_message_to_push(redis_client: redis.Redis) -> None:
    assert create(redis_client, message="") == "created"
    assert redis_client.type(J) == b"hash"
    assert not redis_client.exists(Q_HIGH, Q_NORMAL)


@case("job_create", "a job id to index")
def test_create_records_the_job_in_the_queued_index(redis_client: redis.Redis) -> None:
    r = redis_client
    before = server_ms(r)
    assert create(r, expire_in_ms=60_000) == "created"
    assert before <= int(r.zscore(QUEUED, JOB) or 0) <= server_ms(r)
    assert 50_000 < r.pttl(QUEUED) <= 60_000  # as long as the record it holds

    def another(job_id: str, expire_in_ms: int) -> None:
        keys_ = [keys.job(job_id), Q_HIGH, Q_NORMAL, Q_NORMAL, QUEUED]
        args = [server_ms(r) + expire_in_ms, 10, "m", job_id, "provider", "mock"]
        assert s(run(r, "job_create", keys_, args)) == "created"

    another("shorter", 10_000)  # never lowered: the first record is still there
    assert 50_000 < r.pttl(QUEUED) <= 60_000
    another("longer", 120_000)  # raised to the longest-lived record's
    assert 110_000 < r.pttl(QUEUED) <= 120_000
    assert set(s(r.zrange(QUEUED, 0, -1))) == {JOB, "shorter", "longer"}


@case("job_create", "no job id to index ('')")
def test_create_with_no_queued_index(redis_client: redis.Redis) -> None:
    assert create(redis_client, index="") == "created"
    assert hgetall(redis_client, J)["state"] == "queued"
    assert not redis_client.exists(QUEUED)


def expire(r: redis.Redis, grace: float = 0.0) -> int:
    return int(run(r, "job_expire", JOB_KEYS, [CHANNEL, TTL, grace]))


@case("job_expire", "queued past the deadline")
def test_expire_a_queued_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued", deadline=repr(time.time() - 1))
    assert expire(redis_client) == 1
    assert error_code(redis_client) == "E4404"
    ended(redis_client, "expired")


@case("job_expire", "running past the deadline")
def test_expire_a_running_job(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", deadline=repr(time.time() - 1), deferrals=1)
    redis_client.set(LEASE, "w1")
    assert expire(redis_client) == 1
    assert error_code(redis_client) == "E4205"  # running: its wait for a limit is over
    ended(redis_client, "expired")


@case("job_expire", "waited for a rate limit (deferred)")
def test_expire_a_job_that_waited_for_a_rate_limit(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "deferred", deadline=repr(time.time() - 1), deferrals=1)
    assert expire(r) == 1
    assert error_code(r) == "E4401"
    ended(r, "expired")
    r.delete(J, EVENTS)
    a_job(r, "queued", deadline=repr(time.time() - 1), deferrals=1)  # released, not yet run
    assert expire(r) == 1
    assert error_code(r) == "E4401"


@case("job_expire", "deadline + grace not passed")
def test_expire_before_the_deadline_and_grace(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued", deadline=repr(time.time() - 1))
    assert expire(redis_client, grace=60) == -3
    redis_client.hset(J, "deadline", repr(time.time() + 60))
    assert expire(redis_client) == -3
    assert hgetall(redis_client, J)["state"] == "queued" and not redis_client.exists(EVENTS)


@case("job_expire", "no deadline field")
def test_expire_a_job_without_a_deadline(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued")
    redis_client.hdel(J, "deadline")
    assert expire(redis_client) == -3
    assert not redis_client.exists(EVENTS)


@case("job_expire", "already ended, or no record")
def test_expire_an_ended_job_or_none(redis_client: redis.Redis) -> None:
    assert expire(redis_client) == 0
    assert redis_client.keys("*") == []
    a_job(redis_client, "succeeded", deadline=repr(time.time() - 1))
    assert expire(redis_client) == 0
    assert hgetall(redis_client, J)["state"] == "succeeded" and not redis_client.exists(EVENTS)


# --- the orphan sweeper's scripts ---------------------------------------------------------------

UNSEEN = "l04:orphans:{t1}:unseen"
LIST = "l04.mock\x06\x165"


def task_message(job_id: str) -> str:
    """The message submit pushes for ``job_id`` (tasks/message.py), as kombu would publish it."""
    app = create_app(load_settings(REDIS_URL="redis://localhost:1/0"))
    return build_task_message(app, job_id, make_envelope(job_id), "l04.mock", 5)


def scan(r: redis.Redis, kind: str, where: str, count: int, key: str = LIST) -> list[Any]:
    nxt, read, left = run(r, "orphan_scan", [UNSEEN, key], [kind, where, count])
    return [s(nxt), read, left]


@case("orphan_scan", "a list's message of a job not seen yet")
def test_scan_strikes_off_a_job_whose_message_is_on_the_list(redis_client: redis.Redis) -> None:
    r = redis_client
    r.sadd(UNSEEN, "a", "b", "c")
    r.lpush(LIST, task_message("a"), task_message("c"))
    assert scan(r, "list", "0", 10) == ["", 2, 1]
    assert members(r, UNSEEN) == {"b"}
    # Compact JSON, and a message kombu restored (it adds the redelivered flags), read the same.
    restored = json.loads(task_message("b"))
    restored["headers"]["redelivered"] = True
    restored["properties"]["delivery_info"]["redelivered"] = True
    r.rpush(LIST, json.dumps(restored, separators=(",", ":")))
    assert scan(r, "list", "0", 10) == ["", 3, 0]


@case("orphan_scan", "a value of another job, or no message")
def test_scan_leaves_jobs_whose_message_it_does_not_find(redis_client: redis.Redis) -> None:
    r = redis_client
    r.sadd(UNSEEN, "a", "job-1")
    preview = json.loads(task_message("x"))
    # A prompt preview that quotes an "id" names no job: the header's id comes first.
    preview["headers"]["argsrepr"] = '[{"id": "a"}]'
    garbage = ["\xff not json", '{"headers": {}}', "[]", json.dumps(preview)]
    r.rpush(LIST, task_message("other"), *garbage, '{"id": ""}')
    assert scan(r, "list", "0", 100) == ["", 6, 2]
    assert members(r, UNSEEN) == {"a", "job-1"}


@case("orphan_scan", "the list read to its end (fewer than asked, or none)")
def test_scan_reads_a_list_chunk_by_chunk(redis_client: redis.Redis) -> None:
    r = redis_client
    ids = [f"j{i}" for i in range(5)]
    r.sadd(UNSEEN, *ids, "lost")
    r.lpush(LIST, *(task_message(i) for i in ids))
    assert scan(r, "list", "0", 2) == ["2", 2, 4]
    assert scan(r, "list", "2", 2) == ["4", 2, 2]
    assert scan(r, "list", "4", 2) == ["", 1, 1]
    assert scan(r, "list", "0", 2, key="no-such-list") == ["", 0, 1]
    assert members(r, UNSEEN) == {"lost"}


@case("orphan_scan", "the unacked hash (values [message, exchange, routing key])")
def test_scan_finds_messages_kombu_delivered_and_holds_unacknowledged(
    redis_client: redis.Redis,
) -> None:
    r = redis_client
    ids = [f"j{i}" for i in range(300)]  # a hash large enough for HSCAN to take turns
    r.sadd(UNSEEN, *ids, "lost")
    for i in ids:
        value = json.dumps([json.loads(task_message(i)), "", "l04.mock"])
        r.hset("unacked", str(uuid.uuid4()), value)
    where, reads, left = "0", 0, 301
    while True:
        where, read, left = scan(r, "hash", where, 100, key="unacked")
        reads += read
        if where == "":
            break
    assert reads == 300 and left == 1
    assert members(r, UNSEEN) == {"lost"}


def candidates(r: redis.Redis, last: str = "", score: str = "", count: int = 3) -> list[str]:
    return s(run(r, "orphan_candidates", [QUEUED], [10_000, last, score, count]))


def indexed(r: redis.Redis, ages_ms: dict[str, int]) -> None:
    now = server_ms(r)
    r.zadd(QUEUED, {job_id: now - age for job_id, age in ages_ms.items()})


@case("orphan_candidates", "the first page")
def test_candidates_first_page_is_the_oldest_old_enough(redis_client: redis.Redis) -> None:
    r = redis_client
    indexed(r, {"a": 50_000, "b": 40_000, "c": 30_000, "d": 20_000, "young": 1_000})
    page = candidates(r)
    assert page[1:] == ["a", "b", "c"]
    assert int(page[0]) == int(r.zscore(QUEUED, "c") or 0)
    assert candidates(r, count=10)[1:] == ["a", "b", "c", "d"]  # not the young one


@case("orphan_candidates", "a later page, its last job still there")
def test_candidates_later_page_goes_on_after_its_last(redis_client: redis.Redis) -> None:
    r = redis_client
    indexed(r, {f"j{i}": 60_000 - i for i in range(7)} | {"young": 0})
    first = candidates(r)
    r.zrem(QUEUED, "j4")  # a job after the page is claimed meanwhile
    second = candidates(r, first[-1], first[0])
    assert second[1:] == ["j3", "j5", "j6"]
    assert candidates(r, second[-1], second[0]) == [""]


@case("orphan_candidates", "a later page, its last job gone (claimed)")
def test_candidates_later_page_after_its_last_was_claimed(redis_client: redis.Redis) -> None:
    r = redis_client
    now = server_ms(r)
    r.zadd(QUEUED, {"a": now - 50_000, "b": now - 40_000, "c": now - 40_000, "d": now - 30_000})
    first = candidates(r, count=2)
    assert first[1:] == ["a", "b"]
    r.zrem(QUEUED, "a", "b")  # both claimed: by rank alone it would go on at 2, past "d"
    assert candidates(r, first[-1], first[0], count=2)[1:] == ["c", "d"]


@case("orphan_candidates", "no job (left) queued long enough")
def test_candidates_none_old_enough(redis_client: redis.Redis) -> None:
    r = redis_client
    assert candidates(r) == [""]
    indexed(r, {"young": 5_000, "a": 20_000})
    assert candidates(r)[1:] == ["a"]
    assert candidates(r, "a", str(int(r.zscore(QUEUED, "a") or 0))) == [""]


SUSPECTS, NEXT_SUSPECTS = keys.ORPHAN_SUSPECTS, "l04:orphans:{t1}:suspects"


def check(
    r: redis.Redis, ids: list[str], last: bool = True, token: str = "t1", min_age: int = 10_000
) -> list[str]:
    keys_ = [QUEUED, SUSPECTS, NEXT_SUSPECTS, keys.ORPHAN_SWEEPER]
    args = [token, 60_000, "1" if last else "", f"{keys.PREFIX}:job:", min_age, *ids]
    return s(run(r, "orphan_check", keys_, args))


def queued_since(r: redis.Redis, job_id: str, ago_ms: int, **fields: Any) -> None:
    a_job(r, "queued", job_id, priority="high", **fields)
    r.zadd(QUEUED, {job_id: server_ms(r) - ago_ms})


@case("orphan_check", "queued long enough, the last sweep's suspect too")
def test_check_returns_a_job_two_sweeps_missed(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 60_000)
    queued_since(r, "j2", 60_000, provider="openai")
    r.sadd(SUSPECTS, "j1", "j2")
    assert check(r, ["j1", "j2"]) == ["ok", "j1", "mock", "high", "j2", "openai", "high"]
    assert not r.exists(SUSPECTS)  # acted on: no one's suspect any more
    assert r.zcard(QUEUED) == 2  # still queued until they are acted on


@case("orphan_check", "queued long enough, missed for the first time")
def test_check_makes_a_first_miss_a_suspect(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 60_000)
    assert check(r, ["j1"], last=False) == ["ok"]
    assert members(r, NEXT_SUSPECTS) == {"j1"} and 0 < r.pttl(NEXT_SUSPECTS) <= 60_000
    assert check(r, [], last=True) == ["ok"]  # the sweep's end: its suspects are the last's
    assert members(r, SUSPECTS) == {"j1"} and not r.exists(NEXT_SUSPECTS)
    assert check(r, ["j1"]) == ["ok", "j1", "mock", "high"]  # the next sweep misses it again


@case("orphan_check", "queued less than min age ago (queued anew meanwhile)")
def test_check_leaves_a_job_queued_just_now(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 1_000)
    r.sadd(SUSPECTS, "j1")
    a_job(r, "queued", "unindexed")
    assert check(r, ["j1", "unindexed"]) == ["ok"]
    assert not r.exists(SUSPECTS, NEXT_SUSPECTS)
    assert r.zscore(QUEUED, "j1") is not None


@case("orphan_check", "not queued any more (claimed, ended, deferred) or no record")
def test_check_prunes_jobs_no_longer_queued(redis_client: redis.Redis) -> None:
    r = redis_client
    for job_id, state in (("r", "running"), ("s", "succeeded"), ("d", "deferred")):
        a_job(r, state, job_id)
        r.zadd(QUEUED, {job_id: 1})
    r.zadd(QUEUED, {"gone": 1, "kept": 1})
    a_job(r, "queued", "kept")
    r.sadd(SUSPECTS, "r", "gone")
    assert check(r, ["r", "s", "d", "gone"]) == ["ok"]
    assert s(r.zrange(QUEUED, 0, -1)) == ["kept"]
    assert not r.exists(SUSPECTS, NEXT_SUSPECTS)


@case("orphan_check", "the last call")
def test_check_last_call_replaces_the_suspects(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "new", 60_000)
    r.sadd(SUSPECTS, "found-since")  # missed by the last sweep, found by this one
    assert check(r, ["new"], last=False) == ["ok"]
    assert members(r, SUSPECTS) == {"found-since"}  # not before the last call
    assert check(r, [], last=True) == ["ok"]
    assert members(r, SUSPECTS) == {"new"} and 0 < r.pttl(SUSPECTS) <= 60_000
    assert check(r, [], last=True) == ["ok"]  # a sweep that missed none
    assert not r.exists(SUSPECTS)


@case("orphan_check", "the lease another sweeper's")
def test_check_is_fenced_by_another_sweepers_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 60_000)
    a_job(r, "succeeded", "ended")
    r.zadd(QUEUED, {"ended": 1})
    r.sadd(SUSPECTS, "j1")
    r.set(keys.ORPHAN_SWEEPER, "t2", px=10_000)
    assert check(r, ["j1", "ended"]) == ["fenced"]
    assert members(r, SUSPECTS) == {"j1"} and r.zcard(QUEUED) == 2


@case("orphan_check", "the lease the caller's")
def test_check_extends_its_callers_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 60_000)
    r.set(keys.ORPHAN_SWEEPER, "t1", px=100)
    assert check(r, ["j1"]) == ["ok"]
    assert 9_000 < r.pttl(keys.ORPHAN_SWEEPER) <= 10_000  # min age (a period) from now
    assert members(r, SUSPECTS) == {"j1"}


@case("orphan_check", "the lease lapsed and nobody else's")
def test_check_works_once_its_lease_lapsed(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, "j1", 60_000)
    r.sadd(SUSPECTS, "j1")
    assert check(r, ["j1"]) == ["ok", "j1", "mock", "high"]
    r.set(keys.ORPHAN_SWEEPER, "t1", px=10_000)  # and with its own lease
    r.sadd(SUSPECTS, "j1")
    assert check(r, ["j1"]) == ["ok", "j1", "mock", "high"]


ORPHAN_LIST = "l04.mock"


def requeue(
    r: redis.Redis,
    job_id: str = JOB,
    message: str = "msg",
    allowed: int = 1,
    token: str = "t1",
) -> str:
    keys_ = [
        keys.job(job_id),
        keys.job_events(job_id),
        keys.job_lease(job_id),
        QUEUED,
        keys.ORPHAN_SWEEPER,
        ORPHAN_LIST if message else keys.job(job_id),
    ]
    args = [job_id, token, keys.job_channel(job_id), TTL, message, allowed, 10_000]
    return str(s(run(r, "orphan_requeue", keys_, args)))


@case("orphan_requeue", "queued long enough, requeued fewer times than allowed")
def test_requeue_an_orphan(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, JOB, 60_000)
    r.rpush(ORPHAN_LIST, "waiting")
    assert requeue(r) == "requeued"
    record = hgetall(r, J)
    assert (record["state"], record["orphaned"], record["attempt"]) == ("queued", "1", "0")
    assert s(r.lrange(ORPHAN_LIST, 0, -1)) == ["waiting", "msg"]  # popped first (BRPOP)
    assert abs(int(r.zscore(QUEUED, JOB) or 0) - server_ms(r)) < 5_000
    assert not r.exists(EVENTS)


@case("orphan_requeue", "no message ('')")
def test_requeue_an_orphan_another_broker_publishes(redis_client: redis.Redis) -> None:
    queued_since(redis_client, JOB, 60_000)
    assert requeue(redis_client, message="") == "requeued"
    assert hgetall(redis_client, J)["orphaned"] == "1"
    assert not redis_client.exists(ORPHAN_LIST) and redis_client.type(J) == b"hash"


@case("orphan_requeue", "requeued as often as allowed (or 0 allowed)")
def test_requeue_fails_an_orphan_lost_again(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, JOB, 60_000, orphaned=1)
    listener = r.pubsub()
    listener.subscribe(INBOX)
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    assert requeue(r) == "failed"
    (event,) = events(r)
    assert event["error"] == {
        "code": "E4206",
        "message": "the job's queue message was lost 2 times",
        "retryable": False,
    }
    heard = listener.get_message(timeout=2)
    listener.close()
    assert heard is not None and "E4206" in s(heard["data"])  # its caller is told at once
    ended(r, "failed")
    assert not r.exists(ORPHAN_LIST, QUEUED)
    r.delete(J, EVENTS)
    queued_since(r, JOB, 60_000)
    assert requeue(r, allowed=0) == "failed"  # no message can be built for it
    assert "cannot be rebuilt" in events(r)[0]["error"]["message"]


@case("orphan_requeue", "queued less than min age ago, or not in the index")
def test_requeue_skips_a_job_queued_anew(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, JOB, 1_000)
    before = hgetall(r, J)
    assert requeue(r) == "skipped"
    r.zrem(QUEUED, JOB)
    assert requeue(r) == "skipped"
    assert hgetall(r, J) == before and not r.exists(ORPHAN_LIST, EVENTS)


@case("orphan_requeue", "not queued any more, or no record")
def test_requeue_skips_a_job_no_longer_queued(redis_client: redis.Redis) -> None:
    r = redis_client
    for state in ("running", "deferred", "cancelled"):
        r.delete(J)
        a_job(r, state)
        r.zadd(QUEUED, {JOB: 1})
        assert requeue(r) == "skipped"
        assert hgetall(r, J)["state"] == state and not r.exists(QUEUED)
    r.delete(J)
    r.zadd(QUEUED, {JOB: 1})
    assert requeue(r) == "skipped"
    assert r.keys("*") == []


@case("orphan_requeue", "the sweeper's lease another's")
def test_requeue_is_fenced_by_another_sweepers_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, JOB, 60_000)
    r.set(keys.ORPHAN_SWEEPER, "t2")
    before = hgetall(r, J)
    assert requeue(r) == "fenced"
    assert hgetall(r, J) == before and not r.exists(ORPHAN_LIST)
    r.set(keys.ORPHAN_SWEEPER, "t1")
    assert requeue(r) == "requeued"


@case("orphan_requeue", "the sweeper's lease the caller's")
def test_requeue_extends_its_callers_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    queued_since(r, JOB, 60_000)
    r.set(keys.ORPHAN_SWEEPER, "t1", px=100)
    assert requeue(r) == "requeued"
    assert 9_000 < r.pttl(keys.ORPHAN_SWEEPER) <= 10_000  # min age (a period) from now
    r.delete(keys.ORPHAN_SWEEPER)
    assert requeue(r, job_id="other") == "skipped"  # no record; and no lease taken
    assert not r.exists(keys.ORPHAN_SWEEPER)


# --- circuit breakers ---------------------------------------------------------------------------

PROVIDER, DEPLOYMENT = keys.breaker("openai"), keys.breaker("openai:gpt-4o")
RECOVERY_MS, PROBE_TTL_MS = 10_000, 4_000
CLOSED, HALF_OPEN, OPEN = 0, 1, 2


def allow(r: redis.Redis, *breakers: str, probes: int = 1) -> list[int]:
    return list(run(r, "breaker_allow", list(breakers), [RECOVERY_MS, probes, PROBE_TTL_MS]))


def opened(r: redis.Redis, key: str, ago_ms: int) -> None:
    r.hset(key, mapping={"state": OPEN, "opened_at": server_ms(r) - ago_ms, "probes": 0})


@case("breaker_allow", "no hash (closed, never failed)")
def test_allow_through_breakers_that_never_failed(redis_client: redis.Redis) -> None:
    assert allow(redis_client, PROVIDER, DEPLOYMENT) == [1, CLOSED, 0, 1]
    assert redis_client.keys("*") == []


@case("breaker_allow", "closed with failures counted")
def test_allow_through_a_closed_breaker_with_failures(redis_client: redis.Redis) -> None:
    redis_client.hset(DEPLOYMENT, "failures", 2)
    assert allow(redis_client, PROVIDER, DEPLOYMENT) == [1, CLOSED, 0, 0]  # not clean
    assert hgetall(redis_client, DEPLOYMENT) == {"failures": "2"}


@case("breaker_allow", "open, recovery not over")
def test_allow_refused_by_an_open_breaker(redis_client: redis.Redis) -> None:
    opened(redis_client, PROVIDER, ago_ms=3_000)
    allowed, state, wait, clean = allow(redis_client, PROVIDER)
    assert (allowed, state, clean) == (0, OPEN, 0)
    assert 6_000 <= wait <= 7_000
    assert hgetall(redis_client, PROVIDER)["state"] == str(OPEN)


@case("breaker_allow", "open, recovery over")
def test_allow_a_probe_once_recovery_is_over(redis_client: redis.Redis) -> None:
    opened(redis_client, PROVIDER, ago_ms=RECOVERY_MS + 1)
    assert allow(redis_client, PROVIDER) == [1, HALF_OPEN, 0, 0]
    record = hgetall(redis_client, PROVIDER)
    assert (record["state"], record["probes"]) == (str(HALF_OPEN), "1")
    assert RECOVERY_MS < redis_client.pttl(PROVIDER) <= RECOVERY_MS + PROBE_TTL_MS


@case("breaker_allow", "half-open, every probe taken")
def test_allow_refused_when_every_probe_is_out(redis_client: redis.Redis) -> None:
    redis_client.hset(PROVIDER, mapping={"state": HALF_OPEN, "probes": 1, "opened_at": 0})
    assert allow(redis_client, PROVIDER, probes=2) == [1, HALF_OPEN, 0, 0]
    assert allow(redis_client, PROVIDER, probes=2) == [0, HALF_OPEN, PROBE_TTL_MS, 0]
    assert hgetall(redis_client, PROVIDER)["probes"] == "2"


@case("breaker_allow", "first breaker refuses")
def test_allow_asks_no_breaker_after_one_that_refused(redis_client: redis.Redis) -> None:
    opened(redis_client, PROVIDER, ago_ms=0)
    opened(redis_client, DEPLOYMENT, ago_ms=RECOVERY_MS + 1)  # would give a probe if asked
    assert allow(redis_client, PROVIDER, DEPLOYMENT)[:2] == [0, OPEN]
    assert hgetall(redis_client, DEPLOYMENT)["state"] == str(OPEN)
    assert hgetall(redis_client, DEPLOYMENT)["probes"] == "0"


@case("breaker_allow", "first allows, second refuses")
def test_allow_refused_by_the_second_breaker(redis_client: redis.Redis) -> None:
    redis_client.hset(PROVIDER, "failures", 1)
    opened(redis_client, DEPLOYMENT, ago_ms=1_000)
    allowed, state, wait, clean = allow(redis_client, PROVIDER, DEPLOYMENT)
    assert (allowed, state, clean) == (0, OPEN, 0) and 8_000 <= wait <= 9_000


@case("breaker_allow", "first gives a probe, second refuses")
def test_allow_gives_back_a_probe_no_call_will_use(redis_client: redis.Redis) -> None:
    """A half-open provider with one probe, and one of its models still open: a call to that
    model is refused, and must not keep the provider's probe (it would refuse the provider's
    other models until the hash expired, and then close with no probe having succeeded)."""
    r = redis_client
    opened(r, PROVIDER, ago_ms=RECOVERY_MS + 1)
    opened(r, DEPLOYMENT, ago_ms=1_000)
    assert allow(r, PROVIDER, DEPLOYMENT)[:2] == [0, OPEN]
    record = hgetall(r, PROVIDER)
    assert (record["state"], record["probes"]) == (str(HALF_OPEN), "0")
    other_model = keys.breaker("openai:gpt-4o-mini")
    assert allow(r, PROVIDER, other_model)[0] == 1  # the probe is there for it
    assert hgetall(r, PROVIDER)["probes"] == "1"


def report(r: redis.Redis, outcome: str, threshold: int = 3) -> int:
    return int(run(r, "breaker_report", [PROVIDER], [outcome, threshold, 60_000]))


@case("breaker_report", "success, no hash (closed, clean)")
def test_report_a_success_to_a_clean_breaker(redis_client: redis.Redis) -> None:
    assert report(redis_client, "success") == CLOSED
    assert redis_client.keys("*") == []


@case("breaker_report", "success, failures counted, open or half-open")
def test_report_a_success_closes_the_breaker(redis_client: redis.Redis) -> None:
    r = redis_client
    for record in (
        {"failures": 2},
        {"state": OPEN, "opened_at": server_ms(r), "probes": 0, "failures": 0},
        {"state": HALF_OPEN, "opened_at": 0, "probes": 1},
    ):
        r.hset(PROVIDER, mapping=record)
        assert report(r, "success") == CLOSED
        assert not r.exists(PROVIDER), record


@case("breaker_report", "failure, closed, below the threshold")
def test_report_a_failure_below_the_threshold(redis_client: redis.Redis) -> None:
    assert report(redis_client, "failure") == CLOSED
    assert report(redis_client, "failure") == CLOSED
    assert hgetall(redis_client, PROVIDER) == {"failures": "2"}
    assert 0 < redis_client.pttl(PROVIDER) <= 60_000


@case("breaker_report", "failure reaching the threshold")
def test_report_the_failure_that_opens_the_breaker(redis_client: redis.Redis) -> None:
    redis_client.hset(PROVIDER, "failures", 2)
    before = server_ms(redis_client)
    assert report(redis_client, "failure", threshold=3) == OPEN
    record = hgetall(redis_client, PROVIDER)
    assert (record["state"], record["failures"], record["probes"]) == (str(OPEN), "0", "0")
    assert before <= int(record["opened_at"]) <= server_ms(redis_client)
    assert 0 < redis_client.pttl(PROVIDER) <= 60_000


@case("breaker_report", "failure while half-open (a probe failed)")
def test_report_a_failed_probe_opens_the_breaker_again(redis_client: redis.Redis) -> None:
    redis_client.hset(PROVIDER, mapping={"state": HALF_OPEN, "opened_at": 5, "probes": 1})
    before = server_ms(redis_client)
    assert report(redis_client, "failure") == OPEN
    record = hgetall(redis_client, PROVIDER)
    assert (record["state"], record["probes"]) == (str(OPEN), "0")
    assert before <= int(record["opened_at"]) <= server_ms(redis_client)
    assert 0 < redis_client.pttl(PROVIDER) <= 60_000


@case("breaker_report", "failure while open")
def test_report_a_failure_while_open(redis_client: redis.Redis) -> None:
    opened(redis_client, PROVIDER, ago_ms=500)
    redis_client.pexpire(PROVIDER, 5_000)
    before = hgetall(redis_client, PROVIDER)
    assert report(redis_client, "failure") == OPEN
    assert hgetall(redis_client, PROVIDER) == before
    assert redis_client.pttl(PROVIDER) <= 5_000  # its expiry not pushed back


# --- rate limits --------------------------------------------------------------------------------

WINDOW, BUCKET = 60_000, 1_000
RPM, TPM = keys.rate_limit("mock", "m", "rpm"), keys.rate_limit("mock", "m", "tpm")
AGENT_RPM = keys.rate_limit("mock", "m", "rpm", agent="a")
ROOM = keys.waiting_room("mock", "m")
ORDER, DUE, META = f"{ROOM}:order", f"{ROOM}:due", f"{ROOM}:meta"
BAND = 2**40


def admit(
    r: redis.Redis,
    limits: list[tuple[str, int, int, bool, str]],
    *,
    room: bool = False,
    job: str = "me",
    band: int = 1,
    agent: str = "a",
    join: bool = True,
    deadline_ms: int = 0,
    slack_ms: int = 0,
) -> list[int]:
    """One decision; ``limits`` as (key, capacity, amount, shared, kind)."""
    limit_keys = [key for key, *_ in limits]
    args: list[Any] = [WINDOW, BUCKET, len(limits)]
    if room:
        limit_keys += [ORDER, DUE, META]
        args += [job, band, agent, int(join), deadline_ms, slack_ms]
    else:
        args += ["", 0, "", 0, 0, 0]
    for _, capacity, amount, shared, kind in limits:
        args += [capacity, amount, int(shared), kind]
    return list(run(r, "rate_limit_admit", limit_keys, args))


def bucket_now(r: redis.Redis) -> int:
    return server_ms(r) // BUCKET


def counts(r: redis.Redis, key: str) -> dict[int, int]:
    return {int(b): int(c) for b, c in r.hgetall(key).items()}


def waiting(r: redis.Redis, job: str, band: int, tag: int, tokens: int = 0) -> None:
    """``job`` holds a place in the room (due a minute from now)."""
    r.zadd(ORDER, {job: band * BAND + tag})
    r.zadd(DUE, {job: server_ms(r) + 60_000})
    r.hset(META, f"k:{job}", tokens)


def in_room(r: redis.Redis, job: str) -> bool:
    places = (r.zscore(ORDER, job), r.zscore(DUE, job), r.hget(META, f"k:{job}"))
    assert len({p is None for p in places}) == 1, f"{job} half in the room: {places}"
    return places[0] is not None


@case("rate_limit_admit", "every limit has room")
def test_admit_when_every_limit_has_room(redis_client: redis.Redis) -> None:
    r = redis_client
    got = admit(r, [(RPM, 10, 1, False, "r"), (TPM, 1_000, 300, False, "t")])
    admitted, now, bucket = got
    assert admitted == 1 and bucket == now // BUCKET
    assert counts(r, RPM) == {bucket: 1} and counts(r, TPM) == {bucket: 300}
    for key in (RPM, TPM):
        assert WINDOW < r.pttl(key) <= WINDOW + 2 * BUCKET


@case("rate_limit_admit", "an amount of 0")
def test_admit_an_amount_of_zero(redis_client: redis.Redis) -> None:
    assert admit(redis_client, [(RPM, 10, 1, False, "r"), (TPM, 1_000, 0, False, "t")])[0] == 1
    assert redis_client.exists(RPM) and not redis_client.exists(TPM)


@case("rate_limit_admit", "buckets older than the window")
def test_admit_drops_buckets_older_than_the_window(redis_client: redis.Redis) -> None:
    r = redis_client
    current = bucket_now(r)
    old, live = current - WINDOW // BUCKET - 5, current - 10
    r.hset(RPM, mapping={old: 10, live: 3})
    admitted, _, bucket = admit(r, [(RPM, 5, 2, False, "r")])  # 3 + 2 <= 5: the 10 not counted
    assert admitted == 1
    assert counts(r, RPM) == {live: 3, bucket: 2}


@case("rate_limit_admit", "one limit short")
def test_admit_refused_by_a_limit_without_room(redis_client: redis.Redis) -> None:
    r = redis_client
    current = bucket_now(r)
    r.hset(RPM, mapping={current - 40: 2, current - 5: 3})
    before = counts(r, RPM)
    refused, now, wait, index, joined = admit(
        r, [(TPM, 1_000, 100, False, "t"), (RPM, 5, 2, False, "r")]
    )
    # 5 counted + 2 asked - 5 = 2 too many: the bucket 40 s old holds them.
    assert (refused, index, joined) == (0, 2, 0)
    assert wait == (current - 40 + 1) * BUCKET + WINDOW - now
    assert counts(r, RPM) == before and not r.exists(TPM)  # nothing taken from either


@case("rate_limit_admit", "several limits short")
def test_admit_reports_the_longest_wait(redis_client: redis.Redis) -> None:
    r = redis_client
    current = bucket_now(r)
    r.hset(RPM, current - 50, 5)  # leaves the window in about 10 s
    r.hset(TPM, current - 2, 1_000)  # in about 58 s
    refused, now, wait, index, _ = admit(r, [(RPM, 5, 1, False, "r"), (TPM, 1_000, 10, False, "t")])
    assert (refused, index) == (0, 2)
    assert wait == (current - 2 + 1) * BUCKET + WINDOW - now


@case("rate_limit_admit", "an amount over a limit's capacity")
def test_admit_refuses_what_no_window_can_hold(redis_client: redis.Redis) -> None:
    r = redis_client
    got = admit(r, [(RPM, 10, 1, True, "r"), (TPM, 1_000, 1_001, True, "t")], room=True, join=True)
    assert got[0] == 0 and got[2:] == [-1, 2, 0]  # never: not even in the room
    assert not r.exists(RPM, TPM, ORDER, DUE)


@case("rate_limit_admit", "room, nobody ahead, limits have room")
def test_admit_through_an_empty_waiting_room(redis_client: redis.Redis) -> None:
    r = redis_client
    r.hset(META, mapping={"v": 4, "a:a": 2})
    assert admit(r, [(RPM, 10, 1, True, "r")], room=True, slack_ms=500)[0] == 1
    assert hgetall(r, META) == {"v": "5", "a:a": "5"}  # its tag: max(v, a:a) + 1
    assert 2 * WINDOW < r.pttl(META) <= 2 * WINDOW + 500
    assert not r.exists(ORDER, DUE)


def full(r: redis.Redis, key: str = RPM, count: int = 1, age_buckets: int = 2) -> int:
    """``key`` holds ``count`` in a bucket ``age_buckets`` old; returns that bucket."""
    bucket = bucket_now(r) - age_buckets
    r.hset(key, bucket, count)
    return bucket


@case("rate_limit_admit", "room, refused, join, wait fits the deadline")
def test_admit_refused_joins_the_waiting_room(redis_client: redis.Redis) -> None:
    r = redis_client
    filled = full(r)
    limits = [(RPM, 1, 1, True, "r"), (TPM, 1_000, 50, True, "t")]
    deadline = server_ms(r) + 2 * WINDOW
    refused, now, wait, index, joined = admit(
        r, limits, room=True, deadline_ms=deadline, slack_ms=700
    )
    assert (refused, index, joined) == (0, 1, 1)
    assert wait == (filled + 1) * BUCKET + WINDOW - now
    assert r.zscore(ORDER, "me") == 1 * BAND + 1  # band 1, tag 1
    assert r.zscore(DUE, "me") == now + wait + 700
    assert hgetall(r, META) == {"k:me": "50", "a:a": "1"}  # v moves only when admitted
    for key in (ORDER, DUE, META):
        assert wait + 700 + WINDOW < r.pttl(key) <= wait + 700 + 2 * WINDOW
    assert counts(r, RPM) == {filled: 1} and not r.exists(TPM)


@case("rate_limit_admit", "room, refused, the wait passes the deadline")
def test_admit_refused_past_the_deadline_does_not_wait(redis_client: redis.Redis) -> None:
    r = redis_client
    full(r)
    got = admit(r, [(RPM, 1, 1, True, "r")], room=True, deadline_ms=server_ms(r) + 1_000)
    assert got[0] == 0 and got[4] == 0 and got[2] > 1_000
    assert not in_room(r, "me") and not r.exists(META)


@case("rate_limit_admit", "room, refused, join 0")
def test_admit_refused_fail_fast_does_not_wait(redis_client: redis.Redis) -> None:
    full(redis_client)
    got = admit(redis_client, [(RPM, 1, 1, True, "r")], room=True, join=False)
    assert got[0] == 0 and got[4] == 0
    assert not in_room(redis_client, "me")


@case("rate_limit_admit", "room, in it, then refused without joining")
def test_admit_refused_again_without_joining_leaves_the_room(redis_client: redis.Redis) -> None:
    r = redis_client
    full(r)
    assert admit(r, [(RPM, 1, 1, True, "r")], room=True)[4] == 1
    assert in_room(r, "me")
    assert admit(r, [(RPM, 1, 1, True, "r")], room=True, join=False)[4] == 0
    assert not in_room(r, "me")


@case("rate_limit_admit", "room, in it, then admitted")
def test_admit_takes_a_waiting_job_out_of_the_room(redis_client: redis.Redis) -> None:
    r = redis_client
    full(r)
    assert admit(r, [(RPM, 1, 1, True, "r")], room=True)[4] == 1
    r.delete(RPM)  # the window slid by
    assert admit(r, [(RPM, 1, 1, True, "r")], room=True)[0] == 1
    assert not in_room(r, "me")
    assert hgetall(r, META) == {"v": "1", "a:a": "1"}  # the tag it kept while it waited


@case("rate_limit_admit", "room, admitted while others wait longer")
def test_admit_keeps_the_rooms_longer_expiry(redis_client: redis.Redis) -> None:
    r = redis_client
    waiting(r, "later", band=1, tag=1, tokens=10)
    r.pexpire(META, 10 * WINDOW)  # as a join with a wait of several windows leaves it
    assert admit(r, [(RPM, 5, 1, True, "r")], room=True, band=0)[0] == 1
    assert r.pttl(META) > 9 * WINDOW
    assert r.hget(META, "k:later") == b"10"


@case("rate_limit_admit", "room, jobs ahead (earlier band or tag)")
def test_admit_counts_the_jobs_ahead_on_shared_limits(redis_client: redis.Redis) -> None:
    r = redis_client
    r.hset(META, "a:a", 3)  # this agent's last job had tag 3: this one gets 4
    waiting(r, "other", band=1, tag=2, tokens=600)
    waiting(r, "tied", band=1, tag=4, tokens=900)  # same band and tag: not ahead
    full(r, RPM, count=1)
    limits = [
        (AGENT_RPM, 1, 1, False, "r"),  # the agent's own: nobody is ahead there
        (RPM, 3, 1, True, "r"),  # 1 counted + 1 ahead + 1 = 3: room
        (TPM, 1_000, 500, True, "t"),  # 600 ahead + 500 > 1000: short
    ]
    # Slack as the worker gives it (a window): the place is kept after the wait is over.
    refused, _, _, index, joined = admit(r, limits, room=True, slack_ms=WINDOW)
    assert (refused, index, joined) == (0, 3, 1)
    assert r.zscore(ORDER, "me") == BAND + 4
    r.zrem(ORDER, "other")  # once it is gone, this job has room
    assert admit(r, limits, room=True, slack_ms=WINDOW)[0] == 1


@case("rate_limit_admit", "room, a lower band number waiting")
def test_admit_puts_a_lower_band_ahead(redis_client: redis.Redis) -> None:
    r = redis_client
    waiting(r, "later-band", band=2, tag=1)
    assert admit(r, [(RPM, 1, 1, True, "r")], room=True, job="b1", band=1)[0] == 1
    waiting(r, "first-band", band=0, tag=1_000)
    got = admit(r, [(RPM, 2, 1, True, "r")], room=True, job="b2", band=1)
    assert got[0] == 0 and got[3] == 1  # 1 counted + 1 ahead + 1 > 2


@case("rate_limit_admit", "room, more ahead than the window holds")
def test_admit_waits_windows_for_the_jobs_ahead(redis_client: redis.Redis) -> None:
    r = redis_client
    filled = full(r, RPM, count=2, age_buckets=3)
    for i in range(5):
        waiting(r, f"ahead-{i}", band=0, tag=1)
    refused, now, wait, index, _ = admit(r, [(RPM, 2, 1, True, "r")], room=True)
    # excess = 2 counted + 5 ahead + 1 - 2 = 6. Once the newest bucket left the window, the
    # window admits 2 of the 5 ahead, the next 2 more, and the third the last one and this
    # call: ceil((6 - 2) / 2) = 2 windows after it.
    assert (refused, index) == (0, 1)
    assert wait == (filled + 1) * BUCKET + WINDOW - now + 2 * WINDOW
    # Nothing counted: 600 tokens ahead and 500 asked of 1,000 fit only in the next window.
    r.delete(RPM, ORDER, DUE, META)
    waiting(r, "big", band=0, tag=1, tokens=600)
    refused, now, wait, index, _ = admit(r, [(TPM, 1_000, 500, True, "t")], room=True)
    assert (refused, index, wait) == (0, 1, WINDOW)


@case("rate_limit_admit", "room, an entry past its due time")
def test_admit_drops_waiters_past_their_due_time(redis_client: redis.Redis) -> None:
    r = redis_client
    waiting(r, "stale", band=0, tag=1, tokens=900)
    r.zadd(DUE, {"stale": server_ms(r) - 1})  # its worker never came back
    assert admit(r, [(RPM, 1, 1, True, "r"), (TPM, 1_000, 500, True, "t")], room=True)[0] == 1
    assert not in_room(r, "stale")


def settle(r: redis.Redis, bucket: int, delta: int, *limit_keys: str) -> int:
    return int(run(r, "rate_limit_settle", list(limit_keys), [bucket, delta]))


@case("rate_limit_settle", "bucket present, used less (delta < 0)")
def test_settle_a_call_that_used_less(redis_client: redis.Redis) -> None:
    redis_client.hset(TPM, mapping={7: 500, 8: 40})
    redis_client.hset(AGENT_RPM, 7, 300)
    assert settle(redis_client, 7, -200, TPM, AGENT_RPM) == 1
    assert counts(redis_client, TPM) == {7: 300, 8: 40}
    assert counts(redis_client, AGENT_RPM) == {7: 100}


@case("rate_limit_settle", "bucket present, used more (delta > 0)")
def test_settle_a_call_that_used_more(redis_client: redis.Redis) -> None:
    redis_client.hset(TPM, 7, 500)
    assert settle(redis_client, 7, 120, TPM) == 1
    assert counts(redis_client, TPM) == {7: 620}


@case("rate_limit_settle", "the count falls to 0 or below")
def test_settle_deletes_an_emptied_bucket(redis_client: redis.Redis) -> None:
    redis_client.hset(TPM, mapping={7: 500, 8: 1})
    redis_client.hset(AGENT_RPM, 7, 300)
    assert settle(redis_client, 7, -500, TPM, AGENT_RPM) == 1
    assert counts(redis_client, TPM) == {8: 1}
    assert not redis_client.exists(AGENT_RPM)  # -200: gone as well


@case("rate_limit_settle", "bucket gone (left the window, or expired)")
def test_settle_writes_nothing_once_the_bucket_is_gone(redis_client: redis.Redis) -> None:
    redis_client.hset(TPM, 8, 10)
    assert settle(redis_client, 7, 300, TPM, AGENT_RPM) == 1
    assert counts(redis_client, TPM) == {8: 10} and not redis_client.exists(AGENT_RPM)


# --- quotas and latencies -----------------------------------------------------------------------

DAY = 86_400


def reserve(
    r: redis.Redis, used: tuple[int, int] | None, quotas: tuple[int, int], want: tuple[int, int]
) -> tuple[list[Any], str, int]:
    """Reserves ``want`` (tokens, micro-USD) for this period: (reply, the key, the period)."""
    seconds, _ = r.time()
    period = seconds // DAY
    key = keys.quota("agent-1", period)
    if used is not None:
        r.hset(key, mapping={"tokens": used[0], "micro_usd": used[1]})
    got = s(run(r, "quota_reserve", [key], [period, DAY, *quotas, *want]))
    return got, key, period


def resets_in(r: redis.Redis, period: int) -> int:
    return (period + 1) * DAY - r.time()[0]


@case("quota_reserve", "within both quotas")
def test_reserve_within_both_quotas(redis_client: redis.Redis) -> None:
    got, key, period = reserve(redis_client, None, (1_000, 5_000_000), (100, 2_000))
    assert got == [1, period]
    assert hgetall(redis_client, key) == {"tokens": "100", "micro_usd": "2000"}
    assert DAY < redis_client.ttl(key) <= DAY + 3_600


@case("quota_reserve", "reaching a quota exactly")
def test_reserve_up_to_the_quota_exactly(redis_client: redis.Redis) -> None:
    got, key, _ = reserve(redis_client, (900, 4_000), (1_000, 5_000), (100, 1_000))
    assert got[0] == 1
    assert hgetall(redis_client, key) == {"tokens": "1000", "micro_usd": "5000"}


@case("quota_reserve", "quotas 0 (none)")
def test_reserve_without_quotas(redis_client: redis.Redis) -> None:
    got, key, _ = reserve(redis_client, (10**9, 10**9), (0, 0), (100, 1_000))
    assert got[0] == 1
    assert hgetall(redis_client, key) == {
        "tokens": str(10**9 + 100),
        "micro_usd": str(10**9 + 1_000),
    }


@case("quota_reserve", "tokens would go over")
def test_reserve_refused_over_the_token_quota(redis_client: redis.Redis) -> None:
    got, key, period = reserve(redis_client, (950, 0), (1_000, 5_000), (100, 6_000))
    assert got[:4] == [0, "tokens", 950, 1_000]  # tokens are checked first
    assert abs(got[4] - resets_in(redis_client, period)) <= 1
    assert hgetall(redis_client, key) == {"tokens": "950", "micro_usd": "0"}


@case("quota_reserve", "cost would go over (tokens fine)")
def test_reserve_refused_over_the_cost_quota(redis_client: redis.Redis) -> None:
    got, key, period = reserve(redis_client, (10, 4_500), (1_000, 5_000), (100, 600))
    assert got[:4] == [0, "cost", 4_500, 5_000]
    assert 0 < got[4] <= DAY and abs(got[4] - resets_in(redis_client, period)) <= 1
    assert hgetall(redis_client, key) == {"tokens": "10", "micro_usd": "4500"}


@case("quota_reserve", "the caller's period is not the server's")
def test_reserve_with_another_period_than_the_servers(redis_client: redis.Redis) -> None:
    period = redis_client.time()[0] // DAY
    stale = keys.quota("agent-1", period - 1)
    got = run(redis_client, "quota_reserve", [stale], [period - 1, DAY, 1_000, 0, 100, 0])
    assert got == [-1, period]
    assert redis_client.keys("*") == []


def record_latencies(r: redis.Redis, *models: tuple[str, list[float]], weight: float = 0.5) -> int:
    args: list[Any] = [weight, 3_600]
    for model, samples in models:
        args += [model, len(samples), *samples]
    return int(run(r, "latency_record", [keys.LATENCIES], args))


@case("latency_record", "a model's first sample")
def test_record_a_models_first_latency(redis_client: redis.Redis) -> None:
    assert record_latencies(redis_client, ("m1", [250.25])) == 1
    assert hgetall(redis_client, keys.LATENCIES) == {"m1": "250.250"}


@case("latency_record", "a model with an average")
def test_record_folds_samples_into_the_average_oldest_first(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.LATENCIES, "m1", "100.000")
    record_latencies(redis_client, ("m1", [200, 300]))  # 100 -> 150 -> 225 (weight 0.5)
    assert hgetall(redis_client, keys.LATENCIES) == {"m1": "225.000"}


@case("latency_record", "several models in one call")
def test_record_several_models_at_once(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.LATENCIES, mapping={"m2": "10", "m3": "7.5"})
    record_latencies(redis_client, ("m1", [40]), ("m2", [20, 40]), weight=0.25)
    # m2: 10 -> 12.5 -> 19.375; m3 untouched
    assert hgetall(redis_client, keys.LATENCIES) == {"m1": "40.000", "m2": "19.375", "m3": "7.5"}
    assert 0 < redis_client.ttl(keys.LATENCIES) <= 3_600


@case("latency_record", "a model sent with 0 samples")
def test_record_zero_samples_keeps_the_average(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.LATENCIES, "m1", "12.5")
    record_latencies(redis_client, ("m1", []), ("m2", [3]))
    assert hgetall(redis_client, keys.LATENCIES) == {"m1": "12.500", "m2": "3.000"}


@case("latency_record", "0 samples and no average yet")
def test_record_zero_samples_of_an_unknown_model_fails(redis_client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="format"):
        record_latencies(redis_client, ("m1", []))
    assert not redis_client.exists(keys.LATENCIES)


# --- caches -------------------------------------------------------------------------------------


def store_exact(r: redis.Redis, entry: str, value: str, max_entries: int = 10) -> int:
    args = [value, 60, max_entries]
    return int(run(r, "exact_cache_store", [keys.exact_cache(entry), keys.EXACT_CACHE_INDEX], args))


def index(r: redis.Redis) -> list[str]:
    return s(r.zrange(keys.EXACT_CACHE_INDEX, 0, -1))


@case("exact_cache_store", "room in the cache")
def test_store_an_exact_answer(redis_client: redis.Redis) -> None:
    r = redis_client
    before = server_ms(r)
    assert store_exact(r, "e1", "answer") == 1
    assert s(r.get(keys.exact_cache("e1"))) == "answer"
    assert 0 < r.ttl(keys.exact_cache("e1")) <= 60
    assert before <= r.zscore(keys.EXACT_CACHE_INDEX, keys.exact_cache("e1")) <= server_ms(r)
    assert 0 < r.ttl(keys.EXACT_CACHE_INDEX) <= 60


@case("exact_cache_store", "the same entry stored again")
def test_store_the_same_exact_entry_again(redis_client: redis.Redis) -> None:
    r = redis_client
    r.zadd(keys.EXACT_CACHE_INDEX, {keys.exact_cache("e1"): server_ms(r) - 5_000})
    store_exact(r, "e1", "new")
    assert s(r.get(keys.exact_cache("e1"))) == "new"
    assert index(r) == [keys.exact_cache("e1")]
    assert r.zscore(keys.EXACT_CACHE_INDEX, keys.exact_cache("e1")) > server_ms(r) - 1_000


@case("exact_cache_store", "index entries older than ttl")
def test_store_drops_index_entries_older_than_ttl(redis_client: redis.Redis) -> None:
    r = redis_client
    r.zadd(keys.EXACT_CACHE_INDEX, {keys.exact_cache("old"): server_ms(r) - 61_000})
    r.zadd(keys.EXACT_CACHE_INDEX, {keys.exact_cache("young"): server_ms(r) - 59_000})
    store_exact(r, "e1", "answer")
    assert index(r) == [keys.exact_cache("young"), keys.exact_cache("e1")]


@case("exact_cache_store", "past max entries")
def test_store_evicts_the_oldest_exact_entries(redis_client: redis.Redis) -> None:
    r = redis_client
    for age, entry in ((3_000, "a"), (2_000, "b"), (1_000, "c")):
        r.set(keys.exact_cache(entry), entry)
        r.zadd(keys.EXACT_CACHE_INDEX, {keys.exact_cache(entry): server_ms(r) - age})
    store_exact(r, "d", "d", max_entries=2)
    assert index(r) == [keys.exact_cache("c"), keys.exact_cache("d")]
    assert not r.exists(keys.exact_cache("a"), keys.exact_cache("b"))
    assert r.exists(keys.exact_cache("c"), keys.exact_cache("d")) == 2


SCOPE = keys.semantic_cache("mock|temp0")
VEC, RESP, ORDER_SEM, LOG = (f"{SCOPE}:{part}" for part in ("vec", "resp", "order", "log"))


def store_semantic(
    r: redis.Redis, entry: str, answer: str = "answer", max_entries: int = 10
) -> int:
    args = [entry, b"\x00\x00\x80\x3f", answer, 60, max_entries]
    return int(run(r, "semantic_cache_store", [VEC, RESP, ORDER_SEM, LOG], args))


def semantic_entry(r: redis.Redis, entry: str, age_ms: int) -> None:
    r.hset(VEC, entry, b"v")
    r.hset(RESP, entry, entry)
    r.zadd(ORDER_SEM, {entry: server_ms(r) - age_ms})


def semantic_ids(r: redis.Redis) -> tuple[list[str], list[str], list[str]]:
    return sorted(s(r.hkeys(VEC))), sorted(s(r.hkeys(RESP))), s(r.zrange(ORDER_SEM, 0, -1))


@case("semantic_cache_store", "room in the scope")
def test_store_a_semantic_entry(redis_client: redis.Redis) -> None:
    r = redis_client
    assert store_semantic(r, "s1") == 0
    assert r.hget(VEC, "s1") == b"\x00\x00\x80\x3f" and s(r.hget(RESP, "s1")) == "answer"
    ((_, fields),) = r.xrange(LOG)
    assert s(fields[b"id"]) == "s1" and float(fields[b"at"]) == r.zscore(ORDER_SEM, "s1")
    for key in (VEC, RESP, ORDER_SEM, LOG):
        assert 0 < r.ttl(key) <= 60


@case("semantic_cache_store", "entries older than ttl")
def test_store_removes_semantic_entries_older_than_ttl(redis_client: redis.Redis) -> None:
    r = redis_client
    semantic_entry(r, "old", 61_000)
    semantic_entry(r, "young", 59_000)
    assert store_semantic(r, "s1") == 1
    assert semantic_ids(r) == (["s1", "young"], ["s1", "young"], ["young", "s1"])


@case("semantic_cache_store", "past max entries")
def test_store_evicts_the_oldest_semantic_entries(redis_client: redis.Redis) -> None:
    r = redis_client
    semantic_entry(r, "expired", 70_000)
    for age, entry in ((3_000, "a"), (2_000, "b"), (1_000, "c")):
        semantic_entry(r, entry, age)
    assert store_semantic(r, "d", max_entries=2) == 3  # the expired one, a and b
    assert semantic_ids(r) == (["c", "d"], ["c", "d"], ["c", "d"])


@case("semantic_cache_store", "the same id stored again")
def test_store_the_same_semantic_id_again(redis_client: redis.Redis) -> None:
    r = redis_client
    semantic_entry(r, "s1", 5_000)
    assert store_semantic(r, "s1", answer="new") == 0
    assert semantic_ids(r) == (["s1"], ["s1"], ["s1"])
    assert s(r.hget(RESP, "s1")) == "new"
    assert r.zscore(ORDER_SEM, "s1") > server_ms(r) - 1_000
    assert r.xlen(LOG) == 1  # logged again (the entry made by hand was never logged)


# --- batches ------------------------------------------------------------------------------------

BATCH, DONE = keys.batch("b1"), keys.batch_done("b1")


def record_line(r: redis.Redis, line: int, output: str, outcome: str = "completed") -> int:
    return int(run(r, "batch_record", [BATCH, DONE], [line, output, outcome, 3_600]))


@case("batch_record", "line not answered yet")
def test_record_a_line_once(redis_client: redis.Redis) -> None:
    r = redis_client
    r.hset(BATCH, mapping={"status": "in_progress", "completed": 0, "failed": 0})
    assert record_line(r, 0, '{"ok":1}') == 1
    assert record_line(r, 1, '{"ok":0}', "failed") == 1
    assert hgetall(r, DONE) == {"0": '{"ok":1}', "1": '{"ok":0}'}
    assert hgetall(r, BATCH) == {"status": "in_progress", "completed": "1", "failed": "1"}
    assert 0 < r.ttl(DONE) <= 3_600
    assert 0 < r.ttl(BATCH) <= 3_600


@case("batch_record", "line answered already")
def test_record_a_line_answered_already(redis_client: redis.Redis) -> None:
    r = redis_client
    r.hset(BATCH, mapping={"status": "in_progress", "completed": 0, "failed": 0})
    assert record_line(r, 0, "first") == 1
    assert record_line(r, 0, "second", "failed") == 0
    assert hgetall(r, DONE) == {"0": "first"}
    assert hgetall(r, BATCH) == {"status": "in_progress", "completed": "1", "failed": "0"}


@case("batch_record", "no batch record (expired, deleted)")
def test_record_a_line_of_a_batch_that_is_gone(redis_client: redis.Redis) -> None:
    assert record_line(redis_client, 0, "late") == 0
    assert redis_client.keys("*") == []


def move(r: redis.Redis, sources: str, to: str) -> int:
    return int(run(r, "batch_move", [BATCH], [sources, to, f"{to}_at", "1700000000.5"]))


@case("batch_move", "status one of the from statuses")
def test_move_a_batch_from_one_of_the_statuses(redis_client: redis.Redis) -> None:
    redis_client.hset(BATCH, "status", "in_progress")
    assert move(redis_client, "validating,in_progress", "finalizing") == 1
    assert hgetall(redis_client, BATCH) == {
        "status": "finalizing",
        "finalizing_at": "1700000000.5",
    }


@case("batch_move", "status another")
def test_move_a_batch_in_another_status(redis_client: redis.Redis) -> None:
    redis_client.hset(BATCH, "status", "completed")
    assert move(redis_client, "validating,in_progress", "cancelling") == 0
    assert move(redis_client, "", "cancelling") == 0
    assert move(redis_client, "complete", "cancelling") == 0  # whole names only
    assert hgetall(redis_client, BATCH) == {"status": "completed"}


@case("batch_move", "no record")
def test_move_a_batch_with_no_record(redis_client: redis.Redis) -> None:
    assert move(redis_client, "validating,in_progress", "cancelled") == 0
    assert redis_client.keys("*") == []


# --- bells: every script that pushes a message rings its list's bell ----------------------------


def bell_tokens(r: redis.Redis, queue_list: str) -> int:
    return int(r.llen(keys.queue_bell(queue_list)))


@case("job_create", "message pushed")
def test_create_rings_the_bell_of_the_list_it_pushed_onto(redis_client: redis.Redis) -> None:
    r = redis_client
    assert create(r) == "created"
    assert bell_tokens(r, Q_NORMAL) == 1 and bell_tokens(r, Q_HIGH) == 0
    for _ in range(QUEUE_BELL_CAP + 5):  # a bell keeps at most QUEUE_BELL_CAP tokens
        r.delete(J)
        create(r, depth=1000)
    assert bell_tokens(r, Q_NORMAL) == QUEUE_BELL_CAP
    r.flushall()
    assert create(r, message="") == "created" and r.keys(keys.queue_bell("*")) == []


@case("job_hand_off", "message pushed")
def test_hand_off_rings_the_bell_of_the_next_queue(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", attempt=1)
    redis_client.set(LEASE, "w1")
    assert hand_off(redis_client) == 1
    assert bell_tokens(redis_client, QUEUE) == 1


@case("job_release", "stored message pushed back")
def test_release_rings_the_bell_of_the_list_it_pushed_onto(redis_client: redis.Redis) -> None:
    a_deferred_job(redis_client, "d1", -1)
    a_deferred_job(redis_client, "d2", -1, message="")
    assert release(redis_client)[::3] == ["d1", "d2"]
    assert bell_tokens(redis_client, "queue-list") == 1  # d2 is published by the caller


@case("orphan_requeue", "message pushed")
def test_requeue_of_an_orphan_rings_the_bell_of_its_list(redis_client: redis.Redis) -> None:
    queued_since(redis_client, JOB, 60_000)
    assert requeue(redis_client) == "requeued"
    assert bell_tokens(redis_client, ORPHAN_LIST) == 1
    queued_since(redis_client, "other", 60_000)
    assert requeue(redis_client, job_id="other", message="") == "requeued"  # the caller publishes
    assert bell_tokens(redis_client, ORPHAN_LIST) == 1


# --- intake_take: a worker's atomic, batched take --------------------------------------------

INTAKE_HIGH, INTAKE_LOW = "l04.mock", "l04.mock\x06\x169"


def kombu_message(tag: str, queue: str = "l04.mock", **properties: Any) -> str:
    info = {"exchange": "", "routing_key": queue}
    return json.dumps(
        {
            "body": "e30=",
            "headers": {"id": tag},
            "properties": {"delivery_tag": tag, "delivery_info": info, **properties},
        }
    )


def take(r: redis.Redis, limit: int = 10, at: float = 1700000000.25) -> list[str]:
    lists = [(INTAKE_HIGH, "l04.mock"), (INTAKE_LOW, "l04.mock")]
    args = take_args(lists, limit, at)
    if not r.script_exists(TAKE_SHA)[0]:
        assert r.script_load(TAKE_SOURCE) == TAKE_SHA  # the sha the transport sends
    return [item.decode("utf-8", "replace") for item in r.evalsha(TAKE_SHA, *args)]


def unacked_tags(r: redis.Redis) -> dict[str, float]:
    return {s(tag): score for tag, score in r.zrange(REDIS_UNACKED_INDEX, 0, -1, withscores=True)}


@case("intake_take", "empty lists")
def test_take_from_empty_lists(redis_client: redis.Redis) -> None:
    assert take(redis_client) == []
    assert redis_client.keys("*") == []


@case("intake_take", "more messages than N")
def test_take_at_most_n_oldest_first(redis_client: redis.Redis) -> None:
    r = redis_client
    for i in range(5):
        r.lpush(INTAKE_HIGH, kombu_message(f"t{i}"))  # kombu pushes left, takes right
    taken = take(r, limit=3)
    assert [json.loads(m)["properties"]["delivery_tag"] for m in taken[2::3]] == ["t0", "t1", "t2"]
    assert taken[::3] == ["l04.mock"] * 3 and taken[1::3] == ["t0", "t1", "t2"]
    assert unacked_tags(r) == {"t0": 1700000000.25, "t1": 1700000000.25, "t2": 1700000000.25}
    entry = json.loads(r.hget(REDIS_UNACKED, "t1"))  # kombu's own entry: [message, ex, rk]
    assert entry == [json.loads(kombu_message("t1")), "", "l04.mock"]
    assert r.llen(INTAKE_HIGH) == 2
    assert take(r)[1::3] == ["t3", "t4"]


@case("intake_take", "a higher and a lower priority list")
def test_take_higher_priority_first(redis_client: redis.Redis) -> None:
    r = redis_client
    r.lpush(INTAKE_LOW, kombu_message("low1"), kombu_message("low2"))
    r.lpush(INTAKE_HIGH, kombu_message("high1"))
    assert take(r, limit=2)[1::3] == ["high1", "low1"]
    assert r.llen(INTAKE_LOW) == 1


@case("intake_take", "N = 0")
def test_take_nothing_when_no_slot_is_free(redis_client: redis.Redis) -> None:
    redis_client.lpush(INTAKE_HIGH, kombu_message("t1"), "not json")
    assert take(redis_client, limit=0) == []
    assert redis_client.llen(INTAKE_HIGH) == 2 and not redis_client.exists(REDIS_UNACKED)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[1, 2]", id="json-array"),
        pytest.param(b"\xff\xfe", id="binary"),
    ],
)
@case("intake_take", "a value that is not JSON")
def test_take_moves_a_value_that_is_not_json_to_the_poison_list(
    redis_client: redis.Redis, value: Any
) -> None:
    r = redis_client
    r.lpush(INTAKE_HIGH, kombu_message("before"), value, kombu_message("after"))
    taken = take(r)
    assert taken[::3] == ["l04.mock", "", "l04.mock"]  # in list order, the value where it was
    assert taken[1::3] == ["before", "", "after"]
    raw = r.lrange(keys.INTAKE_POISON, 0, -1)
    assert raw == [value.encode() if isinstance(value, str) else value]
    assert set(unacked_tags(r)) == {"before", "after"} and r.llen(INTAKE_HIGH) == 0


@case("intake_take", "JSON without properties.delivery_tag")
def test_take_moves_a_message_without_a_tag_to_the_poison_list(redis_client: redis.Redis) -> None:
    r = redis_client
    for value in ("{}", '{"properties": []}', kombu_message(""), '{"properties": {"x": 1}}'):
        r.lpush(INTAKE_HIGH, value)
    assert take(r)[::3] == ["", "", "", ""]
    assert r.llen(keys.INTAKE_POISON) == 4 and not r.exists(REDIS_UNACKED, REDIS_UNACKED_INDEX)


@case("intake_take", "delivery_info without exchange / routing_key")
def test_take_moves_a_message_without_routing_to_the_poison_list(redis_client: redis.Redis) -> None:
    r = redis_client
    no_exchange = json.loads(kombu_message("t1"))
    del no_exchange["properties"]["delivery_info"]["exchange"]
    numeric_key = json.loads(kombu_message("t2"))
    numeric_key["properties"]["delivery_info"]["routing_key"] = 5
    r.lpush(INTAKE_HIGH, json.dumps(no_exchange), json.dumps(numeric_key))
    assert take(r)[::3] == ["", ""]
    assert r.llen(keys.INTAKE_POISON) == 2 and not r.exists(REDIS_UNACKED)


@case("intake_take", "a value over the size limit")
def test_take_moves_an_oversized_value_to_the_poison_list(redis_client: redis.Redis) -> None:
    r = redis_client
    big = kombu_message("big", padding="x" * (1 << 20))
    r.lpush(INTAKE_HIGH, big)
    assert take(r)[::3] == [""]
    assert r.lrange(keys.INTAKE_POISON, 0, -1) == [big.encode()]


@case("intake_take", "more than 100 poison values")
def test_take_moves_at_most_100_poison_values_per_call(redis_client: redis.Redis) -> None:
    r = redis_client
    r.lpush(INTAKE_HIGH, *[f"junk {i}" for i in range(150)])
    assert len(take(r)) == 300  # 100 triples
    assert r.llen(keys.INTAKE_POISON) == 100 and r.llen(INTAKE_HIGH) == 50
    assert len(take(r)) == 150


@pytest.mark.parametrize("key", [REDIS_UNACKED, REDIS_UNACKED_INDEX, keys.INTAKE_POISON])
@case("intake_take", "unacked, its index or the poison list of another type")
def test_take_refuses_before_taking_when_a_key_has_another_type(
    redis_client: redis.Redis, key: str
) -> None:
    r = redis_client
    r.set(key, "something else")
    r.lpush(INTAKE_HIGH, kombu_message("t1"), "junk")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE intake_take"):
        take(r)
    assert r.llen(INTAKE_HIGH) == 2  # nothing popped: nothing lost


# --- the job's timeline (gateway_core/lua/timeline.lua, read by `l04 trace`) --------------------


def timeline(r: redis.Redis, job_id: str = JOB) -> list[dict[str, Any]]:
    """The job's timeline entries, each with its server time checked to be now-ish."""
    entries = [json.loads(raw) for raw in r.lrange(keys.job_timeline(job_id), 0, -1)]
    for entry in entries:
        assert abs(int(entry.pop("t")) - server_ms(r)) < 5_000
    return entries


@case("job_create", "created")
def test_create_starts_the_timeline(redis_client: redis.Redis) -> None:
    r = redis_client
    assert create(r, model="mock-1", queue="l04.mock", priority="high") == "created"
    assert timeline(r) == [
        {
            "event": "created",
            "provider": "mock",
            "model": "mock-1",
            "queue": "l04.mock",
            "priority": "high",
        }
    ]
    # Expires with the record: compared as absolute expiry times, since two PTTL reads a
    # millisecond apart differ by one (a CI run failed on exactly that).
    assert r.pttl(keys.job_timeline(JOB)) > 0
    # Stamped with the record's created_ms: one clock read, so they agree to the millisecond.
    raw = json.loads(r.lindex(keys.job_timeline(JOB), 0))
    assert raw["t"] == int(hgetall(r, J)["created_ms"])
    assert 0 <= r.pexpiretime(keys.job_timeline(JOB)) - r.pexpiretime(J) <= 2


@case("job_claim", "run")
def test_claims_on_the_timeline_name_worker_attempt_and_redelivery(
    redis_client: redis.Redis,
) -> None:
    r = redis_client
    a_job(r, "queued")
    assert claim(r, "w1")[:2] == ["run", "1"]
    first = json.loads(r.lindex(keys.job_timeline(JOB), 0))
    assert first["t"] == int(hgetall(r, J)["started_ms"])  # one clock read for both
    r.delete(LEASE)  # w1 died: its lease lapsed
    assert claim(r, "w2")[:2] == ["run", "2"]
    assert timeline(r) == [
        {"event": "claimed", "worker": "w1", "attempt": 1},
        {"event": "claimed", "worker": "w2", "attempt": 2, "redelivered": True,
         "previous_worker": "w1"},
    ]  # fmt: skip


@case("job_append", "the job's first event")
def test_the_first_chunk_is_on_the_timeline_once(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=2)
    r.set(LEASE, "w1")
    chunk = json.dumps({"type": "chunk", "delta": "a"})
    for _ in range(3):
        run(r, "job_append", JOB_KEYS, ["w1", CHANNEL, chunk])
    assert timeline(r) == [{"event": "first_chunk", "worker": "w1", "attempt": 2}]


@case("job_defer", "deferred")
def test_a_deferral_on_the_timeline_names_its_limit_and_wait(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    args = ["w1", 2_000, "msg", "queue-list", JOB, "rpm"]
    assert run(r, "job_defer", [J, LEASE, DEFERRED_SET], args) == 1
    r.hset(J, "state", "running")
    r.set(LEASE, "w1")
    assert defer(r) == 1  # no limit named (an older worker): the entry has none
    assert timeline(r) == [
        {"event": "deferred", "worker": "w1", "wait_ms": 2_000, "limit": "rpm"},
        {"event": "deferred", "worker": "w1", "wait_ms": 2_000},
    ]


@case("job_release", "released")
def test_a_release_is_on_the_timeline(redis_client: redis.Redis) -> None:
    a_deferred_job(redis_client, JOB, due_in_ms=-1)
    assert release(redis_client) == [JOB, "mock", "high"]
    assert timeline(redis_client) == [{"event": "released"}]


@case("job_hand_off", "handed off")
def test_a_failover_on_the_timeline_names_both_models(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    args = ["w1", "other", "other-1", "next", "msg", JOB, "E4200"]
    assert run(r, "job_hand_off", [J, LEASE, QUEUE, QUEUED], args) == 1
    assert timeline(r) == [
        {"event": "failover", "worker": "w1", "from": "mock:mock-1", "to": "other:other-1",
         "queue": "next", "code": "E4200"},
    ]  # fmt: skip


@case("orphan_requeue", "requeued")
def test_an_orphan_requeue_is_on_the_timeline(redis_client: redis.Redis) -> None:
    queued_since(redis_client, JOB, 60_000)
    assert requeue(redis_client) == "requeued"
    assert timeline(redis_client) == [{"event": "requeued", "why": "its queue message was lost"}]


def note(r: redis.Redis, entry: Any, worker: str = "w1") -> int:
    raw = entry if isinstance(entry, str) else json.dumps(entry)
    return int(run(r, "job_note", [J, LEASE], [worker, raw]))


@case("job_note", "running, lease ours")
def test_note_a_retry(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    assert note(r, {"event": "retry", "code": "E4200", "call": 1, "delay_ms": 120}) == 1
    assert timeline(r) == [
        {"event": "retry", "code": "E4200", "call": 1, "delay_ms": 120, "worker": "w1"}
    ]


@case("job_note", 'entry with its own "t"')
def test_a_note_takes_the_servers_time_not_the_callers(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    assert note(r, {"event": "retry", "t": 5}) == 1
    assert timeline(r) == [{"event": "retry", "worker": "w1"}]  # its t checked to be now-ish


@case("job_note", "not running, or lease not ours (or gone)")
def test_no_note_from_a_worker_that_does_not_run_the_job(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "queued")
    r.set(LEASE, "w1")
    assert note(r, {"event": "retry"}) == 0
    r.hset(J, "state", "running")
    assert note(r, {"event": "retry"}, worker="w2") == 0
    r.delete(LEASE)
    assert note(r, {"event": "retry"}) == 0
    assert not r.exists(keys.job_timeline(JOB))


@case("job_note", "entry not a JSON object")
def test_no_note_from_an_entry_that_is_no_json_object(redis_client: redis.Redis) -> None:
    r = redis_client
    a_job(r, "running", attempt=1)
    r.set(LEASE, "w1")
    for bad in ("not json", "[1, 2]", '"retry"', '{"no": "event"}'):
        assert note(r, bad) == 0
    assert not r.exists(keys.job_timeline(JOB))


# --- webhooks: the outbox's events (gateway_core/lua/webhook.lua) and its deliverers' scripts --

OUTBOX = keys.WEBHOOK_OUTBOX


def outbox(r: redis.Redis) -> list[tuple[dict[str, Any], float]]:
    """The outbox's deliveries (each with its event decoded) and their due times (ms)."""
    found = []
    for member, score in r.zrange(OUTBOX, 0, -1, withscores=True):
        delivery = json.loads(member)
        found.append(({**delivery, "e": json.loads(delivery["e"])}, score))
    return found


def the_event(r: redis.Redis) -> dict[str, Any]:
    """The outbox's one delivery: a new event, due now, for the key it names."""
    ((delivery, due),) = outbox(r)
    assert abs(due - server_ms(r)) < 5_000 and delivery["n"] == 0 and "t" not in delivery
    event = delivery["e"]
    assert set(event) == {"id", "object", "created_at", "type", "data"}
    assert event["object"] == "event" and isinstance(event["created_at"], int)
    assert abs(event["created_at"] - time.time()) < 5
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
    assert s(r.lpop(keys.WEBHOOK_BELL)) == "1"  # a deliverer waiting on the bell wakes
    return {**event, "key_id": delivery["k"]}


@case("job_finish", "created with notify (a background response)")
def test_finish_a_job_made_with_notify_adds_its_webhook_event(redis_client: redis.Redis) -> None:
    r = redis_client
    length = json.dumps({"type": "result", "response": {"finish_reason": "length"}})
    error = json.dumps({"type": "error", "error": {"code": "E4201"}})
    for state, event_json, expected in [
        ("succeeded", RESULT, "response.completed"),
        ("succeeded", length, "response.incomplete"),
        ("failed", error, "response.failed"),
    ]:
        r.flushdb()
        a_job(r, "running", notify="response:resp_j1", key_id="vk_0123456789abcdef")
        r.set(LEASE, "w1")
        assert run(r, "job_finish", JOB_KEYS, ["w1", CHANNEL, state, event_json, TTL]) == 1
        event = the_event(r)
        assert event["type"] == expected and event["data"] == {"id": "resp_j1"}
        assert event["key_id"] == "vk_0123456789abcdef"
        assert run(r, "job_finish", JOB_KEYS, ["w1", CHANNEL, state, event_json, TTL]) == 1
        assert len(outbox(r)) == 1  # a retried finish adds nothing: the job had ended
    r.flushdb()
    a_job(r, "running")  # no notify: no event
    r.set(LEASE, "w1")
    assert finish(r) == 1 and not r.exists(OUTBOX, keys.WEBHOOK_BELL)


@case("job_cancel", "created with notify")
def test_cancel_a_job_made_with_notify_adds_response_cancelled(redis_client: redis.Redis) -> None:
    a_job(redis_client, "queued", notify="response:resp_j1")
    assert cancel(redis_client) == 1
    event = the_event(redis_client)
    assert event["type"] == "response.cancelled" and event["key_id"] == ""
    assert cancel(redis_client) == 0 and len(outbox(redis_client)) == 1


@case("job_expire", "created with notify")
def test_expire_a_job_made_with_notify_adds_response_failed(redis_client: redis.Redis) -> None:
    a_job(redis_client, "running", deadline=repr(time.time() - 1), notify="response:resp_j1")
    assert expire(redis_client) == 1
    assert the_event(redis_client)["type"] == "response.failed"


def test_a_job_lost_or_expired_at_its_claim_adds_its_event_too(redis_client: redis.Redis) -> None:
    """Every terminal transition goes through job.lua's finish(), so none forgets the event."""
    a_job(redis_client, "queued", deadline=repr(time.time() - 1), notify="response:resp_j1")
    claimed = run(
        redis_client, "job_claim", [*JOB_KEYS, QUEUED], ["w1", 1000, CHANNEL, TTL, 10, JOB]
    )
    assert s(claimed)[0] == "expired"
    assert the_event(redis_client)["type"] == "response.failed"


def test_the_same_event_has_the_same_id(redis_client: redis.Redis) -> None:
    """An event's id is its type's and object's: a receiver can drop a repeat by it."""
    ids = []
    for _ in range(2):
        redis_client.flushdb()
        a_job(redis_client, "queued", notify="response:resp_j1")
        cancel(redis_client)
        ids.append(the_event(redis_client)["id"])
    assert ids[0] == ids[1]


@case("batch_move", "moved to an end, with notify")
def test_move_a_batch_made_with_notify_to_an_end_adds_its_event(redis_client: redis.Redis) -> None:
    r = redis_client
    for end in ("completed", "failed", "expired", "cancelled"):
        r.flushdb()
        r.hset(
            BATCH, mapping={"status": "finalizing", "notify": "batch:batch_b1", "key_id": "vk_1"}
        )
        assert move(r, "finalizing", end) == 1
        event = the_event(r)
        assert event["type"] == f"batch.{end}" and event["data"] == {"id": "batch_b1"}
        assert event["key_id"] == "vk_1"
    r.flushdb()
    r.hset(BATCH, mapping={"status": "validating", "notify": "batch:batch_b1"})
    assert move(r, "validating", "in_progress") == 1  # not an end: no event
    assert move(r, "validating", "failed") == 0  # not moved: no event
    r.hset(BATCH, mapping={"status": "in_progress"})
    r.hdel(BATCH, "notify")
    assert move(r, "in_progress", "completed") == 1  # no notify: no event
    assert not r.exists(OUTBOX)


@case("webhook_add", "a new event")
def test_add_a_webhook_event(redis_client: redis.Redis) -> None:
    assert run(redis_client, "webhook_add", [], ["batch.failed", "batch_9", "vk_2"]) == 1
    event = the_event(redis_client)
    assert event["type"] == "batch.failed" and event["data"] == {"id": "batch_9"}
    assert event["key_id"] == "vk_2"


@case("webhook_add", "the same event added twice")
def test_add_the_same_webhook_event_twice(redis_client: redis.Redis) -> None:
    for _ in range(2):
        assert run(redis_client, "webhook_add", [], ["batch.failed", "batch_9", ""]) == 1
    found = outbox(redis_client)
    assert 1 <= len(found) <= 2 and len({d["e"]["id"] for d, _ in found}) == 1


def delivery(n: int = 0) -> str:
    return json.dumps({"e": "{}", "k": "", "n": n, "f": 0, "x": uuid.uuid4().hex})


@case("webhook_claim", "nothing due")
def test_claim_when_nothing_is_due(redis_client: redis.Redis) -> None:
    r = redis_client
    r.zadd(OUTBOX, {delivery(): server_ms(r) + 10_000})
    next_due, *taken = run(r, "webhook_claim", [OUTBOX], [10, 30_000])
    assert taken == [] and 5_000 < next_due <= 10_000


@case("webhook_claim", "empty outbox")
def test_claim_from_an_empty_outbox(redis_client: redis.Redis) -> None:
    assert run(redis_client, "webhook_claim", [OUTBOX], [10, 30_000]) == [-1]


@case("webhook_claim", "more due than asked")
def test_claim_takes_the_oldest_due_ones_under_a_lease(redis_client: redis.Redis) -> None:
    r = redis_client
    now = server_ms(r)
    members = [delivery() for _ in range(3)]
    r.zadd(OUTBOX, {m: now - 100 + i for i, m in enumerate(members)})
    next_due, *taken = run(r, "webhook_claim", [OUTBOX], [2, 30_000])
    assert s(taken) == members[:2] and next_due == 0  # the third is due
    for member in members[:2]:
        assert 25_000 < (r.zscore(OUTBOX, member) or 0) - now <= 31_000  # a lease ahead


@case("webhook_claim", "a delivery whose lease lapsed")
def test_claim_a_delivery_whose_lease_lapsed(redis_client: redis.Redis) -> None:
    r = redis_client
    member = delivery()
    r.zadd(OUTBOX, {member: server_ms(r)})
    assert s(run(r, "webhook_claim", [OUTBOX], [10, 1])[1:]) == [member]
    time.sleep(0.01)  # the 1 ms lease lapses: its deliverer died
    assert s(run(r, "webhook_claim", [OUTBOX], [10, 30_000])[1:]) == [member]


@case("webhook_settle", "delivered to every target")
def test_settle_a_delivered_delivery(redis_client: redis.Redis) -> None:
    member = delivery()
    redis_client.zadd(OUTBOX, {member: 1})
    assert run(redis_client, "webhook_settle", [OUTBOX, keys.WEBHOOK_BELL], [member]) == 1
    assert not redis_client.exists(OUTBOX, keys.WEBHOOK_BELL)


@case("webhook_settle", "some targets failed")
def test_settle_a_delivery_with_retries(redis_client: redis.Redis) -> None:
    r = redis_client
    member, retry_g, retry_k = delivery(), delivery(1), delivery(1)
    r.zadd(OUTBOX, {member: 1})
    assert (
        run(
            r,
            "webhook_settle",
            [OUTBOX, keys.WEBHOOK_BELL],
            [member, 2_000, retry_g, 9_000, retry_k],
        )
        == 1
    )
    now = server_ms(r)
    due = {s(m): score for m, score in r.zrange(OUTBOX, 0, -1, withscores=True)}
    assert set(due) == {retry_g, retry_k}
    assert 0 < due[retry_g] - now <= 2_000 and 7_000 < due[retry_k] - now <= 9_000
    assert r.llen(keys.WEBHOOK_BELL) == 1  # an idle deliverer wakes to the new due times


@case("webhook_settle", "gone (settled by another)")
def test_settle_a_delivery_another_deliverer_settled(redis_client: redis.Redis) -> None:
    assert (
        run(
            redis_client,
            "webhook_settle",
            [OUTBOX, keys.WEBHOOK_BELL],
            [delivery(), 1_000, delivery(1)],
        )
        == 0
    )
    assert not redis_client.exists(OUTBOX)


# --- the Batch API's file store and batch lease --------------------------------------------------

USAGE_KEYS = [keys.FILES_USAGE, keys.FILES_EXPIRIES, keys.FILES_TOTAL]


def files_reserve(r: redis.Redis, file_id: str, size: int, cap: int, **kw: Any) -> int:
    now, expires, force = kw.get("now", 1000), kw.get("expires", 2000), kw.get("force", 0)
    return int(run(r, "files_reserve", USAGE_KEYS, [file_id, size, cap, now, expires, force]))


@case("files_reserve", "bytes fit under the cap")
def test_reserve_bytes_under_the_cap(redis_client: redis.Redis) -> None:
    r = redis_client
    assert files_reserve(r, "f1", 60, 100) == 1
    assert files_reserve(r, "f1", 40, 100) == 1  # a second chunk of the same file
    assert s(r.get(keys.FILES_TOTAL)) == "100"
    assert hgetall(r, keys.FILES_USAGE) == {"f1": "100"}
    assert r.zscore(keys.FILES_EXPIRIES, "f1") == 2000


@case("files_reserve", "bytes would pass the cap")
def test_reserve_past_the_cap(redis_client: redis.Redis) -> None:
    r = redis_client
    assert files_reserve(r, "f1", 90, 100) == 1
    assert files_reserve(r, "f2", 11, 100) == 0
    assert s(r.get(keys.FILES_TOTAL)) == "90"
    assert hgetall(r, keys.FILES_USAGE) == {"f1": "90"}


@case("files_reserve", "bytes would pass the cap, force")
def test_reserve_past_the_cap_forced(redis_client: redis.Redis) -> None:
    r = redis_client
    assert files_reserve(r, "f1", 90, 100) == 1
    assert files_reserve(r, "out", 50, 100, force=1) == 1
    assert s(r.get(keys.FILES_TOTAL)) == "140"


@case("files_reserve", "expired files in the count")
def test_reserve_after_files_expired(redis_client: redis.Redis) -> None:
    r = redis_client
    assert files_reserve(r, "old", 90, 100, expires=1500) == 1
    assert files_reserve(r, "new", 50, 100, now=1400) == 0  # "old" still counts
    assert files_reserve(r, "new", 50, 100, now=1600) == 1  # it expired: its bytes left the count
    assert s(r.get(keys.FILES_TOTAL)) == "50"
    assert hgetall(r, keys.FILES_USAGE) == {"new": "50"}


@case("files_release", "file counted")
def test_release_a_counted_file(redis_client: redis.Redis) -> None:
    r = redis_client
    files_reserve(r, "f1", 30, 100)
    files_reserve(r, "f2", 20, 100)
    assert int(run(r, "files_release", USAGE_KEYS, ["f1"])) == 30
    assert s(r.get(keys.FILES_TOTAL)) == "20"
    assert hgetall(r, keys.FILES_USAGE) == {"f2": "20"}
    assert s(r.zrange(keys.FILES_EXPIRIES, 0, -1)) == ["f2"]


@case("files_release", "file not counted (expired, released)")
def test_release_a_file_not_counted(redis_client: redis.Redis) -> None:
    r = redis_client
    files_reserve(r, "f2", 20, 100)
    assert int(run(r, "files_release", USAGE_KEYS, ["f1"])) == 0
    assert s(r.get(keys.FILES_TOTAL)) == "20"


LEASE_KEY = keys.batch_lease("b1")


@case("batch_lease_keep", "lease held by the token, renew")
def test_renew_a_held_lease(redis_client: redis.Redis) -> None:
    redis_client.set(LEASE_KEY, "t1", px=1000)
    assert int(run(redis_client, "batch_lease_keep", [LEASE_KEY], ["t1", 60_000])) == 1
    assert 1000 < redis_client.pttl(LEASE_KEY) <= 60_000


@case("batch_lease_keep", "lease held by the token, release")
def test_release_a_held_lease(redis_client: redis.Redis) -> None:
    redis_client.set(LEASE_KEY, "t1", px=1000)
    assert int(run(redis_client, "batch_lease_keep", [LEASE_KEY], ["t1", 0])) == 1
    assert redis_client.exists(LEASE_KEY) == 0


@case("batch_lease_keep", "lease held by another token")
def test_keep_a_lease_another_holds(redis_client: redis.Redis) -> None:
    redis_client.set(LEASE_KEY, "t2", px=1000)
    assert int(run(redis_client, "batch_lease_keep", [LEASE_KEY], ["t1", 60_000])) == 0
    assert int(run(redis_client, "batch_lease_keep", [LEASE_KEY], ["t1", 0])) == 0
    assert s(redis_client.get(LEASE_KEY)) == "t2" and redis_client.pttl(LEASE_KEY) <= 1000


@case("batch_lease_keep", "no lease (lapsed)")
def test_keep_a_lapsed_lease(redis_client: redis.Redis) -> None:
    assert int(run(redis_client, "batch_lease_keep", [LEASE_KEY], ["t1", 60_000])) == 0
    assert redis_client.keys("*") == []


# -- batch_create --------------------------------------------------------------------------------

NEW_BATCH = keys.batch("b-new")


def create_batch(r: redis.Redis, fleet: int, *pairs: str) -> int:
    args = ["b-new", "1700000000.5", 604800, fleet, "status", "validating", *pairs]
    return int(run(r, "batch_create", [NEW_BATCH, keys.BATCHES, keys.FLEET_BATCHES], args))


@case("batch_create", "no record")
def test_create_a_batch(redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.BATCHES, {"ancient": 1_000_000_000})
    assert create_batch(redis_client, 0, "total", "3") == 1
    assert redis_client.hgetall(NEW_BATCH) == {b"status": b"validating", b"total": b"3"}
    assert 0 < redis_client.ttl(NEW_BATCH) <= 604800
    assert redis_client.zrange(keys.BATCHES, 0, -1, withscores=True) == [(b"b-new", 1700000000.5)]
    assert 0 < redis_client.ttl(keys.BATCHES) <= 604800
    assert redis_client.exists(keys.FLEET_BATCHES) == 0


@case("batch_create", "no record, driven by the fleet")
def test_create_a_fleet_batch(redis_client: redis.Redis) -> None:
    assert create_batch(redis_client, 1) == 1
    assert redis_client.smembers(keys.FLEET_BATCHES) == {b"b-new"}
    assert s(redis_client.hget(NEW_BATCH, "status")) == "validating"


@case("batch_create", "a record exists")
def test_create_a_batch_that_exists(redis_client: redis.Redis) -> None:
    redis_client.hset(NEW_BATCH, "status", "in_progress")
    assert create_batch(redis_client, 1, "total", "9") == 0
    assert redis_client.hgetall(NEW_BATCH) == {b"status": b"in_progress"}
    assert redis_client.exists(keys.BATCHES, keys.FLEET_BATCHES) == 0
