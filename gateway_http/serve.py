"""``l04 serve``: uvicorn running the door, in one process or ``--workers N`` on one socket.

Draining on SIGTERM (or SIGINT): the listening socket closes at once (no new connections);
requests in flight and open streams finish, for up to ``L04_HTTP_DRAIN_GRACE`` seconds; a new
request on a kept-alive connection meanwhile gets 503 with ``Connection: close``; then the
process exits 0. uvicorn's own shutdown closes idle kept-alive connections straight away and
gives no 503, hence :class:`DrainingServer`.

With ``--workers N`` the processes are started here (not by uvicorn's supervisor, which would
run its own Server class), each on the one bound socket; their metrics count into a shared
directory and ``/metrics`` of any of them returns the sum.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from types import FrameType
from typing import Any

import uvicorn

from config import tracing
from config.settings import GatewaySettings, load_settings
from gateway_http.access import Drain

log = logging.getLogger("l04.http")

NO_AUTH_ENV = "L04_HTTP_NO_AUTH"  # set by `l04 serve --no-auth` for its processes
_DRAIN = Drain()
#: A server process that exits sooner than this after its start could not start.
STARTUP_S = 5.0


class NoAuthRefused(Exception):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_from_env() -> Any:
    """The application as configured by the environment (uvicorn's factory, in each process)."""
    from gateway_http.app import create_app

    # Here, in each server process: OTEL_* decide (README "Tracing"); _run flushes at the end.
    tracing.setup_tracing("l04-serve")
    settings = load_settings()
    no_auth = os.environ.get(NO_AUTH_ENV) == "1"
    if no_auth:
        if not is_loopback(settings.http_host):
            raise NoAuthRefused(f"--no-auth is refused on {settings.http_host}: loopback only")
        return create_app(settings, key_store=None, drain=_DRAIN)
    from gateway_http.keys import key_store

    return create_app(settings, key_store=key_store, drain=_DRAIN)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace: float) -> None:
        super().__init__(config)
        self.grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _DRAIN.start()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections from here on
        for sock in sockets or []:
            sock.close()
        ends = time.monotonic() + self.grace
        # Requests in flight and open streams finish; idle kept-alive connections stay open
        # meanwhile, so that a request on one gets the door's 503 instead of a reset.
        while self.server_state.tasks and time.monotonic() < ends and not self.force_exit:  # noqa: ASYNC110 - uvicorn signals no event for this
            await asyncio.sleep(0.05)
        # What is left of the grace, for uvicorn's own wait (0: cancel what still runs; the
        # streams cut so end with an error event and cancel their jobs, see sse.py).
        self.config.timeout_graceful_shutdown = max(0, ends - time.monotonic())  # type: ignore[assignment]
        await super().shutdown(sockets=None)


def _config(settings: GatewaySettings, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        "gateway_http.serve:app_from_env",
        factory=True,
        host=host,
        port=port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        lifespan="on",
        access_log=False,  # the door logs its own access lines, as JSON
        log_config=None,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=0,  # DrainingServer.shutdown sets what is left of the grace
        timeout_keep_alive=30,
        backlog=4096,
    )


def configure_logging(log_level: str) -> None:
    """One JSON object per line, as the workers log (``L04_LOG_FORMAT=text``: plain lines)."""
    from workers.log_format import JsonFormatter

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    root.setLevel(log_level.upper())
    if load_settings().log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _run(server: DrainingServer, sockets: list[socket.socket] | None = None) -> None:
    logging.getLogger("uvicorn.access").disabled = True  # the door logs its own (access.py)
    # uvicorn raises the signal it stopped on once it has shut down, to die of it; a drained
    # server has done what SIGTERM asks and exits 0 instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=sockets)
    finally:
        tracing.shutdown_tracing()  # the drained requests' spans, exported before the exit


def _child(config: uvicorn.Config, sock: socket.socket, log_level: str, grace: float) -> None:
    configure_logging(log_level)
    _run(DrainingServer(config, grace), [sock])


def serve(
    host: str | None,
    port: int | None,
    workers: int,
    *,
    no_auth: bool = False,
    log_level: str = "INFO",
) -> int:
    """Run the server until SIGTERM or SIGINT; the exit status (non-zero says why it stopped)."""
    settings = load_settings()
    host = host or settings.http_host
    port = settings.http_port if port is None else port
    if no_auth and not is_loopback(host):
        print(f"l04 serve: --no-auth is refused on {host}: use a loopback address", file=sys.stderr)
        return 2
    os.environ["L04_HTTP_HOST"] = host
    os.environ["L04_HTTP_PORT"] = str(port)
    if no_auth:
        os.environ[NO_AUTH_ENV] = "1"
    else:
        os.environ.pop(NO_AUTH_ENV, None)
    configure_logging(log_level)
    config = _config(settings, host, port, log_level)
    if workers <= 1:
        server = DrainingServer(config, settings.http_drain_grace)
        _run(server)
        return 0 if server.started else 1
    return _run_workers(config, workers, log_level, settings.http_drain_grace)


def _run_workers(config: uvicorn.Config, workers: int, log_level: str, grace: float) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="l04-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sock = config.bind_socket()
    context = multiprocessing.get_context("spawn")
    child_args = (config, sock, log_level, grace)
    processes = [context.Process(target=_child, args=child_args) for _ in range(workers)]
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        stopping.append(sig)
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    started: dict[int, float] = {}
    for process in processes:
        process.start()
        started[id(process)] = time.monotonic()
    status = 0
    while processes:
        for index, process in enumerate(list(processes)):
            process.join(timeout=0.2)
            if process.exitcode is None:
                continue
            processes.remove(process)
            if stopping:
                continue
            status = 1
            if time.monotonic() - started[id(process)] < STARTUP_S:
                # It could not start (its log says why): the others cannot either.
                log.error("server process exited %s while starting: stopping", process.exitcode)
                forward(signal.SIGTERM, None)
                continue
            # A server process died while the others serve: start another in its place.
            log.warning("server process %s exited %s: restarting it", process.pid, process.exitcode)
            replacement = context.Process(target=_child, args=child_args)
            replacement.start()
            started[id(replacement)] = time.monotonic()
            processes.insert(index, replacement)
    sock.close()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
