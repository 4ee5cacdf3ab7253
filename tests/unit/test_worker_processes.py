"""``l04 worker --processes``: what it accepts, what ``auto`` counts, how its processes are named.
(The supervisor itself runs real workers: tests/fleet/test_worker_processes.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import parse_worker_processes
from l04.supervisor import cgroup_cpu_limit, host_cores, node_name


def test_bad_process_counts_exit_2_saying_what_is_accepted() -> None:
    cases = [
        (["--processes", "0"], {}),
        (["--processes", "x"], {}),
        (["--processes", "-1"], {}),
        (["--processes", "1.5"], {}),
        ([], {"L04_WORKER_PROCESSES": "0"}),
        ([], {"L04_WORKER_PROCESSES": "many"}),
    ]
    started = [  # at once: each is a Python start-up
        subprocess.Popen(
            [sys.executable, "-m", "l04", "worker", *argv],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, env in cases
    ]
    for (argv, env), process in zip(cases, started, strict=True):
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 2, (argv, env, stderr)
        last = stderr.strip().splitlines()[-1]
        assert "must be a positive whole number or 'auto'" in last, (argv, env, last)
        if env:
            assert last.startswith("l04: [E4004] invalid setting: L04_WORKER_PROCESSES:"), last
        else:
            assert last.startswith("l04 worker: error: argument --processes:"), last
        assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("given", "expected"), [("1", 1), ("8", 8), ("auto", "auto"), ("AUTO", "auto"), (3, 3)]
)
def test_process_counts_accepted(given: object, expected: object) -> None:
    assert parse_worker_processes(given) == expected


@pytest.mark.parametrize("given", ["0", "-2", "", "2.0", "²", "one", True])
def test_process_counts_refused(given: object) -> None:
    with pytest.raises(ValueError, match="positive whole number or 'auto'"):
        parse_worker_processes(given)


def cgroup_tree(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A /sys/fs/cgroup with ``cpu.max`` files, and a /proc/self/cgroup naming ``own``."""
    root = tmp_path / "cgroup"
    for path, value in limits.items():
        (root / path).mkdir(parents=True, exist_ok=True)
        (root / path / "cpu.max").write_text(value + "\n")
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def test_auto_counts_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    # Docker with cgroup namespaces: the container's own cgroup is the root; --cpus 1.5.
    root, proc = cgroup_tree(tmp_path, "/", {"": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == 2
    # The smallest quota on the way up counts; "max" is none.
    root, proc = cgroup_tree(
        tmp_path / "nested",
        "/kubepods/pod1/c1",
        {"kubepods": "max 100000", "kubepods/pod1": "50000 100000", "kubepods/pod1/c1": "max"},
    )
    assert cgroup_cpu_limit(root, proc) == 1
    assert host_cores(root, proc) == 1
    root, proc = cgroup_tree(tmp_path / "free", "/user.slice", {"user.slice": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert host_cores(root, proc) == len(os.sched_getaffinity(0))
    # cgroup v1 only (no "0::" line): no quota read, the CPUs the process may run on.
    v1 = tmp_path / "v1"
    v1.write_text("4:memory:/x\n1:cpu:/\n")
    assert cgroup_cpu_limit(root, v1) is None


def test_each_process_has_a_node_name_of_its_own() -> None:
    assert node_name("w1@test", ["mock"], 2) == "w1-2@test"
    assert node_name("plain", ["mock"], 1) == "plain-1"
    default = node_name(None, ["mock", "openai"], 3)
    assert default.startswith(f"l04-mock-openai-{os.getpid()}-3@")
