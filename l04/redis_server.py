"""Start and stop a private redis-server: for the demo when none answers, and for the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from l04.processes import stop_process


class RedisNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """A redis-server child process on 127.0.0.1. ``appendonly`` keeps data across restarts."""

    def __init__(
        self, port: int | None = None, *, appendonly: bool = False, data_dir: str | None = None
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisNotInstalled(
                "redis-server is not installed: run `make install` (Debian/Ubuntu: "
                "apt-get install -y redis-server; macOS: brew install redis)"
            )
        self.executable = executable
        self.port = port or free_port()
        self.appendonly = appendonly
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="l04-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.data_dir,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        log = open(Path(self.data_dir) / "redis.log", "ab")  # noqa: SIM115 - lives with the child
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir}/redis.log"
                )
            if redis_answers(self.url, 0.2):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=0 if kill else 10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
