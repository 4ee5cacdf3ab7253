"""RabbitMQ for the tests and local runs: a private node, or a private vhost on a running one.

``LocalRabbitMQ`` starts a second node on this machine (its own node name, ports, data, logs and
``rabbitmq.conf`` in a temporary directory, management off), so a test can choose broker
settings such as ``consumer_timeout`` without touching the system's node. ``RabbitVhost`` makes a
vhost of its own on a node that already runs (``rabbitmqctl add_vhost`` + ``set_permissions``)
and deletes it afterwards, so concurrent test sessions never see each other's queues.

The node's Erlang cookie is the invoking user's ``~/.erlang.cookie`` (Erlang creates it if
missing), so ``rabbitmqctl -n <node>`` run by the same user reaches it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from l04.processes import stop_process
from l04.redis_server import free_port

# Debian's /usr/sbin scripts re-run themselves as the rabbitmq user (su), which drops a node's
# private settings; the scripts they wrap take the environment as given.
_UNWRAPPED = Path("/usr/lib/rabbitmq/bin")


class RabbitMQNotInstalled(RuntimeError):
    pass


def _tool(name: str) -> str:
    direct = _UNWRAPPED / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise RabbitMQNotInstalled(
            f"{name} is not installed: run `make install` "
            "(Debian/Ubuntu: apt-get install -y rabbitmq-server)"
        )
    return found


def amqp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts AMQP connections there (a TCP connect and protocol header)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # the server's connection.start frame
    except OSError:
        return False


def amqp_url(port: int, vhost: str = "/", host: str = "127.0.0.1") -> str:
    return f"amqp://guest:guest@{host}:{port}/{quote(vhost, safe='')}"


class LocalRabbitMQ:
    """A rabbitmq-server node of its own: ``l04test<port>@localhost`` on 127.0.0.1:<port>."""

    def __init__(
        self,
        port: int | None = None,
        *,
        consumer_timeout_ms: int | None = None,
        channel_tick_ms: int | None = None,
    ) -> None:
        self.executable = _tool("rabbitmq-server")
        self.port = port or free_port()
        self.dist_port = free_port()
        self.nodename = f"l04test{self.port}@localhost"
        self.consumer_timeout_ms = consumer_timeout_ms
        # How often a channel checks its deliveries against consumer_timeout (60 s by default).
        self.channel_tick_ms = channel_tick_ms
        self.base = Path(tempfile.mkdtemp(prefix="l04-rabbitmq-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return amqp_url(self.port)

    def _environment(self) -> dict[str, str]:
        conf = self.base / "rabbitmq.conf"
        lines = [
            f"listeners.tcp.default = {self.port}",
            "loopback_users.guest = true",
            "log.console = false",
        ]
        if self.consumer_timeout_ms is not None:
            lines.append(f"consumer_timeout = {self.consumer_timeout_ms}")
        conf.write_text("\n".join(lines) + "\n")
        if self.channel_tick_ms is not None:
            (self.base / "advanced.config").write_text(
                f"[{{rabbit, [{{channel_tick_interval, {self.channel_tick_ms}}}]}}].\n"
            )
        (self.base / "enabled_plugins").write_text("[].\n")  # management off
        (self.base / "rabbitmq-env.conf").write_text("")  # not the system node's settings
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
        }

    def start(self, timeout: float = 60.0) -> LocalRabbitMQ:
        log = open(self.base / "server.out", "ab")  # noqa: SIM115 - lives with the child
        self.process = subprocess.Popen(
            [self.executable],
            env=self._environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,  # its Erlang children go with it on stop
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.process.returncode}; see {self.base}"
                )
            if amqp_answers("127.0.0.1", self.port, 0.5):
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"rabbitmq-server did not answer on port {self.port}; see {self.base}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
            self.process = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalRabbitMQ:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RabbitVhost:
    """A vhost of its own on a running node, for the guest user; deleted by ``delete``."""

    def __init__(self, port: int = 5672, name: str | None = None, node: str | None = None) -> None:
        self.port = port
        self.name = name or f"l04test-{uuid.uuid4().hex[:10]}"
        self._ctl = [_ctl_command(), *(["-n", node] if node else [])]

    @property
    def url(self) -> str:
        return amqp_url(self.port, self.name)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._ctl, *args], check=True, capture_output=True, timeout=60)

    def create(self) -> RabbitVhost:
        self._run("add_vhost", self.name)
        self._run("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        self._run("delete_vhost", self.name)


def _ctl_command() -> str:
    """rabbitmqctl for the system node: the packaged wrapper, which runs it as rabbitmq (with that
    user's cookie) when called by root."""
    found = shutil.which("rabbitmqctl")
    if found is None:
        raise RabbitMQNotInstalled("rabbitmqctl is not installed: run `make install`")
    return found
