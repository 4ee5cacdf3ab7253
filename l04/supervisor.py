"""``l04 worker --processes N``: N worker processes on one host, under one supervisor.

Each process is the ``l04 worker`` of one process (one Celery worker, one asyncio event loop),
started with ``--processes 1`` and a Celery node name of its own (``--name`` with ``-1`` ...
``-N`` added, or ``l04-<providers>-<supervisor pid>-<i>@<host>``). The supervisor:

* starts them, and starts again one that exits without being asked to (its jobs come back to
  the fleet as any dead worker's do: its messages after the visibility timeout, its leases when
  they lapse);
* serves one metrics endpoint for the host: each process counts into files of its own in a
  fresh directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), the
  supervisor serves their sum and the fleet state read from Redis once; the directory is
  removed when the supervisor exits;
* on SIGTERM or SIGINT sends SIGTERM to every process (Celery's warm shutdown: no new jobs, the
  jobs in flight end and are acknowledged) and waits for all of them; it exits 0 when each
  stopped cleanly. A second SIGINT sends SIGQUIT (Celery's cold shutdown), as a second Ctrl+C
  does to one worker.

A process that exits unasked is started again after a pause: 0.5 s, doubled at each failure in a
row up to 30 s, and 0.5 s again once a process had run for 60 s. A process that dies before it
is ready (Celery's ``worker_ready``), or within 10 s of it, has failed to start: a setup that
cannot work (a broken install, a broker that refuses the worker's commands). When one process
fails to start five times in a row, the supervisor gives up: it stops the others (they drain)
and exits 1 with ``l04 worker: stopped with status 1: <reason>``, so that whatever runs it
(systemd, Docker) sees a failed service instead of a loop. A process that dies later (killed,
out of memory) is always started again, its pause growing as above: it may have been taken down
by one job, which comes back only after the visibility timeout and which the fleet's own
``L04_MAX_DELIVERIES`` stops, and the supervisor must not take the host's other processes down
with it.

The processes run in process groups of their own, so that a Ctrl+C at a terminal reaches the
supervisor only (a SIGINT to a Celery worker exits 1, and a second one is a cold shutdown), and
on Linux each asks the kernel for SIGTERM should the supervisor die (``PR_SET_PDEATHSIG``), so
that none is left behind without it.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RESTART_DELAY_S = 0.5  # the first pause before a process that exited is started again
MAX_RESTART_DELAY_S = 30.0
STABLE_AFTER_S = 60.0  # a process that ran this long is started again after the first pause
START_GRACE_S = 10.0  # a process that dies this soon after it was ready failed to start too
MAX_START_FAILURES = 5  # one process failing to start this often in a row: give up
POLL_S = 0.2  # how often exits are looked for (signals and readiness wake the loop at once)


def say(line: str) -> None:
    print(f"l04 worker: {line}", file=sys.stderr, flush=True)


# -- how many processes ------------------------------------------------------------------------


def host_cores(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The cores this process may use: the CPUs it may run on (``sched_getaffinity``), fewer
    when its cgroup (v2) has a CPU quota (``docker run --cpus 2``, a Kubernetes CPU limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    return max(1, min(cores, quota) if quota is not None else cores)


def cgroup_cpu_limit(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """CPUs the cgroup v2 quotas of this process's cgroup and its parents allow (``cpu.max``,
    the smallest, rounded up); None where none is set or there is no cgroup v2."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return None
    limit: int | None = None
    current = cgroup_root / own.lstrip("/")
    while True:
        try:
            quota, period = (current / "cpu.max").read_text().split()
            if quota != "max":
                cpus = max(1, math.ceil(int(quota) / int(period)))
                limit = cpus if limit is None else min(limit, cpus)
        except (OSError, ValueError):
            pass
        if current == cgroup_root or cgroup_root not in current.parents:
            return limit
        current = current.parent


def resolve_processes(value: int | Literal["auto"]) -> int:
    return host_cores() if value == "auto" else value


# -- the supervised process's side -------------------------------------------------------------


def parse_supervisor(spec: str) -> tuple[int, int]:
    """``--supervisor PID:FD``, given by the supervisor to the processes it starts."""
    pid, _, fd = spec.partition(":")
    return int(pid), int(fd)


def become_supervised(supervisor_pid: int, ready_fd: int) -> None:
    """In a process the supervisor started: die with it, and tell it when Celery is ready."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before the request above took effect
        raise SystemExit(f"l04 worker: its supervisor (pid {supervisor_pid}) is gone")
    from celery.signals import worker_ready

    told: list[bool] = []

    def ready(**_: Any) -> None:
        if told:  # once: afterwards the descriptor's number may be another file's
            return
        told.append(True)
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"{os.getpid()}\n".encode())
            os.close(ready_fd)

    worker_ready.connect(ready, weak=False)


# -- the supervisor ----------------------------------------------------------------------------


def node_name(name: str | None, providers: list[str], index: int) -> str:
    """Process ``index``'s Celery node name: ``--name`` with ``-<index>`` before its ``@``."""
    if name:
        node, at, host = name.partition("@")
        return f"{node}-{index}{at}{host}"
    return f"l04-{'-'.join(providers)}-{os.getpid()}-{index}@{socket.gethostname()}"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_at: float | None = None  # when it said it was ready
    start_failures: int = 0  # failed starts in a row
    delay: float = 0.0  # the last pause before a start
    restart_at: float | None = None


class Supervisor:
    """Runs ``count`` processes of ``command(index, ready_fd)`` until told to stop."""

    def __init__(
        self,
        count: int,
        command: Callable[[int, int], list[str]],
        env: dict[str, str],
        metrics_dir: str,
    ) -> None:
        self._count = count
        self._command = command
        self._env = env
        self._metrics_dir = metrics_dir
        self._slots = [_Slot(index) for index in range(1, count + 1)]
        self._stopping = False
        self._cold = False
        self._failure: str | None = None
        self._signals: list[int] = []
        self._ready_buffer = b""

    def run(self) -> int:
        """Until a signal stops it (0 when every process stopped cleanly) or it gives up (1)."""
        ready_r, self._ready_w = os.pipe()
        wake_r, wake_w = os.pipe()
        for fd in (ready_r, wake_r, wake_w):
            os.set_blocking(fd, False)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._stopping or any(s.process is not None for s in self._slots):
                self._wait(ready_r, wake_r)
                self._handle_signals()
                self._reap()
                if not self._stopping:
                    self._start_due()
        finally:
            self._stop_all(signal.SIGTERM)  # only if something above went wrong: none is left
            for slot in self._slots:
                if slot.process is not None:
                    slot.process.wait()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (ready_r, self._ready_w, wake_r, wake_w):
                os.close(fd)
        if self._failure is not None:
            say(f"stopped with status 1: {self._failure}")
            return 1
        say(f"all {self._count} processes stopped")
        return 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)  # handled by the loop: printing here could re-enter print

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if not self._stopping:
                say(f"{name}: stopping {self._count} processes (their jobs in flight finish)")
                self._stopping = True
                self._stop_all(signal.SIGTERM)
            elif signum == signal.SIGINT and not self._cold:
                say("SIGINT again: cold shutdown (jobs in flight go back to their queues)")
                self._cold = True
                self._stop_all(signal.SIGQUIT)

    def _stop_all(self, signum: int) -> None:
        for slot in self._slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.ready_at = None
        slot.started = time.monotonic()
        argv = self._command(slot.index, self._ready_w)
        try:
            process = subprocess.Popen(
                argv, env=self._env, pass_fds=(self._ready_w,), process_group=0
            )
        except OSError as exc:
            self._failed(slot, None, f"could not be started ({exc.strerror})")
            return
        slot.process = process
        node = argv[argv.index("--name") + 1] if "--name" in argv else "?"
        say(f"process {slot.index} of {self._count} started (pid {process.pid}, node {node})")
        if self._stopping:  # a signal came while it was being started
            process.send_signal(signal.SIGTERM)

    def _wait(self, ready_r: int, wake_r: int) -> None:
        readable, _, _ = select.select([ready_r, wake_r], [], [], POLL_S)
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        if ready_r not in readable:
            return
        with contextlib.suppress(BlockingIOError):
            self._ready_buffer += os.read(ready_r, 4096)
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            pid = int(line) if line.strip().isdigit() else 0
            slot = next((s for s in self._slots if s.process and s.process.pid == pid), None)
            if slot is None:
                continue
            slot.ready_at = time.monotonic()
            say(f"process {slot.index} of {self._count} ready (pid {pid})")
            if all(s.ready_at is not None for s in self._slots):
                say(f"all {self._count} processes ready")

    def _reap(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        for slot in self._slots:
            process = slot.process
            if process is None or (code := process.poll()) is None:
                continue
            slot.process = None
            # Its live gauges (calls in flight) go; its counters stay in the host's sums.
            mark_process_dead(process.pid, self._metrics_dir)
            why = describe_exit(code)
            if not self._stopping:
                self._failed(slot, process.pid, why)
            elif code not in (0, -signal.SIGTERM) and self._failure is None:
                self._failure = f"process {slot.index} (pid {process.pid}) {why} while stopping"

    def _failed(self, slot: _Slot, pid: int | None, why: str) -> None:
        """A process exited unasked (or could not be started): start it again, or give up."""
        who = f"process {slot.index} of {self._count}" + (f" (pid {pid})" if pid else "")
        now = time.monotonic()
        lived = now - slot.started
        if slot.ready_at is not None and now - slot.ready_at >= START_GRACE_S:
            slot.start_failures = 0  # it had started: whatever killed it, it comes back
        else:
            slot.start_failures += 1
            if slot.ready_at is None:
                why += " before it was ready"
            else:
                why += f" {now - slot.ready_at:.1f} s after it was ready"
            if slot.start_failures >= MAX_START_FAILURES:
                say(f"{who} {why}")
                self._failure = (
                    f"process {slot.index} of {self._count} failed to start "
                    f"{slot.start_failures} times in a row (last: {why})"
                )
                self._stopping = True
                self._stop_all(signal.SIGTERM)
                return
        if slot.delay == 0 or lived >= STABLE_AFTER_S:
            slot.delay = RESTART_DELAY_S
        else:
            slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY_S)
        slot.restart_at = time.monotonic() + slot.delay
        say(f"{who} {why}; starting it again in {slot.delay:g} s")

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)


def run_supervisor(
    count: int,
    providers: list[str],
    concurrency: int,
    loglevel: str,
    name: str | None,
    metrics_port: int | None,
) -> int:
    """``count`` ``l04 worker`` processes, supervised, with one metrics endpoint for all."""
    from config.settings import get_settings
    from l04.worker import check_providers

    check_providers(providers)
    settings = get_settings()
    directory = tempfile.mkdtemp(prefix=f"l04-metrics-{os.getpid()}-")
    close_metrics: Callable[[], None] | None = None
    try:
        port = metrics_port if metrics_port is not None else settings.metrics_port
        if port is not None:
            from gateway_client.metrics import serve_multiprocess_metrics

            try:
                bound, close_metrics = serve_multiprocess_metrics(
                    port,
                    directory,
                    redis_url=settings.redis_url,
                    broker_url=settings.effective_broker_url,
                    providers=providers,
                    sentinel=settings.sentinel,
                )
            except OSError as exc:
                say(f"stopped with status 1: metrics port {port}: {exc.strerror}")
                return 1
            print(f"l04 worker: metrics on :{bound}/metrics, of {count} processes", flush=True)

        def command(index: int, ready_fd: int) -> list[str]:
            return [
                *[sys.executable, "-m", "l04", "worker", "--processes", "1"],
                *["--providers", ",".join(providers), "--concurrency", str(concurrency)],
                *["--loglevel", loglevel, "--name", node_name(name, providers, index)],
                *["--supervisor", f"{os.getpid()}:{ready_fd}"],
            ]

        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        return Supervisor(count, command, env, directory).run()
    finally:
        if close_metrics is not None:
            close_metrics()
        shutil.rmtree(directory, ignore_errors=True)
