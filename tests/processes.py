"""Real processes for the tests: workers and the mock upstream, started as users start them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from l04.processes import stop_process
from l04.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


class WorkerProcess:
    """``l04 worker`` in a child process, logging to a file the test can read."""

    def __init__(
        self,
        redis_url: str,
        providers: str = "mock",
        concurrency: int = 50,
        env: dict[str, str] | None = None,
        name: str | None = None,
        processes: int = 1,
    ) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        # Unique across the test processes running at once: the name is also its log's file name.
        self.name = name or f"w{uuid.uuid4().hex[:10]}"
        self.log_path = ARTIFACTS / f"worker-{self.name}.log"
        self.command = [
            sys.executable,
            "-m",
            "l04",
            "worker",
            "--providers",
            providers,
            "--concurrency",
            str(concurrency),
            "--name",
            f"{self.name}@test",
        ]
        # Several: a supervisor, whose processes are ready when it says all of them are.
        self.ready_line = " ready." if processes == 1 else f"all {processes} processes ready"
        if processes > 1:
            self.command += ["--processes", str(processes)]
        self.env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if self.ready_line in self.log():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the worker dies holding whatever it had."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)


class MockUpstreamProcess:
    """``l04 mock-provider`` in a child process."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "l04",
            "mock-provider",
            "--port",
            str(self.port),
            "--latency-ms",
            str(latency_ms),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> MockUpstreamProcess:
        ARTIFACTS.mkdir(exist_ok=True)
        log_path = ARTIFACTS / f"mock-upstream-{self.port}.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        # It says where it listens once it does, as a user starting it by hand would read it.
        announced = f"listening on http://127.0.0.1:{self.port} "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if announced in log_path.read_text(errors="replace"):
                httpx.get(f"{self.url}/_mock/stats", timeout=2).raise_for_status()
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"mock upstream exited: {log_path.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"mock upstream did not say it listens: {log_path.read_text()}")

    def faults(self, *faults: dict[str, object]) -> None:
        httpx.post(f"{self.url}/_mock/faults", json=list(faults)).raise_for_status()

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/_mock/stats").json())

    def requests_to(self, path: str) -> int:
        requests = self.stats()["requests"]
        assert isinstance(requests, dict)
        return int(requests.get(path, 0))

    def last(self, path: str) -> dict[str, Any]:
        """The last request received at ``path``: ``{"body": ..., "headers": ...}``."""
        return dict(httpx.get(f"{self.url}/_mock/last", params={"path": path}).json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/_mock/reset").raise_for_status()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class ServerProcess:
    """``l04 serve`` in a child process: the HTTP front door, as a user starts it."""

    def __init__(
        self,
        redis_url: str,
        *,
        no_auth: bool = False,
        workers: int = 1,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.port = free_port()
        self.host = host
        self.log_path = ARTIFACTS / f"serve-{self.port}-{uuid.uuid4().hex[:6]}.log"
        self.command = [
            sys.executable,
            "-m",
            "l04",
            "serve",
            "--host",
            host,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        if no_auth:
            self.command.append("--no-auth")
        self.env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"l04 serve exited early:\n{self.log()}")
            # Its own log says it bound the port (uvicorn's line): a /health answer alone could
            # come from another test process's server that took the port first.
            if "Uvicorn running on" in self.log():
                try:
                    if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"l04 serve not answering in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
