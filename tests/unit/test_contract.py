"""The public contract: names, the error taxonomy, settings and catalog validation."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import gateway_client
from config.catalog import load_catalog, parse_catalog
from config.settings import load_settings
from gateway_client import (
    ERROR_CODES,
    AllModelsUnavailable,
    CacheError,
    CacheUnavailable,
    CircuitBreakerError,
    CircuitOpen,
    ConfigurationError,
    EmbeddingFailed,
    GatewayError,
    InferenceResponse,
    InvalidMessages,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    NoSuitableModel,
    ProviderAuthFailed,
    ProviderError,
    ProviderFailed,
    ProviderNotConfigured,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    RateLimitError,
    RecoveryFailed,
    ResponseError,
    RoutingError,
    StreamChunk,
    StreamInterrupted,
    TokenUsage,
    ValidationError,
    error_from_payload,
)
from gateway_core.wire import UnreadableEnvelope, make_envelope, read_envelope

# The seed's codes: each in the category the seed gave it, as the class of its condition.
SEED_CODES = {
    "E4001": (ConfigurationError, ModelNotFound),
    "E4002": (ConfigurationError, ProviderNotConfigured),
    "E4100": (RoutingError, NoSuitableModel),
    "E4102": (RoutingError, AllModelsUnavailable),
    "E4200": (ProviderError, ProviderFailed),
    "E4202": (ProviderError, ProviderTimeout),
    "E4203": (ProviderError, ProviderAuthFailed),
    "E4300": (CacheError, CacheUnavailable),
    "E4301": (CacheError, EmbeddingFailed),
    "E4401": (RateLimitError, RateLimited),
    "E4402": (RateLimitError, QuotaExhausted),
    "E4500": (ValidationError, InvalidRequest),
    "E4501": (ValidationError, InvalidMessages),
    "E4600": (ResponseError, MalformedResponse),
    "E4604": (ResponseError, StreamInterrupted),
    "E4701": (CircuitBreakerError, CircuitOpen),
    "E4702": (CircuitBreakerError, RecoveryFailed),
}


def test_public_names() -> None:
    for name in gateway_client.__all__:
        assert getattr(gateway_client, name) is not None
    assert {
        "ModelGateway",
        "SyncModelGateway",
        "InferenceRequest",
        "Message",
        "MessageRole",
        "InferenceResponse",
        "StreamChunk",
        "TokenUsage",
        "GatewayError",
    } <= set(gateway_client.__all__)


@pytest.mark.parametrize(("code", "classes"), sorted(SEED_CODES.items()))
def test_every_seed_code_exists_in_its_category(code: str, classes: tuple[type, type]) -> None:
    category, condition = classes
    assert code in ERROR_CODES
    error = error_from_payload({"code": code, "message": "m"})
    assert type(error) is condition and isinstance(error, category)
    assert isinstance(error, GatewayError)
    assert error.code == code and str(error) == f"[{code}] m"


def test_added_codes_lie_inside_the_seed_ranges() -> None:
    for code in ("E4403", "E4404", "E4405", "E4205", "E4503"):
        assert code in ERROR_CODES
    for code in ERROR_CODES:
        assert 4000 <= int(code[1:]) <= 4799


def test_errors_round_trip_as_payload_and_pickle() -> None:
    error = RateLimitError("slow down", code="E4401", details={"retry_after": 2.5})
    again = error_from_payload(error.to_payload())
    assert (type(again), again.code, again.message, again.retry_after) == (
        RateLimited,
        "E4401",
        "slow down",
        2.5,
    )
    unpickled = pickle.loads(pickle.dumps(error))
    assert type(unpickled) is RateLimited
    assert unpickled.code == "E4401" and unpickled.details == {"retry_after": 2.5}
    with pytest.raises(ValueError):
        ProviderError("wrong range", code="E4401")


def test_response_models_round_trip_through_json() -> None:
    usage = TokenUsage(prompt_tokens=3, completion_tokens=4)
    assert usage.total_tokens == 7
    response = InferenceResponse(
        request_id="r",
        job_id="j",
        model_id="mock",
        provider="mock",
        content="hi",
        token_usage=usage,
    )
    assert InferenceResponse.model_validate_json(response.model_dump_json()) == response
    chunk = StreamChunk(job_id="j", sequence=0, content_delta="h")
    assert not chunk.is_final and chunk.token_usage is None


def test_envelope_versions() -> None:
    assert read_envelope(make_envelope("abc")) == "abc"
    for bad in ({"v": 2, "job_id": "abc"}, {"v": 1}, ["v", 1], {"v": 1, "job_id": "a{b}"}):
        with pytest.raises(UnreadableEnvelope):
            read_envelope(bad)


def test_malformed_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_TTL", "soon")
    monkeypatch.setenv("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "-1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.code == "E4004"
    assert "CACHE_TTL" in caught.value.message
    assert "CIRCUIT_BREAKER_FAILURE_THRESHOLD" in caught.value.message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("L04_FILES_TTL", "inf"),  # every upload: OverflowError, a 5xx
        ("L04_FILES_TTL", "1e300"),  # every upload: Redis refuses the EXPIREAT, a 5xx
        ("L04_BATCH_LEASE_S", "inf"),  # every sweep failed: no HTTP batch was ever driven
        ("L04_BATCH_LEASE_S", "1e-9"),  # a 1 ms lease, a sweep loop that spun: two drivers
    ],
)
def test_batch_settings_that_cannot_work_are_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**{variable: value})
    assert caught.value.code == "E4004" and variable in caught.value.message


def test_worker_providers_and_max_deliveries_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L04_WORKER_PROVIDERS", " mock, openai ,")
    monkeypatch.setenv("L04_MAX_DELIVERIES", "3")
    settings = load_settings()
    assert (settings.worker_providers, settings.max_deliveries) == (["mock", "openai"], 3)
    assert load_settings(L04_WORKER_PROVIDERS="").worker_providers == []
    for variable, value in (("L04_WORKER_PROVIDERS", "mock,nosuch"), ("L04_MAX_DELIVERIES", "0")):
        with pytest.raises(ConfigurationError) as caught:
            load_settings(**{variable: value})
        assert caught.value.code == "E4004" and variable in caught.value.message


def test_orphan_after_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().orphan_after == 60.0  # half the default job timeout
    monkeypatch.setenv("L04_ORPHAN_AFTER", "8.5")
    assert load_settings().orphan_after == 8.5
    for value in ("0.5", "-1", "soon"):
        with pytest.raises(ConfigurationError) as caught:
            load_settings(L04_ORPHAN_AFTER=value)
        assert caught.value.code == "E4004" and "L04_ORPHAN_AFTER" in caught.value.message


def test_seed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "REDIS_URL": "redis://example:6380/2",
        "CACHE_ENABLED": "false",
        "CACHE_TTL": "60",
        "CACHE_SIMILARITY_THRESHOLD": "0.9",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "7",
        "RATE_LIMIT_TOKENS_PER_MINUTE": "700",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3",
        "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "9",
        "OLLAMA_URL": "http://o:1",
        "OLLAMA_EMBEDDING_MODEL": "e",
        "OLLAMA_EMBEDDING_DIMENSIONS": "384",
        "OPENAI_API_KEY": "sk-secret-value",
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "L01_BASE_URL": "http://l01:8001",
        "L01_API_KEY": "k",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.redis_url, s.cache_enabled, s.cache_ttl, s.cache_similarity_threshold) == (
        "redis://example:6380/2",
        False,
        60,
        0.9,
    )
    assert (s.rate_limit_requests_per_minute, s.rate_limit_tokens_per_minute) == (7, 700)
    assert (s.circuit_breaker_failure_threshold, s.circuit_breaker_recovery_timeout) == (3, 9)
    assert (s.ollama_url, s.ollama_embedding_model, s.ollama_embedding_dimensions) == (
        "http://o:1",
        "e",
        384,
    )
    assert s.l01_base_url == "http://l01:8001"
    assert "sk-secret-value" not in repr(s) and "sk-ant-secret" not in str(s)


def test_malformed_catalog_names_the_model_and_field(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[[models]]\nmodel_id = "m1"\nprovider = "openai"\n'
        'context_window = "big"\nmax_output_tokens = 10\n'
    )
    with pytest.raises(ConfigurationError) as caught:
        load_catalog(path)
    assert caught.value.code == "E4003"
    assert "m1" in caught.value.message and "context_window" in caught.value.message
    with pytest.raises(ConfigurationError, match="provider"):
        parse_catalog(
            {
                "models": [
                    {
                        "model_id": "x",
                        "provider": "nope",
                        "context_window": 10,
                        "max_output_tokens": 5,
                    }
                ]
            }
        )


def test_default_catalog_has_the_seed_models() -> None:
    catalog = load_catalog()
    for model in (
        "mock",
        "claude-opus-4-5",
        "claude-3-5-sonnet-20241022",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "llama3.1:8b",
        "claude-code",
    ):
        assert catalog.get(model) is not None, model
    assert catalog.resolve(None).model_id == "mock"
    assert catalog.resolve("claude-3-5-sonnet").provider == "anthropic"


@pytest.mark.parametrize(
    "first", ["tasks", "config.settings", "gateway_client", "workers.asyncio_pool"]
)
def test_any_package_imports_first(first: str) -> None:
    # `celery -A tasks worker` imports tasks before anything else.
    subprocess.run([sys.executable, "-c", f"import {first}"], check=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "http://localhost:6379/0"),
        ("L04_BROKER_URL", "foo://localhost"),
        ("L04_CACHE_REDIS_URL", "nonsense"),
        ("REDIS_URL", "sentinel://localhost:26379"),  # no L04_REDIS_SENTINEL_MASTER
        ("L04_BROKER_URL", "unix:///tmp/redis.sock"),  # kombu's form is redis+socket://
        ("L04_BROKER_URL", "amqp://user:secretpw@rabbit:notaport//"),
    ],
)
def test_a_bad_url_is_E4004_naming_it_in_every_entry_point(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    env.pop("L04_REDIS_SENTINEL_MASTER", None)
    commands = (["health"], ["dlq", "list"], ["batch", "list"], ["worker"])
    started = [  # at once: each is a Python start-up, the most of this test's time
        subprocess.Popen(
            [sys.executable, "-m", "l04", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    for command, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("l04: [E4004] invalid setting:"), (command, last)
        named = "L04_REDIS_SENTINEL_MASTER" if value.startswith("sentinel") else variable
        assert named in last, (command, last)
        assert "Traceback" not in result.stderr
        assert "secretpw" not in result.stdout + result.stderr
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**{variable: value})
    assert caught.value.code == "E4004"
    assert caught.value.__context__ is None  # pydantic's error, with the input, is not attached


def test_settings_never_print_a_url_password() -> None:
    settings = load_settings(
        REDIS_URL="redis://:secretpw@localhost:6379/0",
        L04_BROKER_URL="amqp://user:secretpw@localhost:5672//",
        L04_CACHE_REDIS_URL="redis://:secretpw@localhost:6379/1",
    )
    assert "secretpw" not in repr(settings) and "secretpw" not in str(settings)


@pytest.mark.parametrize("visibility", ["5", "30", "3600"])
def test_a_dead_worker_holds_kombus_restore_lock_for_two_sweeps_at_most(visibility: str) -> None:
    """kombu's default (300 s) let a worker killed mid-restore block every restore for five
    minutes: its jobs waited in `unacked` past the kill loop's 150 s (BENCHMARKS.md)."""
    from tasks.app_config import celery_config

    options = celery_config(load_settings(L04_VISIBILITY_TIMEOUT=visibility))[
        "broker_transport_options"
    ]
    assert options["unacked_mutex_expire"] == 2 * options["unacked_restore_interval"]
    assert options["unacked_mutex_expire"] <= max(2, float(visibility) / 2)
