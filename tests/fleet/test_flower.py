"""Flower on a test fleet, looked at in headless Chromium, and its /metrics scraped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import load_settings
from gateway_client import ModelGateway
from l04.processes import stop_process
from l04.redis_server import free_port
from tests.conftest import make_request
from tests.processes import ARTIFACTS, ROOT, WorkerProcess

AUTH = ("admin", "flower-test-password")
PROMPT = "PROMPT-MARKER-7f3a what is in this secret plan?"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("L04_REQUIRE_TOOLS"):
            pytest.fail("chromium is required here (scripts/install.sh installs it)")
        pytest.skip("chromium is not installed (scripts/install.sh installs it)")
    return found


@pytest.fixture
def flower(redis_url: str) -> Iterator[str]:
    port = free_port()
    log = (ARTIFACTS / "flower.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "l04", "flower", "--port", str(port)],
        env={**os.environ, "REDIS_URL": redis_url, "L04_FLOWER_BASIC_AUTH": ":".join(AUTH)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthcheck", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("flower did not start") from None
            time.sleep(0.2)
    yield url
    stop_process(process)
    log.close()


def browse(url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, as headless Chromium renders it."""
    user, password = AUTH
    authed = url.replace("http://", f"http://{user}:{password}@")
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]
    base.append("--virtual-time-budget=6000")
    if screenshot is not None:
        subprocess.run(
            [*base, f"--screenshot={screenshot}", authed],
            capture_output=True,
            timeout=60,
            check=True,
        )
    done = subprocess.run(
        [*base, "--dump-dom", authed], capture_output=True, timeout=60, check=True
    )
    return done.stdout.decode()


async def test_flower_shows_the_l04_workers_and_tasks_without_prompts(
    flower: str, gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock", env={"L04_VISIBILITY_TIMEOUT": "4"})
    assert httpx.get(f"{flower}/workers", timeout=5).status_code == 401  # basic auth
    for i in range(3):
        await gateway.execute(make_request(f"{PROMPT} #{i}"))

    api = httpx.Client(base_url=flower, auth=AUTH, timeout=10)
    try:
        await check_flower(flower, gateway, worker, api)
    finally:
        api.close()


async def check_flower(
    flower: str, gateway: ModelGateway, worker: WorkerProcess, api: httpx.Client
) -> None:
    deadline = time.monotonic() + 20
    while True:
        tasks = api.get("/api/tasks").json()
        workers = api.get("/api/workers", params={"refresh": "true"}).json()
        if len(tasks) >= 3 and workers:
            break
        assert time.monotonic() < deadline, (tasks, workers)
        time.sleep(0.5)
    assert {t["name"] for t in tasks.values()} == {"l04.infer"}
    assert {t["state"] for t in tasks.values()} == {"SUCCESS"}
    assert all(t["args"].startswith("[{'job_id':") for t in tasks.values())
    node = next(iter(workers))
    assert node == f"{worker.name}@test"
    assert "l04.mock" in {q["name"] for q in workers[node]["active_queues"]}

    ARTIFACTS.mkdir(exist_ok=True)
    workers_page = browse(f"{flower}/workers", ARTIFACTS / "flower-workers.png")
    tasks_page = browse(f"{flower}/tasks", ARTIFACTS / "flower-tasks.png")
    assert node in workers_page
    assert "l04.infer" in tasks_page
    for page in (workers_page, tasks_page, api.get("/api/tasks").text):
        assert "PROMPT-MARKER" not in page
    assert (ARTIFACTS / "flower-tasks.png").stat().st_size > 10_000

    metrics = httpx.get(f"{flower}/metrics", timeout=5).text
    names = {family.name for family in text_string_to_metric_families(metrics)}
    assert "flower_events" in names
    succeeded = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "flower_events_total" and s.labels.get("type") == "task-succeeded"
    ]
    assert sum(succeeded) >= 3
    assert "PROMPT-MARKER" not in worker.log()

    # An operator may turn a redacted preview of the prompt on, producer side.
    shown = ModelGateway(load_settings(redis_url=gateway.settings.redis_url, task_show_prompt=True))
    try:
        answer = await shown.execute(make_request(f"{PROMPT} with sk-live-abcdefgh1234"))
    finally:
        await shown.close()
    deadline = time.monotonic() + 10
    while answer.job_id not in (tasks := api.get("/api/tasks").json()):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    args = tasks[answer.job_id]["args"]
    assert "PROMPT-MARKER" in args and "[REDACTED]" in args and "sk-live" not in args
