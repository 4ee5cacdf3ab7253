"""The README's Python example, run as a user runs it: as a script, against a real worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.processes import ROOT, WorkerProcess


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
