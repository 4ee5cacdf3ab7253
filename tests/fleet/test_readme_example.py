"""The README's Python example, run as a user runs it: as a script, against a real worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.processes import ROOT, ServerProcess, WorkerProcess


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Using it\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README lost its Python example"
    return block.group(1)


def test_the_readme_example_runs_as_written(
    redis_url: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start_worker("mock")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "REDIS_URL": redis_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Mock response to: Hello, world! ")
    assert lines[1] == "Mock response to: Stream this"
    assert lines[2] in ("queued", "running", "succeeded")
    assert lines[3] == "Mock response to: Order 42"
    assert lines[4] == "True Mock response to: Order 42"  # a job answered whole streams as one
    assert lines[5] == "True"


def test_the_readme_http_example_runs_as_written(
    redis_url: str,
    start_worker: Callable[..., WorkerProcess],
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    """The "Over HTTP" section: its commands (a key from `l04 keys create`, `l04 serve`) and
    its Python, with the key it printed and the server's port put in."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Over HTTP", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", section, re.S)
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert commands is not None and code is not None, "the README lost its HTTP example"
    create = next(line for line in commands.group(1).splitlines() if "keys create" in line)
    argv = create.split("#", 1)[0].split()
    assert argv[:3] == ["l04", "keys", "create"]
    start_worker("mock")
    server = start_server()
    env = {**os.environ, "REDIS_URL": redis_url}
    printed = subprocess.run(
        [sys.executable, "-m", "l04", *argv[1:]],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    key = next(word for word in printed.split() if word.startswith("sk-l04-"))
    script = tmp_path / "door.py"
    script.write_text(
        code.group(1)
        .replace("sk-l04-...", key)
        .replace("127.0.0.1:8004", f"127.0.0.1:{server.port}")
    )
    result = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["Mock response to: Hi", "Mock response to: Hi"]
