"""Stopping the child processes the demo and the tests start."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (0: SIGKILL at once)."""
    if process.poll() is not None:
        return
    if timeout <= 0:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
