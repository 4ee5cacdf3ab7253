"""Start and stop a private redis-server: for the demo when none answers, and for the tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from gateway_core.redis_pool import make_sync_redis
from gateway_core.redis_url import SentinelOptions
from l04.processes import stop_process


class RedisNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5, sentinel: SentinelOptions | None = None) -> bool:
    """Whether the Redis at ``url`` (or the Sentinels' master) answers a PING."""
    client = make_sync_redis(
        url, 2, sentinel=sentinel, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """A redis-server child process on 127.0.0.1. ``appendonly`` keeps data across restarts."""

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        data_dir: str | None = None,
        replica_of: int | None = None,
        password: str | None = None,
        appendfsync: str = "everysec",
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
        self.replica_of = replica_of  # the port of this server's master, on 127.0.0.1
        self.password = password  # required of clients, and given to the master by a replica
        # "always": every write is on disk before it is acknowledged, so a SIGKILL loses nothing.
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

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
            self.appendfsync,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
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


class LocalSentinels:
    """A master, one replica and three Sentinels watching them, each a child process.

    For the failover tests: :meth:`kill_master` SIGKILLs the master, :meth:`wait_for_failover`
    waits until the Sentinels agree on the replica as the new master. Failure is detected after
    ``down_after_ms``; two of the three Sentinels must agree (the quorum).
    """

    def __init__(
        self,
        master_name: str = "l04m",
        *,
        down_after_ms: int = 1000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.password = password  # the master's and the replica's
        self.sentinel_password = sentinel_password  # the Sentinels' own
        self.data_dir = tempfile.mkdtemp(prefix="l04-sentinel-")
        self.master = LocalRedis(data_dir=self._dir("master"), password=password)
        self.replica = LocalRedis(
            data_dir=self._dir("replica"), replica_of=self.master.port, password=password
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    def _dir(self, name: str) -> str:
        path = Path(self.data_dir) / name
        path.mkdir(exist_ok=True)
        return str(path)

    @property
    def url(self) -> str:
        """Celery's form: a ``sentinel://`` part per Sentinel, the password in the first."""
        login = f":{self.password}@" if self.password else ""
        parts = [f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports]
        return ";".join([parts[0].replace("://", f"://{login}", 1), *parts[1:]])

    def _sentinel_conf(self, port: int) -> Path:
        directory = Path(self._dir(f"sentinel-{port}"))
        conf = directory / "sentinel.conf"
        name = self.master_name
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n"
            + (f"sentinel auth-pass {name} {self.password}\n" if self.password else "")
            + (
                f"requirepass {self.sentinel_password}\n"
                f"sentinel sentinel-pass {self.sentinel_password}\n"
                if self.sentinel_password
                else ""
            )
        )
        return conf

    def start(self, timeout: float = 20.0) -> LocalSentinels:
        self.master.start()
        self.replica.start()
        for port in self.sentinel_ports:
            conf = self._sentinel_conf(port)
            log = open(conf.parent / "sentinel.log", "ab")  # noqa: SIM115 - lives with the child
            self._sentinels.append(
                subprocess.Popen(
                    [self.master.executable, str(conf), "--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        try:
            self._wait(self._ready, timeout, "the Sentinels did not see the master and its replica")
        except BaseException:
            self.stop()
            raise
        return self

    def _ask(self, port: int, question: Callable[[redis.Redis], Any]) -> Any:
        """``question(client)`` on 127.0.0.1:port, or None if that server does not answer."""
        sentinel = port in self.sentinel_ports
        client = redis.Redis(
            "127.0.0.1",
            port,
            password=self.sentinel_password if sentinel else self.password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            decode_responses=True,
        )
        try:
            return question(client)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
            return None
        finally:
            client.close()

    def _ready(self) -> bool:
        """Every Sentinel knows the master, its replica (online) and the two other Sentinels."""
        for port in self.sentinel_ports:
            info = self._ask(port, lambda c: c.sentinel_master(self.master_name))
            if not isinstance(info, dict):
                return False
            if int(info.get("num-slaves", 0)) < 1 or int(info.get("num-other-sentinels", 0)) < 2:
                return False
        link = self._ask(self.replica.port, lambda c: c.info("replication"))
        return isinstance(link, dict) and link.get("master_link_status") == "up"

    def master_port(self) -> int | None:
        """The master's port as the Sentinels report it (None while none answers)."""
        for port in self.sentinel_ports:
            address = self._ask(
                port, lambda c: c.sentinel_get_master_addr_by_name(self.master_name)
            )
            if isinstance(address, (list, tuple)) and len(address) == 2:
                return int(address[1])
        return None

    def pause_replica(self) -> None:
        """SIGSTOP the replica: it lags, as a replica over a slow or congested link does."""
        if self.replica.process is not None:
            self.replica.process.send_signal(signal.SIGSTOP)

    def resume_replica(self) -> None:
        if self.replica.process is not None:
            self.replica.process.send_signal(signal.SIGCONT)

    def kill_master(self) -> None:
        """SIGKILL the master: what it had not yet sent to its replica is lost."""
        self.master.stop(kill=True)

    def wait_for_failover(self, timeout: float = 30.0) -> None:
        """Wait until every Sentinel names the replica as master and it has taken the role."""

        def promoted() -> bool:
            named = [
                self._ask(port, lambda c: c.sentinel_get_master_addr_by_name(self.master_name))
                for port in self.sentinel_ports
            ]
            role = self._ask(self.replica.port, lambda c: c.role())
            return all(
                isinstance(address, (list, tuple)) and int(address[1]) == self.replica.port
                for address in named
            ) and (isinstance(role, list) and role[0] == "master")

        self._wait(promoted, timeout, "the Sentinels did not promote the replica")

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} within {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.resume_replica()
        for process in self._sentinels:
            stop_process(process, timeout=5)
        self._sentinels = []
        self.replica.stop()
        self.master.stop()

    def __enter__(self) -> LocalSentinels:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
