"""``l04 keys create --webhook-url``: the key's webhook secret is printed once, stored apart from
the key's record for deliverers only, and never shown by ``l04 keys list``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import redis
from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.virtual_keys import VirtualKeyStore
from gateway_core.webhooks import secret_problem
from tests.redis.test_keys_cmd import Runner, l04  # noqa: F401 -- the fixture


async def test_create_with_a_webhook_prints_its_secret_once(
    l04: Runner,  # noqa: F811
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    url = "http://10.1.2.3:8080/hooks?team=a"  # a private host: allowed
    made = l04("create", "--agent", "did:key:agent1", "--webhook-url", url)
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(": ", 1) for line in made.stdout.splitlines()[1:])
    secret = lines["webhook secret"]
    assert secret_problem(secret) is None and lines["webhook"] == url
    assert "shown this once" in made.stderr
    key_id = lines["id"]
    # Stored apart from the record, which never holds it.
    assert redis_client.hgetall(keys.virtual_key_webhook(key_id)) == {
        b"url": url.encode(),
        b"secret": secret.encode(),
    }
    client = Redis.from_url(redis_url)
    try:
        store = VirtualKeyStore(client)
        record = await store.get(key_id)
        assert record is not None and record.webhook_url == url
        assert secret not in record.model_dump_json()
        assert await store.webhook(key_id) == (url, secret)
        assert await store.webhook("vk_0000000000000000") is None
    finally:
        await client.aclose()
    with ThreadPoolExecutor(4) as pool:  # each is a Python start-up: at once
        runs = [
            pool.submit(l04, *args)
            for args in (
                ("list",),
                ("list", "--json"),
                ("create", "--agent", "did:key:a", "--webhook-url", url, "--json"),
                ("create", "--agent", "did:key:a", "--json"),
            )
        ]
        listed, as_json, made_json_run, plain_run = (run.result() for run in runs)
    assert url in listed.stdout and "WEBHOOK" in listed.stdout
    (shown,) = [k for k in json.loads(as_json.stdout) if k["id"] == key_id]  # others made at once
    assert shown["webhook_url"] == url and "webhook_secret" not in shown
    for output in (listed, as_json):
        assert secret not in output.stdout + output.stderr
        assert secret.removeprefix("whsec_") not in output.stdout + output.stderr
    made_json = json.loads(made_json_run.stdout)
    assert secret_problem(made_json["webhook_secret"]) is None
    assert made_json["webhook_secret"] != secret  # a secret of its own per key
    plain = json.loads(plain_run.stdout)
    assert plain["webhook_url"] is None and "webhook_secret" not in plain
    assert not redis_client.exists(keys.virtual_key_webhook(plain["id"]))


def test_a_bad_webhook_url_is_refused(l04: Runner) -> None:  # noqa: F811
    refused = l04("create", "--agent", "did:key:a", "--webhook-url", "file:///etc/passwd")
    assert refused.returncode == 2
    assert "the webhook URL must be an http:// or https:// URL" in refused.stderr
