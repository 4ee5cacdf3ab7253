"""``l04 keys`` as a user runs it: the installed command, in a process of its own, on the test's
Redis (REDIS_URL), with a catalog of the test's (L04_CATALOG)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from gateway_core.errors import KeyRefused
from gateway_core.job_records import text
from gateway_core.virtual_keys import KEY_ID_PATTERN, KEY_PATTERN, VirtualKeyStore, hash_key
from tests.processes import ROOT

L04 = Path(sys.executable).parent / "l04"  # .venv/bin/l04, the console script
Runner = Callable[..., subprocess.CompletedProcess[str]]

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
aliases = ["mock-alias"]
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "gpt-4o-mini"
provider = "openai"
context_window = 128000
max_output_tokens = 16384
"""


@pytest.fixture
def l04(redis_url: str, tmp_path: Path) -> Runner:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_URL": redis_url,
        "L04_CATALOG": str(catalog),
    }

    def run(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(L04), "keys", *args],
            cwd=ROOT,
            env={**env, **({"REDIS_URL": url} if url else {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


async def authenticate(redis_url: str, secret: str) -> str:
    client = Redis.from_url(redis_url)
    try:
        return (await VirtualKeyStore(client).authenticate(secret)).id
    finally:
        await client.aclose()


async def test_create_json_list_revoke(
    l04: Runner, redis_url: str, redis_client: redis.Redis
) -> None:
    made = l04(
        "create", "--agent", "did:key:agent1", "--name", "ci", "--models", "mock-alias,gpt-4o-mini",
        "--rpm", "5", "--tpm", "2000", "--token-quota", "100000", "--cost-quota", "2.5",
        "--quota-period", "7d", "--expires-in", "30d", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)  # exactly one JSON object on stdout
    assert KEY_PATTERN.fullmatch(created["key"]) and KEY_ID_PATTERN.fullmatch(created["id"])
    assert created["agent_did"] == "did:key:agent1" and created["name"] == "ci"
    assert created["models"] == ["mock", "gpt-4o-mini"]  # the alias stored as the catalog id
    assert (created["rpm"], created["tpm"], created["token_quota"]) == (5, 2000, 100000)
    assert created["cost_quota"] == 2.5 and created["quota_period_s"] == 7 * 86400
    assert created["expires_at"] - created["created_at"] == pytest.approx(30 * 86400)
    secret = created["key"]
    assert await authenticate(redis_url, secret) == created["id"]

    plain = l04("create", "--agent", "did:key:agent2")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert KEY_PATTERN.fullmatch(lines[0])  # the key, on its own line
    assert "id: " in plain.stdout and "limits: none" in plain.stdout
    plain_id = next(line.split()[1] for line in lines if line.startswith("id: "))
    assert await authenticate(redis_url, lines[0]) == plain_id

    for listing in (l04("list"), l04("list", "--json")):
        assert listing.returncode == 0, listing.stderr
        for secret_ in (secret, lines[0]):
            assert secret_ not in listing.stdout + listing.stderr
            assert hash_key(secret_) not in listing.stdout + listing.stderr
        assert created["id"] in listing.stdout and plain_id in listing.stdout
    listed = json.loads(l04("list", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"], plain_id]
    assert listed[0]["models"] == ["mock", "gpt-4o-mini"] and listed[0]["rpm"] == 5
    assert listed[0]["last_used_at"] is not None and listed[1]["status"] == "active"
    assert all("key" not in k for k in listed)
    table = l04("list").stdout
    assert "did:key:agent1" in table and "rpm=5" in table and "per 1w" in table

    revoked = l04("revoke", created["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with pytest.raises(KeyRefused):
        await authenticate(redis_url, secret)
    assert l04("revoke", created["id"]).returncode == 0  # again: already revoked, fine
    after = json.loads(l04("list", "--json").stdout)
    assert after[0]["status"] == "revoked" and after[0]["revoked_at"] is not None
    assert "revoked" in l04("list").stdout

    unknown = l04("revoke", "vk_0000000000000000")
    assert unknown.returncode == 1 and "no key vk_0000000000000000" in unknown.stderr
    by_key = l04("revoke", lines[0])
    assert by_key.returncode == 2 and lines[0] not in by_key.stdout + by_key.stderr
    assert await authenticate(redis_url, lines[0]) == plain_id  # not revoked by mistake


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--agent", "agent-7"], "is not a DID"),
        (["--agent", "did:key:a", "--expires-in", "3x"], "'3x' is no duration"),
        (["--agent", "did:key:a", "--expires-in", "30"], "is no duration"),
        (["--agent", "did:key:a", "--rpm", "-1"], "must be more than 0"),
        (["--agent", "did:key:a", "--tpm", "ten"], "not a whole number"),
        (["--agent", "did:key:a", "--cost-quota", "nan"], "USD more than 0"),
        (["--agent", "did:key:a", "--models", "mock,nope"], "not in the model catalog: nope"),
        (["--agent", "did:key:a", "--quota-period", "0.1s"], "quota_period_s"),
        (["--name", "x"], "--agent"),
    ],
)
def test_bad_input_is_a_message_and_status_2(
    l04: Runner, redis_client: redis.Redis, args: list[str], says: str
) -> None:
    result = l04("create", *args)
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert redis_client.dbsize() == 0


def test_an_unreachable_redis_is_E4407_and_status_2(l04: Runner) -> None:
    for args in (["list"], ["create", "--agent", "did:key:a"], ["revoke", "vk_0000000000000000"]):
        result = l04(*args, url="redis://127.0.0.1:1/0")
        assert result.returncode == 2, result
        assert "E4407" in result.stderr and "Traceback" not in result.stderr


def test_the_record_keeps_no_key(l04: Runner, redis_client: redis.Redis) -> None:
    secret = json.loads(l04("create", "--agent", "did:key:a", "--json").stdout)["key"]
    for name in redis_client.scan_iter("*"):
        assert secret not in text(name)
        values = redis_client.hvals(name) if text(redis_client.type(name)) == "hash" else []
        assert all(secret not in text(v) for v in values)
