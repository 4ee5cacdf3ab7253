"""Redis Sentinel: URLs, settings, and a real failover under traffic.

The failover tests start a master, one replica and three Sentinels (``LocalSentinels``), a real
worker and a producer on the ``sentinel://`` URL, kill the master while jobs run, and look at
what every caller got. Provider calls go to the mock upstream, whose request count shows how many
calls a failover made again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from config.settings import load_settings
from gateway_client import ModelGateway
from gateway_core.errors import ConfigurationError, GatewayError
from gateway_core.job_records import parse_entry
from gateway_core.keys import job, job_events
from gateway_core.queues import is_redis_broker
from gateway_core.redis_pool import make_redis, make_sync_redis
from gateway_core.redis_url import SentinelOptions, parse_sentinel_url
from gateway_core.response import InferenceResponse
from l04.redis_server import LocalSentinels
from tasks.app_config import celery_config, create_app
from tasks.worker_classes import worker_config
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import ROOT, MockUpstreamProcess, WorkerProcess

MASTER = "l04m"
CHAT = "/v1/chat/completions"
SECRET = "s3cr3t-pw"


# -- URLs and settings (fast) ----------------------------------------------------------------


def test_a_sentinel_url_takes_the_masters_password_and_db_from_its_first_part() -> None:
    target = parse_sentinel_url(f"sentinel://:{SECRET}@h1:26380/3;sentinel://h2;sentinel://h3:1")
    assert target.sentinels == (("h1", 26380), ("h2", 26379), ("h3", 1))
    assert (target.password, target.db, target.username) == (SECRET, 3, None)
    assert SECRET not in repr(target)
    plain = parse_sentinel_url("sentinel://user:pw@h1:26379")
    assert (plain.username, plain.password, plain.db) == ("user", "pw", 0)


def test_settings_accept_sentinel_urls_and_give_celery_its_transport_options() -> None:
    url = f"sentinel://:{SECRET}@127.0.0.1:26379/0;sentinel://127.0.0.1:26380/0"
    settings = load_settings(
        REDIS_URL=url, L04_REDIS_SENTINEL_MASTER=MASTER, L04_REDIS_SENTINEL_PASSWORD="sentinel-pw"
    )
    assert is_redis_broker(settings.effective_broker_url)
    config = celery_config(settings)
    worker = worker_config(settings.effective_broker_url)
    assert worker["broker_transport"] == "workers.broker_transport:SentinelTransport"
    options = config["broker_transport_options"]
    assert options["master_name"] == MASTER
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    for kept in ("visibility_timeout", "priority_steps", "sep", "queue_order_strategy"):
        assert kept in options
    assert options["unacked_index_key"] == "unacked_index"
    assert "sentinel-pw" not in repr(settings)
    # Celery masks both passwords wherever it prints its settings (`celery report`, Flower).
    shown = create_app(settings).conf.humanize(with_defaults=False, censored=True)
    assert "sentinel-pw" not in shown and SECRET not in shown and MASTER in shown
    without_password = celery_config(load_settings(REDIS_URL=url, L04_REDIS_SENTINEL_MASTER="m"))
    assert "password" not in without_password["broker_transport_options"]["sentinel_kwargs"]


BAD_URLS = [
    f"sentinel://:{SECRET}@h1:notaport",
    f"sentinel://:{SECRET}@h1:26379/zero",
    f"sentinel://:{SECRET}@h1:26379;redis://h2:6379",
    f"sentinel://:{SECRET}@:26379",
    f"redis://:{SECRET}@h1:99999",
]


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        *(
            (v, url)
            for v in ("REDIS_URL", "L04_BROKER_URL", "L04_CACHE_REDIS_URL")
            for url in BAD_URLS
        ),
        # Not Redis at all: wrong for these two (the broker may be another kombu transport).
        ("REDIS_URL", f"http://:{SECRET}@h1:6379"),
        ("L04_CACHE_REDIS_URL", f"amqp://:{SECRET}@h1:5672"),
    ],
)
def test_a_malformed_redis_url_is_e4004_naming_its_variable(variable: str, bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**{variable: bad, "L04_REDIS_SENTINEL_MASTER": MASTER})
    assert caught.value.code == "E4004"
    assert variable in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)


def test_a_sentinel_url_without_the_master_name_is_e4004() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(REDIS_URL="sentinel://h1:26379;sentinel://h2:26379")
    assert caught.value.code == "E4004"
    assert "L04_REDIS_SENTINEL_MASTER" in str(caught.value)
    # The client factory checks the same, for callers that bring their own URL.
    for factory in (make_redis, make_sync_redis):
        with pytest.raises(ConfigurationError, match="L04_REDIS_SENTINEL_MASTER"):
            factory("sentinel://h1:26379")
    with pytest.raises(ConfigurationError, match="L04_BROKER_URL"):
        make_sync_redis("sentinel://h1:x", variable="L04_BROKER_URL")


@pytest.mark.parametrize("command", [["health"], ["worker", "--providers", "mock"]])
def test_the_cli_reports_a_bad_sentinel_setting_as_e4004(command: list[str]) -> None:
    env = {**os.environ, "REDIS_URL": "sentinel://127.0.0.1:9;sentinel://127.0.0.1:10"}
    env.pop("L04_REDIS_SENTINEL_MASTER", None)
    done = subprocess.run(
        [sys.executable, "-m", "l04", *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "E4004" in done.stderr and "L04_REDIS_SENTINEL_MASTER" in done.stderr
    assert "Traceback" not in done.stderr


# -- passwords: the master's in the URL, the Sentinels' own in L04_REDIS_SENTINEL_PASSWORD -------


async def test_a_fleet_on_password_protected_sentinels_serves_jobs_and_logs_no_password() -> None:
    sentinel_secret = "sentinel-s3cr3t"
    with LocalSentinels(MASTER, password=SECRET, sentinel_password=sentinel_secret) as group:
        env = {"L04_REDIS_SENTINEL_MASTER": MASTER, "L04_REDIS_SENTINEL_PASSWORD": sentinel_secret}
        worker = WorkerProcess(group.url, "mock", 10, env).start()
        try:
            gateway = ModelGateway(load_settings(REDIS_URL=group.url, **env))
            try:
                answer = await gateway.execute(make_request("behind two passwords"))
            finally:
                await gateway.close()
            assert answer.content
            health = await asyncio.to_thread(l04_health, group.url, sentinel_secret)
            redis_health = health["redis"]
            assert isinstance(redis_health, dict) and redis_health["ok"] is True, health
        finally:
            worker.stop(timeout=10)
        log = worker.log()
        assert SECRET not in log and sentinel_secret not in log
        # Without the Sentinels' password no master is found: a connection error, not a hang,
        # and neither password in its text.
        client = make_sync_redis(group.url, sentinel=SentinelOptions(master=MASTER))
        with pytest.raises(redis.ConnectionError) as caught:
            client.ping()
        client.close()
        assert SECRET not in str(caught.value) and sentinel_secret not in str(caught.value)


# -- what WAIT buys: jobs submitted just before the crash, while the replica lags -------------


@pytest.mark.faults
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_wait_keeps_jobs_submitted_just_before_the_master_dies(wait_replicas: int) -> None:
    """The replica lags (stopped, 20 MB of replication behind), five jobs are submitted, and the
    master is killed as soon as the submits return; the replica resumes 1 s after it stopped.
    Without WAIT the jobs were on the master alone; with it each submit returned only once the
    replica had the job."""
    env = {
        "L04_REDIS_SENTINEL_MASTER": MASTER,
        "L04_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "L04_REDIS_WAIT_TIMEOUT_MS": "5000",
    }
    with LocalSentinels(MASTER) as group:
        gateway = ModelGateway(load_settings(REDIS_URL=group.url, **env))
        master = redis.Redis(port=group.master.port)
        try:
            await gateway.submit(make_request("warm-up"))  # connected, scripts loaded
            group.pause_replica()
            loop = asyncio.get_running_loop()
            resume = loop.call_later(1.0, group.resume_replica)
            master.set("filler", b"x" * 20_000_000)  # more than the socket buffers hold
            started = time.monotonic()
            handles = [await gateway.submit(make_request(f"last words {i}")) for i in range(5)]
            submitted_in = time.monotonic() - started
            group.kill_master()
            await asyncio.sleep(max(0.0, resume.when() - loop.time()) + 0.1)
        finally:
            master.close()
            await gateway.close()
        await asyncio.to_thread(group.wait_for_failover, 20)
        state = redis.Redis(port=group.replica.port)  # the new master
        kept = sum(int(state.exists(job(h.job_id))) for h in handles)
        state.close()
    print(
        f"\nWAIT {wait_replicas}: {kept} of 5 jobs submitted just before the crash survived it "
        f"(the submits took {submitted_in:.2f} s)"
    )
    # Without WAIT the lag is lost (which shows the set-up makes one); with it nothing is.
    assert kept == (5 if wait_replicas else 0)


# -- a failover under traffic (real master, replica, three Sentinels, worker) -----------------


@pytest.fixture
def upstream_1s() -> Iterator[MockUpstreamProcess]:
    server = MockUpstreamProcess(latency_ms=1000).start()
    yield server
    server.stop()


@dataclass
class Failover:
    outcomes: list[object]
    terminal_events: list[int]  # per job, in its event stream on the new master
    late: list[object]  # jobs submitted after the failover
    provider_calls: int
    worker_alive: bool
    health: dict[str, object]  # `l04 health` after the failover

    @property
    def answered(self) -> int:
        return sum(isinstance(o, InferenceResponse) for o in self.outcomes)

    @property
    def repeated_calls(self) -> int:
        """Provider calls beyond one per job."""
        return self.provider_calls - len(self.outcomes) - len(self.late)


async def run_through_a_failover(upstream: MockUpstreamProcess, wait_replicas: int) -> Failover:
    jobs, late_jobs = 60, 10
    env = {
        "L04_REDIS_SENTINEL_MASTER": MASTER,
        "L04_REDIS_WAIT_REPLICAS": str(wait_replicas),
        # After the failover no replica is left, so each WAIT lasts its timeout: keep it short.
        "L04_REDIS_WAIT_TIMEOUT_MS": "300",
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "OPENAI_API_KEY": "sk-sentinel",
        "CACHE_ENABLED": "false",
    }
    with LocalSentinels(MASTER) as group:
        worker = WorkerProcess(group.url, "openai", 30, {**FAST_RECOVERY, **env}).start()
        gateway = ModelGateway(load_settings(REDIS_URL=group.url, **env))
        waiting: list[asyncio.Future[InferenceResponse]] = []
        try:

            def request(text: str) -> object:
                return make_request(text, model_id="gpt-4o-mini", timeout=25)

            handles = [await gateway.submit(request(f"failover {i}")) for i in range(jobs)]
            waiting = [asyncio.ensure_future(h.result(timeout=45)) for h in handles]
            # Kill the master while thirty calls are in flight and thirty jobs wait, so that the
            # crash does not fall on the worker taking a message off the queue.
            give_up = time.monotonic() + 15
            while upstream.requests_to(CHAT) < 30:
                assert time.monotonic() < give_up, "the worker did not start thirty calls"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            group.kill_master()
            await asyncio.to_thread(group.wait_for_failover, 20)
            late = [await gateway.submit(request(f"after {i}")) for i in range(late_jobs)]
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            late_outcomes = await asyncio.gather(
                *(h.result(timeout=30) for h in late), return_exceptions=True
            )
            health = await asyncio.to_thread(l04_health, group.url)
            alive = worker.process is not None and worker.process.poll() is None
        finally:
            for future in waiting:
                future.cancel()
            await gateway.close()
            worker.stop(timeout=10)
        state = redis.Redis(port=group.replica.port)  # the new master
        terminal = []
        for handle, outcome in zip(handles, outcomes, strict=True):
            entries = state.xrange(job_events(handle.job_id))
            terminal.append(sum(parse_entry(i, f).is_terminal for i, f in entries))
            if not isinstance(outcome, InferenceResponse):
                fields = state.hgetall(job(handle.job_id))
                fields.pop(b"request", None)
                print(f"\nnot answered: {handle.job_id} {describe(outcome)} {fields}")
                print(f"its message: {where_is(state, handle.job_id)}")
        print(f"\nworker log: {worker.log_path}")
        state.close()
    calls = upstream.requests_to(CHAT)
    return Failover(outcomes, terminal, list(late_outcomes), calls, alive, health)


def where_is(state: redis.Redis, job_id: str) -> list[str]:
    """Where the job's message is on the new master: a queue list or kombu's unacked hash."""
    found = []
    for name in state.scan_iter("l04.openai*"):
        if any(job_id.encode() in item for item in state.lrange(name, 0, -1)):
            found.append(repr(name))
    if any(job_id.encode() in item for item in state.hvals("unacked")):
        found.append("unacked")
    return found


def l04_health(url: str, sentinel_password: str = "") -> dict[str, object]:
    """``l04 health``'s report, from a new process on the sentinel URL."""
    env = {**os.environ, "REDIS_URL": url, "L04_REDIS_SENTINEL_MASTER": MASTER}
    if sentinel_password:
        env["L04_REDIS_SENTINEL_PASSWORD"] = sentinel_password
    done = subprocess.run(
        [sys.executable, "-m", "l04", "health"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return dict(json.loads(done.stdout))


def describe(outcome: object) -> str:
    if isinstance(outcome, InferenceResponse):
        return "result"
    if isinstance(outcome, GatewayError):
        return outcome.code
    return repr(outcome)


@pytest.mark.faults
# The killed master leaves redis-py's stream writers of its connections unclosed; their
# ResourceWarnings surface at garbage collection, outside our code.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_failover_under_traffic_answers_every_job_once(
    upstream_1s: MockUpstreamProcess, wait_replicas: int
) -> None:
    started = time.monotonic()
    run = await run_through_a_failover(upstream_1s, wait_replicas)
    kinds = [describe(o) for o in run.outcomes]
    print(
        f"\nWAIT {wait_replicas}: {run.answered}/{len(run.outcomes)} answered, "
        f"{run.provider_calls} provider calls for {len(run.outcomes) + len(run.late)} jobs "
        f"({run.repeated_calls} repeated), outcomes {sorted(set(kinds))}, "
        f"{time.monotonic() - started:.1f} s"
    )
    # Every caller got one answer: a result or a typed error, never a hang or a raw exception.
    for outcome in run.outcomes:
        assert isinstance(outcome, InferenceResponse | GatewayError), outcome
        if isinstance(outcome, GatewayError):
            assert outcome.code.startswith("E4"), outcome
    # No job has two terminal events: nobody could have been given two answers.
    assert max(run.terminal_events) <= 1, run.terminal_events
    # Jobs submitted after the failover are served, by the same worker process.
    assert [describe(o) for o in run.late] == ["result"] * len(run.late)
    assert run.worker_alive
    # The CLI finds the new master too.
    redis_health = run.health["redis"]
    assert isinstance(redis_health, dict) and redis_health["ok"] is True, run.health
    if wait_replicas:
        # Every submitted job was on the replica before submit returned: none is lost.
        assert kinds == ["result"] * len(kinds)
