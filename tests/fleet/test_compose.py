"""docker-compose.yml stays true: it validates, and every service's command runs here as written
(Docker does not run on this machine; the same commands do, on free ports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from gateway_client import ModelGateway
from l04.processes import stop_process
from l04.redis_server import free_port
from tests.conftest import make_request
from tests.processes import ARTIFACTS, ROOT

PASSWORD = "compose-test-password"
FLOWER_AUTH = ("admin", "compose-flower")
ENV = {"REDIS_PASSWORD": PASSWORD, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("L04_REQUIRE_TOOLS"):
            pytest.fail("docker-compose is required here (scripts/install.sh installs it)")
        pytest.skip("docker-compose is not installed (scripts/install.sh installs it)")
    return found


def resolved() -> dict[str, Any]:
    """The file as docker-compose resolves it (anchors merged, variables substituted)."""
    done = subprocess.run(
        [docker_compose(), "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        check=True,
    )
    loaded: dict[str, Any] = yaml.safe_load(done.stdout)
    return loaded


def test_docker_compose_config_is_valid() -> None:
    done = subprocess.run(
        [docker_compose(), "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()
    services = resolved()["services"]
    workers = {name for name in services if name.startswith("worker-")}
    assert workers == {"worker-mock", "worker-openai", "worker-anthropic", "worker-ollama"}
    for name in workers:
        assert "container_name" not in services[name]  # or --scale could not add replicas
        assert "ports" not in services[name]
        assert services[name]["stop_signal"] == "SIGTERM"
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_command[redis_command.index("--requirepass") + 1] == PASSWORD
    assert services["flower"]["environment"]["L04_FLOWER_BASIC_AUTH"] == ":".join(FLOWER_AUTH)
    assert {services[name]["environment"]["L04_WORKER_PROCESSES"] for name in workers} == {"1"}
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert set(jobs["l04-workers"]["dns_sd_configs"][0]["names"]) == workers
    assert jobs["l04-workers"]["dns_sd_configs"][0]["port"] == 9100
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    assert jobs["l04-api"]["dns_sd_configs"][0] == {"names": ["api"], "type": "A", "port": 8004}
    api = services["api"]
    assert api["command"][api["command"].index("--port") + 1] == "8004"
    assert api["stop_signal"] == "SIGTERM"
    assert any(str(p.get("published")) == "8004" for p in api["ports"])


def with_port(command: list[str], flag: str, port: int) -> list[str]:
    changed = list(command)
    changed[changed.index(flag) + 1] = str(port)
    return changed


class Started:
    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def run(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (ARTIFACTS / f"compose-{name}.log").open("wb") as log:
            self.processes.append(
                subprocess.Popen(
                    argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
                )
            )

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)


@pytest.fixture
def started() -> Iterator[Started]:
    ARTIFACTS.mkdir(exist_ok=True)
    processes = Started()
    yield processes
    processes.stop()


def wait_http(url: str, auth: tuple[str, str] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, auth=auth, timeout=1)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, url
            time.sleep(0.2)


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts, container path to host path (resolved by docker-compose)."""
    found = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2] if isinstance(volume, str) else volume
        if source.startswith("/"):
            found[target] = Path(source)
    return found


def test_grafana_and_prometheus_get_their_files() -> None:
    services = resolved()["services"]
    prometheus = mounts(services["prometheus"])
    config = prometheus["/etc/prometheus/prometheus.yml"]
    assert config == ROOT / "deploy" / "prometheus.yml"
    for rule_file in yaml.safe_load(config.read_text())["rule_files"]:
        # Relative to the config's directory, in the container as here.
        inside = f"/etc/prometheus/{rule_file}"
        (mounted,) = [t for t in prometheus if inside.startswith(t + "/")]
        assert (prometheus[mounted] / inside[len(mounted) + 1 :]).is_file()
    grafana = mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    assert provisioning == ROOT / "deploy" / "grafana" / "provisioning"
    assert (provisioning / "datasources" / "prometheus.yml").is_file()
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "l04.yml").read_text())["providers"]
    dashboards = grafana[provider["options"]["path"]]  # the provider reads where they are
    assert (dashboards / "l04-fleet.json").is_file()
    assert "prometheus" in services["grafana"]["depends_on"]


async def test_every_service_command_runs_as_written(started: Started, tmp_path: Path) -> None:
    services = resolved()["services"]
    redis_port = free_port()
    started.run(
        "redis",
        [*services["redis"]["command"], "--port", str(redis_port), "--dir", str(tmp_path)],
        {},
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_port).ping()

    l04 = [sys.executable, "-m", "l04"]
    mock_port = free_port()
    started.run(
        "mock", [*l04, *with_port(services["mock-provider"]["command"], "--port", mock_port)], {}
    )
    mock_url = f"http://127.0.0.1:{mock_port}"
    env = {"REDIS_URL": url, "OPENAI_BASE_URL": f"{mock_url}/v1", "OPENAI_API_KEY": "sk-compose"}
    metrics_ports = {}
    # The openai service as with L04_WORKER_PROCESSES=2: a supervisor, one port for both.
    processes = {"worker-mock": "1", "worker-openai": "2"}
    for name in ("worker-mock", "worker-openai"):
        metrics_ports[name] = free_port()
        command = with_port(services[name]["command"], "--metrics-port", metrics_ports[name])
        started.run(name, [*l04, *command], {**env, "L04_WORKER_PROCESSES": processes[name]})
    flower_port = free_port()
    started.run(
        "flower",
        [*l04, *with_port(services["flower"]["command"], "--port", flower_port)],
        {**services["flower"]["environment"], "REDIS_URL": url},
    )
    api_port = free_port()
    started.run(
        "api",
        [*l04, *with_port(services["api"]["command"], "--port", api_port)],
        {**services["api"]["environment"], "REDIS_URL": url},
    )
    for port in (mock_port, *metrics_ports.values(), flower_port, api_port):
        wait_http(f"http://127.0.0.1:{port}/")

    gateway = ModelGateway(redis_url=url)
    try:
        deadline = time.monotonic() + 30
        while len((await gateway.health_check())["workers"]["l04.openai"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        mock_answer = await gateway.execute(make_request("compose mock"))
        openai_answer = await gateway.execute(make_request("compose", model_id="gpt-4o-mini"))
    finally:
        await gateway.close()
    assert mock_answer.provider == "mock" and openai_answer.provider == "openai"
    for name, port in metrics_ports.items():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "l04_inference_requests_total{model=" in text, name
    flower = f"http://127.0.0.1:{flower_port}"
    assert httpx.get(f"{flower}/api/workers", timeout=5).status_code == 401
    wait_http(f"{flower}/api/workers", auth=FLOWER_AUTH)
    assert httpx.get(f"{flower}/api/workers", auth=FLOWER_AUTH, timeout=10).status_code == 200
    assert "flower_events_total" in httpx.get(f"{flower}/metrics", timeout=5).text
    api = f"http://127.0.0.1:{api_port}"
    assert httpx.get(f"{api}/ready", timeout=5).status_code == 200
    assert "l04_http_requests_total" in httpx.get(f"{api}/metrics", timeout=5).text
    assert httpx.get(f"{api}/v1/models", timeout=5).status_code == 401  # auth is on
