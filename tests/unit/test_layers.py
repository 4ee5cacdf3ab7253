"""The packages' layers as a running process sees them (import-linter checks the source)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from celery.utils.imports import symbol_by_name

from tasks import worker_classes


@pytest.mark.parametrize("name", worker_classes.ALL)
def test_each_worker_class_the_app_names_resolves(name: str) -> None:
    assert callable(symbol_by_name(name))


def test_a_producer_loads_no_worker_code_and_reads_no_environment_at_import() -> None:
    script = (
        "import sys\n"
        "import gateway_client, gateway_client.batch\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'workers'"
        " or m == 'tasks.celery')\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        # A bad URL would stop any import that reads the settings.
        env={"REDIS_URL": "not a url", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_producers_broker_connection_loads_no_worker_code() -> None:
    script = (
        "import sys\n"
        "from config.settings import load_settings\n"
        "from tasks.app_config import create_app\n"
        "app = create_app(load_settings(REDIS_URL='redis://127.0.0.1:1/0'))\n"
        "app.connection_for_write().transport\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'workers'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_celery_command_finds_the_fleets_app() -> None:
    from celery.app.utils import find_app

    from tasks.celery import app

    assert find_app("tasks") is app
    assert app.conf.worker_pool == worker_classes.POOL
    assert app.conf.worker_consumer == worker_classes.CONSUMER
    assert app.conf.broker_transport in (None, worker_classes.REDIS_TRANSPORT)
