"""Virtual keys without Redis: the key's format and hash, the record's rules, ``--expires-in``."""

from __future__ import annotations

import hashlib
import time

import pydantic
import pytest

from config.catalog import load_catalog
from gateway_core.errors import KeyRefused, ModelNotAllowed
from gateway_core.virtual_keys import (
    KEY_ID_PATTERN,
    KEY_PATTERN,
    VirtualKey,
    hash_key,
    new_key,
    new_key_id,
)
from l04.keys_cmd import parse_duration, resolve_models


def a_key(**fields: object) -> VirtualKey:
    data: dict[str, object] = {
        "id": "vk_0123456789abcdef",
        "agent_did": "did:key:agent1",
        "created_at": time.time(),
        **fields,
    }
    return VirtualKey.model_validate(data)


def test_a_key_is_sk_l04_and_256_random_bits() -> None:
    made = {new_key() for _ in range(1000)}
    assert len(made) == 1000
    for key in made:
        assert key.startswith("sk-l04-") and len(key) == len("sk-l04-") + 43
        assert KEY_PATTERN.fullmatch(key)
    # A key id is public and says nothing of the key.
    ids = {new_key_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(KEY_ID_PATTERN.fullmatch(i) for i in ids)


def test_only_a_sha256_of_the_whole_key_is_kept() -> None:
    key = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_key(key)) == 64 and key not in hash_key(key)
    assert hash_key(key) != hash_key(key[:-1]) and hash_key(key) == hash_key(str(key))


@pytest.mark.parametrize(
    "text",
    ["sk-l04-short", "sk-l04-" + "a" * 42, "sk-l04-" + "a" * 129, "sk-" + "a" * 43,
     "sk-l04-" + "a" * 42 + "!", "Bearer sk-l04-" + "a" * 43, ""],
)  # fmt: skip
def test_what_is_no_key(text: str) -> None:
    assert not KEY_PATTERN.fullmatch(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600), ("2w", 14 * 86400),
     ("1.5h", 5400), (" 7d ", 7 * 86400)],
)  # fmt: skip
def test_expires_in_takes_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3x", "30", "", "d", "-1d", "0d", "0s", "1e3d", "30 d", "inf"])
def test_expires_in_refuses_what_is_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is no duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "fields",
    [
        {"agent_did": "agent-7"},
        {"agent_did": "did:key:{x}"},
        {"agent_did": "did:key:" + "a" * 250},
        {"id": "vk_XYZ"},
        {"rpm": 0},
        {"tpm": -5},
        {"token_quota": 0},
        {"cost_quota": float("nan")},
        {"cost_quota": -1.0},
        {"quota_period_s": 0},
        {"name": "a\nb"},
        {"name": "x" * 201},
        {"models": [""]},
        {"surprise": 1},
    ],
)
def test_a_record_refuses_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        a_key(**fields)


def test_a_key_without_models_may_use_any_and_one_with_models_only_those() -> None:
    anything = a_key()
    anything.check_model("gpt-4o")
    some = a_key(models=["mock", "gpt-4o-mini"])
    some.check_model("mock")
    assert some.allows("gpt-4o-mini") and not some.allows("gpt-4o")
    # An alias stored by someone who did not resolve it still matches the model's aliases.
    assert a_key(models=["claude-3-haiku"]).allows("claude-3-haiku-20240307", "claude-3-haiku")
    with pytest.raises(ModelNotAllowed) as refused:
        some.check_model("gpt-4o", "4o")
    assert refused.value.code == "E4409" and not refused.value.retryable
    assert refused.value.details == {
        "key_id": "vk_0123456789abcdef",
        "model_id": "gpt-4o",
        "allowed": ["mock", "gpt-4o-mini"],
    }


def test_a_revoked_or_expired_key_is_refused_by_id() -> None:
    now = time.time()
    a_key(expires_at=now + 60).check_usable(now)
    for record, reason in [
        (a_key(revoked_at=now - 1), "revoked"),
        (a_key(expires_at=now - 1), "expired"),
        (a_key(expires_at=now), "expired"),
    ]:
        assert record.refusal(now) == reason
        with pytest.raises(KeyRefused) as refused:
            record.check_usable(now)
        assert refused.value.code == "E4408"
        assert refused.value.details == {"key_id": record.id, "reason": reason}


def test_the_record_round_trips_through_redis_fields_without_none() -> None:
    record = a_key(name="ci", models=["mock"], rpm=2, cost_quota=1.25, expires_at=time.time())
    fields = record.to_fields()
    assert "tpm" not in fields and "revoked_at" not in fields and "last_used_at" not in fields
    assert all(isinstance(v, str) for v in fields.values())
    assert VirtualKey.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == record


def test_models_given_by_alias_are_stored_as_catalog_ids() -> None:
    catalog = load_catalog()  # the packaged catalog: claude-3-haiku is an alias
    haiku = catalog.get("claude-3-haiku")
    assert haiku is not None and haiku.model_id != "claude-3-haiku"
    assert resolve_models("claude-3-haiku, mock,mock", None) == [haiku.model_id, "mock"]
    assert resolve_models("", None) == [] and resolve_models(None, None) == []
    with pytest.raises(ValueError, match="not in the model catalog: nope"):
        resolve_models("mock,nope", None)
