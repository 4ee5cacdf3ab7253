"""Embeddings jobs before the fleet: the request's checks, the catalog's embedding models, the
router keeping chat and embeddings apart, the packed vectors, and the mock provider's vectors."""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import numpy as np
import pytest

from config.catalog import ModelKind, load_catalog, parse_catalog
from config.registry import ModelRegistry
from config.settings import load_settings
from gateway_client import (
    CapabilityNotSupported,
    ConfigurationError,
    ContextLengthExceeded,
    EmbeddingRequest,
    EmbeddingResponse,
    InvalidParameters,
    Message,
    MessageRole,
    ModelNotFound,
    ProviderFailed,
    ValidationError,
)
from gateway_client.router import LLMRouter, embedding_model
from gateway_core.embeddings import (
    MAX_INPUTS,
    WIRE,
    parse_embedding_request,
    vector_from_base64,
    vector_to_base64,
)
from gateway_core.request import InferenceRequest, RoutingStrategy
from workers.providers import CallContext
from workers.providers.mock import MockAdapter, mock_vector

CATALOG = load_catalog()


def embed_request(input: Any = "hello world", **fields: Any) -> EmbeddingRequest:
    fields.setdefault("model_id", "mock-embed")
    return EmbeddingRequest.create(agent_did="did:key:t", input=input, **fields)


# -- the request ---------------------------------------------------------------------------------


def test_one_string_is_a_list_of_one_and_defaults_are_sane() -> None:
    request = embed_request("hello")
    assert request.input == ["hello"]
    assert request.dimensions is None and request.priority.value == "normal"
    assert request.max_tokens == 0  # admission reserves the input's tokens only
    assert request.input_tokens() == 1
    assert embed_request(["a", "b c"]).input == ["a", "b c"]


@pytest.mark.parametrize(
    ("fields", "code", "named"),
    [
        ({"input": []}, "E4500", "input"),
        ({"input": ["x"] * (MAX_INPUTS + 1)}, "E4500", "input"),
        ({"input": ["ok", ""]}, "E4500", "input 1 is an empty string"),
        ({"input": ""}, "E4500", "input 0 is an empty string"),
        ({"input": [1, 2, 3]}, "E4500", "input.0"),  # token arrays are not taken
        ({"input": [["a"]]}, "E4500", "input.0"),
        ({"input": None}, "E4500", "input"),
        ({"model_id": ""}, "E4500", "model_id"),
        ({"agent_did": "not a did"}, "E4500", "agent_did"),
        ({"dimensions": 0}, "E4502", "dimensions"),
        ({"dimensions": 10**9}, "E4502", "dimensions"),
        ({"timeout": -1}, "E4502", "timeout"),
        ({"deadline": time.time() + 3 * 86400}, "E4502", "deadline"),
        ({"metadata": {"x": float("nan")}}, "E4500", "metadata"),
        ({"encoding_format": "base64"}, "E4500", "encoding_format"),  # the server's business
        ({"messages": []}, "E4500", "messages"),
    ],
)
def test_bad_requests_are_typed_errors(fields: dict[str, Any], code: str, named: str) -> None:
    data = {"agent_did": "did:key:t", "model_id": "mock-embed", "input": ["hi"], **fields}
    with pytest.raises(ValidationError) as caught:
        parse_embedding_request(data)
    assert caught.value.code == code
    assert named in caught.value.message


def test_a_stored_request_reads_back_without_the_clock_checks() -> None:
    request = embed_request(["a", "b"], dimensions=8, deadline=time.time() + 60)
    assert parse_embedding_request(request.model_dump_json(), stored=True) == request
    # A deadline long past is fine in a record (the claim ends such a job, not the parser).
    old = request.model_dump() | {"deadline": 1.0}
    assert parse_embedding_request(old, stored=True).deadline == 1.0


# -- packed vectors ------------------------------------------------------------------------------


def test_vectors_travel_as_openai_base64_float32() -> None:
    vector = [0.5, -0.25, 1.0e-3, 3.0]
    packed = vector_to_base64(vector)
    assert packed == base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    assert vector_from_base64(packed) == [float(np.float32(x)) for x in vector]
    with pytest.raises(ValueError):
        vector_from_base64("AAA")  # not base64 of whole float32s


def test_the_response_packs_on_the_wire_only() -> None:
    response = EmbeddingResponse(
        request_id="r", job_id="j", model_id="m", provider="mock", vectors=[[0.5, 0.25], [1, 0]]
    )
    assert response.model_dump(mode="json")["vectors"] == [[0.5, 0.25], [1.0, 0.0]]
    wire = response.model_dump(mode="json", context=WIRE)
    assert all(isinstance(v, str) for v in wire["vectors"])
    assert EmbeddingResponse.model_validate(wire) == response
    assert response.dimensions == 2


# -- the catalog and routing -------------------------------------------------------------------


def test_the_default_catalog_has_embedding_models() -> None:
    wanted = {
        "mock-embed": ("mock", 16),
        "text-embedding-3-small": ("openai", 1536),
        "text-embedding-3-large": ("openai", 3072),
        "nomic-embed-text": ("ollama", 768),
    }
    for model_id, (provider, dimensions) in wanted.items():
        spec = CATALOG.resolve(model_id)
        assert spec.kind is ModelKind.EMBEDDING
        assert (spec.provider, spec.embedding_dimensions) == (provider, dimensions)
        assert spec.max_output_tokens is None
    embedding = {m.model_id for m in ModelRegistry(CATALOG).list_models(kind=ModelKind.EMBEDDING)}
    assert embedding == set(wanted)
    chat = ModelRegistry(CATALOG).list_models(kind=ModelKind.CHAT)
    assert chat and not {m.model_id for m in chat} & embedding


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"kind": "embedding"}, "needs embedding_dimensions"),
        ({"kind": "embedding", "embedding_dimensions": 8, "max_output_tokens": 5}, "no max_output"),
        ({"embedding_dimensions": 8, "max_output_tokens": 5}, "for kind"),
        ({}, "a chat model needs max_output_tokens"),
        ({"kind": "vision", "max_output_tokens": 5}, "kind"),
    ],
)
def test_malformed_embedding_entries_are_E4003(entry: dict[str, Any], problem: str) -> None:
    base = {"model_id": "e", "provider": "openai", "context_window": 100}
    with pytest.raises(ConfigurationError) as caught:
        parse_catalog({"models": [base | entry]})
    assert caught.value.code == "E4003" and problem in caught.value.message


def test_the_default_model_must_chat() -> None:
    entry = {"model_id": "e", "provider": "mock", "context_window": 100}
    with pytest.raises(ConfigurationError, match="not a chat model"):
        parse_catalog(
            {
                "default_model": "e",
                "models": [entry | {"kind": "embedding", "embedding_dimensions": 4}],
            }
        )


def chat(**fields: Any) -> InferenceRequest:
    return InferenceRequest.create(
        agent_did="did:key:t", messages=[Message(role=MessageRole.USER, content="hi")], **fields
    )


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
def test_chat_routing_never_picks_an_embedding_model(strategy: RoutingStrategy) -> None:
    routing: dict[str, Any] = {"strategy": strategy}
    if strategy is RoutingStrategy.PROVIDER_PINNED:
        routing["provider"] = "mock"  # mock-embed is the mock provider's other model
    chain = LLMRouter(CATALOG).route(chat(routing=routing), 10)
    assert chain and all(m.kind is ModelKind.CHAT for m in chain)


@pytest.mark.parametrize(
    "fields",
    [
        {"model_id": "mock-embed"},
        {"model_id": "mock", "routing": {"fallback_models": ["text-embedding-3-small"]}},
    ],
)
def test_chat_naming_an_embedding_model_is_E4101(fields: dict[str, Any]) -> None:
    with pytest.raises(CapabilityNotSupported) as caught:
        LLMRouter(CATALOG).route(chat(**fields), 10)
    assert caught.value.code == "E4101" and "embedding model" in caught.value.message


def test_an_embeddings_job_takes_only_an_embedding_model() -> None:
    assert embedding_model(CATALOG, embed_request(model_id="text-embedding-3-small")).provider == (
        "openai"
    )
    with pytest.raises(CapabilityNotSupported) as caught:
        embedding_model(CATALOG, embed_request(model_id="gpt-4o-mini"))
    assert caught.value.code == "E4101" and "chat model" in caught.value.message
    with pytest.raises(ModelNotFound):
        embedding_model(CATALOG, embed_request(model_id="no-such-model"))
    with pytest.raises(InvalidParameters) as too_many:
        embedding_model(CATALOG, embed_request(model_id="mock-embed", dimensions=17))
    assert too_many.value.code == "E4502" and "16" in too_many.value.message
    assert embedding_model(CATALOG, embed_request(dimensions=16)).model_id == "mock-embed"


def test_an_input_longer_than_the_model_takes_is_E4103() -> None:
    long = "word " * 8200  # 8,200 tokens; mock-embed takes 8,192
    with pytest.raises(ContextLengthExceeded) as caught:
        embedding_model(CATALOG, embed_request(["short", long]))
    assert caught.value.code == "E4103" and caught.value.details["input"] == 1
    # Many bytes but few tokens passes: the bytes only decide whether to count.
    assert embedding_model(CATALOG, embed_request(["a" * 9000])).model_id == "mock-embed"


# -- the mock provider ---------------------------------------------------------------------------


async def test_the_mock_makes_deterministic_unit_vectors() -> None:
    adapter = MockAdapter(load_settings(L04_MOCK_LATENCY_MS=0))
    spec = CATALOG.resolve("mock-embed")
    texts = ["reset my password", "how do I reset my password", "bake a chocolate cake"]
    result = await adapter.create_embeddings(embed_request(texts), spec, CallContext("j"))
    assert [len(v) for v in result.vectors] == [16, 16, 16]
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in result.vectors)
    assert result.vectors[0] == mock_vector(texts[0], 16)
    a, b, c = (np.asarray(v) for v in result.vectors)
    assert float(a @ b) > float(a @ c)  # texts sharing words point the same way
    assert result.usage.prompt_tokens == sum(embed_request(t).input_tokens() for t in texts)
    shorter = await adapter.create_embeddings(
        embed_request(texts, dimensions=4), spec, CallContext("j")
    )
    assert [len(v) for v in shorter.vectors] == [4, 4, 4]
    assert mock_vector("   ", 8) == mock_vector("   ", 8) and len(mock_vector("   ", 8)) == 8


async def test_the_mock_fails_on_request() -> None:
    adapter = MockAdapter(load_settings(L04_MOCK_LATENCY_MS=0))
    request = embed_request(metadata={"mock": {"fail": "E4200", "fail_attempts": 1}})
    spec = CATALOG.resolve("mock-embed")
    with pytest.raises(ProviderFailed) as caught:
        await adapter.create_embeddings(request, spec, CallContext("j", attempt=1))
    assert caught.value.code == "E4200"
    result = await adapter.create_embeddings(request, spec, CallContext("j", attempt=2))
    assert len(result.vectors) == 1
