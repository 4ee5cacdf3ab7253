"""Virtual keys at the door, through the official SDKs: the key decides the agent, its models and
limits apply, and refusals raise the SDKs' own exception classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest
import redis

from gateway_client import ModelGateway
from tests.processes import ROOT, ServerProcess, WorkerProcess

CHAT = [{"role": "user", "content": "hello"}]


def create_key(redis_url: str, *flags: str) -> dict[str, str]:
    """``l04 keys create ... --json``, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "l04", "keys", "create", *flags, "--json"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        check=True,
        timeout=60,
    )
    created: dict[str, str] = json.loads(done.stdout)
    return created


@pytest.fixture
def door(
    start_server: Callable[..., ServerProcess], start_worker: Callable[..., WorkerProcess]
) -> ServerProcess:
    start_worker("mock")
    return start_server()


def sdk(door: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key=key, max_retries=0)


def test_the_key_decides_the_agent(
    door: ServerProcess, redis_url: str, redis_client: redis.Redis
) -> None:
    key = create_key(redis_url, "--agent", "did:key:alice", "--name", "alice")
    assert key["key"].startswith("sk-l04-") and key["agent_did"] == "did:key:alice"
    with sdk(door, key["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(model="mock", messages=CHAT)
        job = redis_client.hgetall(f"l04:job:{{{raw.headers['x-l04-job-id']}}}")
        assert json.loads(job[b"request"])["agent_did"] == "did:key:alice"
        assert job[b"key_id"].decode() == key["id"]
        # No field of the body can choose another agent.
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="mock", messages=CHAT, extra_body={"l04": {"agent_did": "did:key:bob"}}
            )
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="mock", messages=CHAT, extra_body={"agent_did": "did:key:bob"}
            )
    # Anthropic's header works as well as OpenAI's.
    with anthropic.Anthropic(base_url=door.url, api_key=key["key"], max_retries=0) as claude:
        message = claude.messages.create(model="mock", max_tokens=20, messages=CHAT)  # type: ignore[arg-type]
        assert message.content[0].type == "text"


def test_refusals_are_the_sdks_exception_classes(door: ServerProcess, redis_url: str) -> None:
    for bad in ("", "sk-l04-unknown", "not even a key"):
        with sdk(door, bad or "x") as client, pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="mock", messages=CHAT)
        assert refused.value.code == "E4408"
    with (
        anthropic.Anthropic(base_url=door.url, api_key="sk-l04-nope", max_retries=0) as claude,
        pytest.raises(anthropic.AuthenticationError) as anth,
    ):
        claude.messages.create(model="mock", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
    assert anth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    # No key at all.
    assert httpx.post(f"{door.url}/v1/chat/completions", json={}).status_code == 401

    only_mock = create_key(redis_url, "--agent", "did:key:a", "--models", "mock")
    with sdk(door, only_mock["key"]) as client:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
        assert denied.value.code == "E4409"
        with pytest.raises(openai.PermissionDeniedError):
            client.embeddings.create(model="mock-embed", input="x")
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(
                model="mock", messages=CHAT, extra_body={"l04": {"fallback_models": ["gpt-4o"]}}
            )
        assert client.chat.completions.create(model="mock", messages=CHAT).choices
        # It sees the models it may use, and no other.
        assert [m.id for m in client.models.list().data] == ["mock"]
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o-mini")


def test_a_keys_rate_and_quota_are_429s(door: ServerProcess, redis_url: str) -> None:
    limited = create_key(redis_url, "--agent", "did:key:r", "--rpm", "1")
    with sdk(door, limited["key"]) as client:
        client.chat.completions.create(model="mock", messages=CHAT)
        with pytest.raises(openai.RateLimitError) as limit:
            client.chat.completions.create(
                model="mock",
                messages=[{"role": "user", "content": "another question"}],
                extra_headers={"X-L04-Timeout": "2"},
            )
        assert limit.value.code == "E4401"
        assert int(limit.value.response.headers["retry-after"]) >= 1
    spent = create_key(redis_url, "--agent", "did:key:q", "--token-quota", "5")
    with sdk(door, spent["key"]) as client, pytest.raises(openai.RateLimitError) as quota:
        client.chat.completions.create(model="mock", messages=CHAT, max_tokens=50)
    assert quota.value.code == "E4402"
    assert quota.value.type == "insufficient_quota"


async def test_idempotency_keys_belong_to_their_virtual_key(
    door: ServerProcess, redis_url: str, gateway: ModelGateway
) -> None:
    first = create_key(redis_url, "--agent", "did:key:one")
    second = create_key(redis_url, "--agent", "did:key:two")
    answers = []
    for key in (first, second, first):
        answers.append(
            httpx.post(
                f"{door.url}/v1/chat/completions",
                json={"model": "mock", "messages": CHAT},
                headers={"Authorization": f"Bearer {key['key']}", "Idempotency-Key": "same"},
                timeout=30,
            )
        )
    ids = [a.headers["x-l04-job-id"] for a in answers]
    assert ids[0] == ids[2] != ids[1]


def test_a_revoked_key_is_refused_within_a_second(door: ServerProcess, redis_url: str) -> None:
    key = create_key(redis_url, "--agent", "did:key:gone")
    with sdk(door, key["key"]) as client:
        client.chat.completions.create(model="mock", messages=CHAT)
        subprocess.run(
            [sys.executable, "-m", "l04", "keys", "revoke", key["id"]],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis_url},
            check=True,
            timeout=60,
        )
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="mock", messages=CHAT)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
