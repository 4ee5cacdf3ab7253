"""The image's package, built from exactly what the Dockerfile copies: every module, every Lua
script and the catalog are in it, and the commands import from it (Docker does not run here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.processes import ROOT


def dockerfile_copies() -> list[str]:
    copies = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            copies += sources
    return copies


def project_packages() -> list[str]:
    """The packages pyproject.toml ships (``[tool.setuptools.packages.find] include``): a new
    package is checked here the day it is added, not the day someone remembers the list."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        found = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [name.rstrip("*") for name in found]
    assert "gateway_http" in packages
    return packages


def test_the_image_holds_every_module_script_and_catalog(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in dockerfile_copies():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, context / source)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(context)],
        check=True,
        timeout=120,
    )  # fmt: skip
    [wheel] = wheels.glob("*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        str(path.relative_to(ROOT))
        for package in project_packages()
        for path in (ROOT / package).rglob("*")
        if path.suffix in (".py", ".lua", ".toml") and "__pycache__" not in path.parts
    }
    assert wanted - packed == set()

    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    script = (
        "import l04.cli, tasks.celery, workers.runtime, gateway_client\n"
        "import gateway_http.app, gateway_http.serve, gateway_http.keys\n"
        "from gateway_core.lua_scripts import script_source\n"
        "assert 'now_seconds' in script_source('workers', 'job_claim')\n"
        "import gateway_core; print(gateway_core.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site))
