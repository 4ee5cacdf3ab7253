"""Webhook signatures as the official openai SDK verifies them, secrets, settings, backoff."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import openai
import pytest
from openai.types.webhooks import BatchCompletedWebhookEvent, ResponseCompletedWebhookEvent

from config.settings import load_settings
from gateway_core.errors import ConfigurationError
from gateway_core.webhooks import (
    new_secret,
    notify_field,
    secret_problem,
    signed_headers,
    webhook_url_problem,
)
from l04.keys_cmd import add_keys_commands
from workers.webhook_delivery import BACKOFF_MAX_S, backoff_s

BODY = json.dumps(
    {
        "id": "evt_0123456789abcdef0123456789abcdef",
        "object": "event",
        "created_at": 1_764_474_641,
        "type": "response.completed",
        "data": {"id": "resp_abc"},
    },
    separators=(",", ":"),
)


def client(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", webhook_secret=secret)


def test_the_sdk_unwraps_what_we_sign() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "evt_0123456789abcdef0123456789abcdef", int(time.time()), BODY)
    event = client(secret).webhooks.unwrap(BODY, headers)
    assert isinstance(event, ResponseCompletedWebhookEvent)
    assert event.data.id == "resp_abc" and event.id.startswith("evt_")
    assert headers["webhook-signature"].startswith("v1,")
    batch = BODY.replace("response.completed", "batch.completed").replace("resp_abc", "batch_1")
    unwrapped = client(secret).webhooks.unwrap(
        batch, signed_headers(secret, "x", int(time.time()), batch)
    )
    assert isinstance(unwrapped, BatchCompletedWebhookEvent)


def test_the_sdk_refuses_a_wrong_secret_an_old_timestamp_or_another_body() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret, "evt_1", now, BODY)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(new_secret()).webhooks.unwrap(BODY, headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(secret).webhooks.unwrap(BODY, signed_headers(secret, "evt_1", now - 301, BODY))
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(secret).webhooks.unwrap(BODY.replace("resp_abc", "resp_abd"), headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):  # the id is signed too
        client(secret).webhooks.unwrap(BODY, {**headers, "webhook-id": "evt_2"})
    # Signed afresh with its own timestamp, an attempt 4 minutes later is good.
    client(secret).webhooks.unwrap(BODY, signed_headers(secret, "evt_1", now - 240, BODY))


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    one, two = new_secret(), new_secret()
    assert one != two and one.startswith("whsec_")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32
    assert secret_problem(one) is None


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("abc", "must start with whsec_"),
        ("whsec_not base64!!", "must be base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, not 5"),
        ("whsec_", "24 to 64 bytes, not 0"),
    ],
)
def test_a_bad_secret_is_a_clear_setting_error_that_never_quotes_it(secret: str, why: str) -> None:
    assert why in (secret_problem(secret) or "")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(L04_WEBHOOK_URL="http://127.0.0.1:9/hook", L04_WEBHOOK_SECRET=secret)
    assert caught.value.code == "E4004"
    assert "L04_WEBHOOK_SECRET" in str(caught.value) and why in str(caught.value)
    if secret != "whsec_":
        assert secret not in str(caught.value)


def test_url_and_secret_come_together_and_the_url_must_be_http() -> None:
    with pytest.raises(ConfigurationError, match="set both"):
        load_settings(L04_WEBHOOK_URL="http://127.0.0.1:9/hook")
    with pytest.raises(ConfigurationError, match="set both"):
        load_settings(L04_WEBHOOK_SECRET=new_secret())
    with pytest.raises(ConfigurationError, match="L04_WEBHOOK_URL: must be an http"):
        load_settings(L04_WEBHOOK_URL="ftp://host/x", L04_WEBHOOK_SECRET=new_secret())
    secret = new_secret()
    settings = load_settings(L04_WEBHOOK_URL="http://10.0.0.7:8080/h", L04_WEBHOOK_SECRET=secret)
    assert settings.webhook_url == "http://10.0.0.7:8080/h"  # private hosts are allowed
    assert settings.webhook_retry_hours == 72.0
    assert secret not in repr(settings) and secret not in str(settings)


def test_a_worker_with_a_bad_secret_exits_at_once_with_a_clear_message() -> None:
    env = {
        **os.environ,
        "L04_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "L04_WEBHOOK_SECRET": "whsec_tooshortbutsecretish",
    }
    result = subprocess.run(
        [sys.executable, "-m", "l04", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("l04: [E4004] invalid setting: L04_WEBHOOK_SECRET:"), last
    assert "Traceback" not in result.stderr
    assert "tooshortbutsecretish" not in result.stdout + result.stderr


def test_notify_names_a_response_and_its_id() -> None:
    assert notify_field("response", "job1") == "response:resp_job1"
    assert notify_field("response:resp_x", "job1") == "response:resp_x"
    for bad in ("batch", "", "response:" + "x" * 201, "response:a\nb"):
        with pytest.raises(ValueError, match="notify"):
            notify_field(bad, "job1")


def test_backoff_doubles_is_capped_and_jittered() -> None:
    waits = [backoff_s(n, 5.0) for n in range(1, 6)]
    for n, wait in enumerate(waits, start=1):
        assert 5.0 * 2 ** (n - 1) * 0.5 <= wait < 5.0 * 2 ** (n - 1)
    assert BACKOFF_MAX_S / 2 <= backoff_s(500, 5.0) < BACKOFF_MAX_S
    assert len({backoff_s(3, 5.0) for _ in range(20)}) > 1


def test_keys_create_takes_a_webhook_url_and_refuses_a_bad_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_keys_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["keys", "create", "--agent", "did:key:a", "--webhook-url", "http://127.0.0.1:8/h"]
    )
    assert args.webhook_url == "http://127.0.0.1:8/h"
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "create", "--agent", "did:key:a", "--webhook-url", "nope"])
    assert "the webhook URL must be an http" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8/hook\n", "http://a\x01b.example/", "http://h/\x7f", "http://[::1/"]
)
def test_a_url_that_no_http_client_can_send_to_is_refused_not_raised(url: str) -> None:
    # A trailing newline (an env file, a mounted secret) or a control character passed the
    # check, then every delivery raised httpx.InvalidURL; an unclosed IPv6 bracket raised here.
    assert webhook_url_problem(url) is not None
    with pytest.raises(ConfigurationError, match="L04_WEBHOOK_URL"):
        load_settings(L04_WEBHOOK_URL=url, L04_WEBHOOK_SECRET=new_secret())
