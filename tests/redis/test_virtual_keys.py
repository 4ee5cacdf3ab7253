"""Virtual keys on a real redis-server (no worker): the store, what it keeps, authentication and
revocation as two servers see them, submit with a key, and a worker's admission of a key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from config.catalog import load_catalog
from config.settings import load_settings
from gateway_client import ModelGateway, SyncModelGateway
from gateway_core import keys
from gateway_core.errors import (
    InvalidParameters,
    InvalidRequest,
    JobStoreUnavailable,
    KeyRefused,
    ModelNotAllowed,
)
from gateway_core.job_records import text
from gateway_core.virtual_keys import (
    LAST_USED_EVERY_S,
    KeyCache,
    VirtualKey,
    VirtualKeyStore,
    hash_key,
    new_key,
)
from tests.conftest import make_request
from workers.control.admission import Admission

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
aliases = ["mock-alias"]
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-b"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-c"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
"""


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[VirtualKeyStore]:
    client = Redis.from_url(redis_url)
    yield VirtualKeyStore(client)
    await client.aclose()


@pytest.fixture
def catalog_path(tmp_path: Path) -> str:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    return str(path)


@pytest.fixture
async def client(redis_url: str, catalog_path: str) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(redis_url=redis_url, catalog=load_catalog(catalog_path))
    yield gateway
    await gateway.close()


def everything_stored(r: redis.Redis) -> str:
    """Every key name and value in Redis, as one text (hashes, strings and sets)."""
    parts: list[str] = []
    for name in r.scan_iter("*"):
        parts.append(text(name))
        kind = text(r.type(name))
        if kind == "hash":
            parts += [f"{text(k)}={text(v)}" for k, v in r.hgetall(name).items()]
        elif kind == "string":
            parts.append(text(r.get(name)))
        elif kind == "set":
            parts += [text(m) for m in r.smembers(name)]
    return "\n".join(parts)


async def test_create_get_list_and_what_is_stored(
    store: VirtualKeyStore, redis_client: redis.Redis
) -> None:
    record, secret = await store.create(
        agent_did="did:key:agent1",
        name="ci runner",
        models=["mock"],
        rpm=2,
        tpm=1000,
        token_quota=5000,
        cost_quota=1.5,
        quota_period_s=3600,
        expires_in_s=600,
    )
    assert record.agent_did == "did:key:agent1" and record.models == ["mock"]
    assert (record.rpm, record.tpm, record.token_quota, record.cost_quota) == (2, 1000, 5000, 1.5)
    assert record.expires_at == pytest.approx(record.created_at + 600)
    assert record.revoked_at is None and record.last_used_at is None
    assert await store.get(record.id) == record
    other, other_secret = await store.create(agent_did="did:key:agent2")
    assert [k.id for k in await store.list()] == [record.id, other.id]
    assert other.models == [] and other.rpm is None and other.cost_quota is None

    # The key is nowhere in Redis; its hash names the record and nothing else holds it.
    stored = everything_stored(redis_client)
    for key in (secret, other_secret):
        assert key not in stored and key.removeprefix("sk-l04-") not in stored
    digest = hash_key(secret)
    assert sorted(k.decode() for k in redis_client.scan_iter("*")) == sorted(
        [
            keys.virtual_key(digest),
            keys.virtual_key(hash_key(other_secret)),
            keys.virtual_key_id(record.id),
            keys.virtual_key_id(other.id),
            keys.VIRTUAL_KEYS,
        ]
    )
    fields = {text(k): text(v) for k, v in redis_client.hgetall(keys.virtual_key(digest)).items()}
    assert digest not in "".join(fields.values())  # the record holds no hash either
    assert set(fields) == {
        "id", "name", "agent_did", "models", "rpm", "tpm", "token_quota", "cost_quota",
        "quota_period_s", "created_at", "expires_at",
    }  # fmt: skip
    # Configuration, not per-job data: no TTL (revoked and expired keys stay listed).
    assert all(redis_client.ttl(k) == -1 for k in redis_client.scan_iter("*"))
    assert await store.get("vk_0000000000000000") is None
    assert await store.get("not-an-id") is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"agent_did": "agent-7"}, InvalidRequest),
        ({"rpm": -1}, InvalidRequest),
        ({"cost_quota": float("inf")}, InvalidRequest),
        ({"name": "a\x00b"}, InvalidRequest),
        ({"expires_in_s": 0}, InvalidParameters),
        ({"expires_in_s": float("nan")}, InvalidParameters),
    ],
)
async def test_create_refuses_bad_values_and_writes_nothing(
    store: VirtualKeyStore,
    redis_client: redis.Redis,
    fields: dict[str, object],
    error: type[Exception],
) -> None:
    args: dict[str, object] = {"agent_did": "did:key:a", **fields}
    with pytest.raises(error):
        await store.create(**args)  # type: ignore[arg-type]
    assert redis_client.dbsize() == 0


async def test_authenticate_a_good_key_and_record_its_use_at_most_every_10_s(
    store: VirtualKeyStore, redis_client: redis.Redis
) -> None:
    record, secret = await store.create(agent_did="did:key:agent1", rpm=3)
    before = time.time()
    found = await store.authenticate(secret)
    assert found.id == record.id and found.agent_did == "did:key:agent1" and found.rpm == 3
    assert found.last_used_at is not None and before <= found.last_used_at <= time.time()
    where = keys.virtual_key(hash_key(secret))

    def last_used() -> float:
        return float(redis_client.hget(where, "last_used_at") or 0)

    assert last_used() == found.last_used_at
    # Within 10 s nothing is written, however many requests.
    recent = time.time() - LAST_USED_EVERY_S + 2
    redis_client.hset(where, "last_used_at", repr(recent))
    for _ in range(20):
        await store.authenticate(secret)
    assert last_used() == recent
    # Older than that: refreshed.
    redis_client.hset(where, "last_used_at", repr(time.time() - LAST_USED_EVERY_S - 1))
    await store.authenticate(secret)
    assert last_used() >= before


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "unknown", "revoked", "expired"])
async def test_authenticate_refuses_with_E4408_and_never_names_the_key(
    store: VirtualKeyStore, redis_client: redis.Redis, case: str
) -> None:
    record, secret = await store.create(agent_did="did:key:agent1")
    presented: str | None = secret
    if case == "missing":
        presented = None
    elif case == "empty":
        presented = ""
    elif case == "malformed":
        presented = secret + "!"
    elif case == "unknown":
        presented = new_key()
    elif case == "revoked":
        assert await store.revoke(record.id)
    elif case == "expired":
        redis_client.hset(keys.virtual_key(hash_key(secret)), "expires_at", repr(time.time() - 1))
    with pytest.raises(KeyRefused) as refused:
        await store.authenticate(presented)
    error = refused.value
    assert error.code == "E4408" and not error.retryable
    text = f"{error} {error.details} {error.to_payload()}"
    for part in (secret, presented or "sk-l04-", hash_key(secret)):
        if part != "sk-l04-":
            assert part not in text
    if case in ("revoked", "expired"):
        assert record.id in str(error) and error.details["reason"] == case
    # A refused key records no use.
    assert redis_client.hget(keys.virtual_key(hash_key(secret)), "last_used_at") is None


async def test_a_revoked_key_is_refused_by_every_server_at_its_next_request(
    redis_url: str,
) -> None:
    """Two servers, each with its own client: nothing is cached, so the next request sees it."""
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    try:
        one, two = (VirtualKeyStore(c) for c in clients)
        record, secret = await one.create(agent_did="did:key:agent1")
        for _ in range(3):
            assert (await one.authenticate(secret)).id == (await two.authenticate(secret)).id
        assert await two.revoke(record.id)
        started = time.monotonic()
        for server in (one, two):
            with pytest.raises(KeyRefused):
                await server.authenticate(secret)
        assert time.monotonic() - started < 3.0  # at once: no cache to wait out
        assert await one.revoke(record.id)  # again: still True, still revoked
        first_revocation = (await one.get(record.id)).revoked_at  # type: ignore[union-attr]
        assert await two.revoke(record.id)
        assert (await two.get(record.id)).revoked_at == first_revocation  # type: ignore[union-attr]
        assert not await one.revoke("vk_0000000000000000")
        assert not await one.revoke("sk-l04-whatever")
    finally:
        for c in clients:
            await c.aclose()


async def test_the_key_cache_keeps_a_record_at_most_its_max_age(store: VirtualKeyStore) -> None:
    record, _ = await store.create(agent_did="did:key:agent1")
    cache = KeyCache(store, max_age_s=1.5)
    assert await cache.get(record.id) == record
    await store.revoke(record.id)
    assert (await cache.get(record.id)).revoked_at is None  # type: ignore[union-attr]
    await asyncio.sleep(1.6)
    assert (await cache.get(record.id)).revoked_at is not None  # type: ignore[union-attr]
    assert await cache.get("vk_0000000000000000") is None


async def test_redis_trouble_is_E4407_or_redis_own_error_for_a_worker() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(JobStoreUnavailable) as unavailable:
            await VirtualKeyStore(dead).authenticate(new_key())
        assert unavailable.value.code == "E4407" and unavailable.value.retryable
        with pytest.raises(JobStoreUnavailable):
            await VirtualKeyStore(dead).create(agent_did="did:key:a")
        with pytest.raises(RedisConnectionError):
            await VirtualKeyStore(dead, typed_errors=False).get("vk_0000000000000000")
    finally:
        await dead.aclose()


# -- submit with a key ---------------------------------------------------------------------------


def job_fields(r: redis.Redis, job_id: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in r.hgetall(keys.job(job_id)).items()}


async def test_submit_records_the_key_and_keeps_its_models_out_of_the_chain(
    client: ModelGateway, redis_client: redis.Redis
) -> None:
    key = VirtualKeyStore(client.redis)
    limited, _ = await key.create(agent_did="did:key:agent1", models=["mock", "mock-c"])
    anyone, _ = await key.create(agent_did="did:key:agent1")
    fallbacks = {"fallback_models": ["mock-b", "mock-c"]}

    handle = await client.submit(make_request("a", routing=fallbacks), key_id=limited.id)
    fields = job_fields(redis_client, handle.job_id)
    assert fields["key_id"] == limited.id
    assert fields["chain"] == '["mock", "mock-c"]'  # mock-b, which it may not use, left out

    # By alias: the same model.
    aliased = await client.submit(make_request("b", model_id="mock-alias"), key_id=limited.id)
    assert job_fields(redis_client, aliased.job_id)["model"] == "mock"

    # Any model for a key without models; no key_id field for a job without a key.
    free = await client.submit(make_request("c", routing=fallbacks), key_id=anyone.id)
    assert job_fields(redis_client, free.job_id)["chain"] == '["mock", "mock-b", "mock-c"]'
    plain = await client.submit(make_request("d"))
    assert "key_id" not in job_fields(redis_client, plain.job_id)

    # A strategy ranks only the key's models.
    routed = await client.submit(
        make_request("e", model_id=None, routing={"strategy": "cost_optimized"}),
        key_id=limited.id,
    )
    assert set(json.loads(job_fields(redis_client, routed.job_id)["chain"])) == {"mock", "mock-c"}


async def test_submit_refuses_a_model_the_key_may_not_use_and_an_unusable_key(
    client: ModelGateway, redis_client: redis.Redis
) -> None:
    store = VirtualKeyStore(client.redis)
    limited, _ = await store.create(agent_did="did:key:agent1", models=["mock-c"])
    with pytest.raises(ModelNotAllowed) as refused:
        await client.submit(make_request("a", model_id="mock-b"), key_id=limited.id)
    assert refused.value.code == "E4409" and refused.value.details["allowed"] == ["mock-c"]
    with pytest.raises(ModelNotAllowed):  # the catalog's default model, not the key's
        await client.submit(make_request("b", model_id=None), key_id=limited.id)

    revoked, _ = await store.create(agent_did="did:key:agent1")
    await store.revoke(revoked.id)
    expired, secret = await store.create(agent_did="did:key:agent1")
    redis_client.hset(keys.virtual_key(hash_key(secret)), "expires_at", repr(time.time() - 1))
    for key_id, reason in [
        (revoked.id, "revoked"),
        (expired.id, "expired"),
        ("vk_0000000000000000", None),
        ("nonsense", None),
    ]:
        with pytest.raises(KeyRefused) as unusable:
            await client.submit(make_request("c"), key_id=key_id)
        assert unusable.value.code == "E4408"
        assert unusable.value.details.get("reason") == reason
    assert redis_client.keys("l04:job:*") == []  # nothing was queued


# -- a worker's admission of a key ---------------------------------------------------------------


async def test_admission_applies_a_keys_limits_and_none_for_a_key_without(
    redis_url: str, catalog_path: str
) -> None:
    client = Redis.from_url(redis_url)
    try:
        catalog = load_catalog(catalog_path)
        admission = Admission(client, catalog, load_settings(REDIS_URL=redis_url))
        store = VirtualKeyStore(client)
        plain, _ = await store.create(agent_did="did:key:agent1")
        limited, _ = await store.create(
            agent_did="did:key:agent1", models=["mock"], rpm=2, tpm=900, token_quota=10
        )
        spec, other = catalog.resolve("mock"), catalog.resolve("mock-b")
        assert await admission.virtual_key(None) is None
        assert await admission.virtual_key(plain.id) == plain
        with pytest.raises(KeyRefused):
            await admission.virtual_key("vk_0000000000000000")

        # A key without limits adds none (this catalog has none either).
        assert admission.limits(spec, "did:key:agent1", 100, plain) == {}
        assert not admission.needs_token_count(spec, "did:key:agent1", plain)
        # A key with limits: one bucket per key, whatever the model.
        found = admission.limits(spec, "did:key:agent1", 100, limited)
        assert set(found) == {"key requests per minute", "key tokens per minute"}
        assert admission.limits(other, "did:key:agent1", 100, limited) == found
        assert found["key requests per minute"].key == f"l04:rl:{{key:{limited.id}}}:rpm"
        assert admission.needs_token_count(spec, "did:key:agent1", limited)

        # The backstop: a call to a model the key may not use never gets a ticket.
        request = make_request("x", max_tokens=5)
        with pytest.raises(ModelNotAllowed):
            await admission.admit(
                "j1", request, other, priority="normal", deadline=time.time() + 60,
                prompt_tokens=3, key=limited,
            )  # fmt: skip
        assert await client.keys("l04:rl:*") == []
        assert await client.keys("l04:quota:*") == []
    finally:
        await client.aclose()


def test_the_sync_client_submits_with_a_key_too(
    redis_url: str, catalog_path: str, redis_client: redis.Redis
) -> None:
    async def make() -> VirtualKey:
        client = Redis.from_url(redis_url)
        try:
            record, _ = await VirtualKeyStore(client).create(
                agent_did="did:key:agent1", models=["mock-b"]
            )
            return record
        finally:
            await client.aclose()

    key = asyncio.run(make())
    with SyncModelGateway(redis_url=redis_url, catalog=load_catalog(catalog_path)) as gateway:
        handle = gateway.submit(make_request("a", model_id="mock-b"), key_id=key.id)
        assert job_fields(redis_client, handle.job_id)["key_id"] == key.id
        with pytest.raises(ModelNotAllowed):
            gateway.submit(make_request("b", model_id="mock"), key_id=key.id)
