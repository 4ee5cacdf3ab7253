"""Lua scripts kept in ``.lua`` files beside the code that runs them.

A package's scripts live in its ``lua/`` folder (``workers/lua/job_claim.lua``). A line
``-- include: <name>`` in a script is replaced by the shared file ``gateway_core/lua/<name>.lua``
(the server clock, the job's event helpers), so that each helper is written once; a shared
file may include another the same way (``job`` includes ``webhook``). Every script
opens with a header naming its KEYS and ARGV, what it returns, and its edge cases;
``tests/redis/test_lua_scripts.py`` runs each edge case against a real redis-server.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

_INCLUDE = re.compile(r"^-- include:(.*)$", re.MULTILINE)
_SHARED_NAME = re.compile(r"[a-z_]+")


@cache
def script_source(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua`` with its includes filled in."""
    text = files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    where = f"{package}/lua/{name}.lua"
    return _INCLUDE.sub(lambda match: _shared(match.group(1).strip(), where), text)


def _shared(name: str, where: str) -> str:
    """The shared file ``name``; a name that is not one fails here, not later inside Redis."""
    path = files("gateway_core").joinpath("lua", f"{name}.lua")
    if not _SHARED_NAME.fullmatch(name) or not path.is_file():
        raise FileNotFoundError(
            f"{where} includes {name!r}: there is no gateway_core/lua/{name}.lua"
        )
    text = path.read_text(encoding="utf-8")
    return _INCLUDE.sub(
        lambda match: _shared(match.group(1).strip(), f"gateway_core/lua/{name}.lua"), text
    )


def register(redis: Any, package: str, name: str) -> Any:
    """The script as a redis-py ``Script`` bound to ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(script_source(package, name))
