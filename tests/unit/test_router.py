"""Each routing strategy on a catalog built for the test, and the router's refusals."""

from __future__ import annotations

import pytest

from config.catalog import parse_catalog
from gateway_client import InferenceRequest, Message, MessageRole, RoutingError
from gateway_client.router import LLMRouter


def model(model_id: str, provider: str, **fields: object) -> dict[str, object]:
    return {
        "model_id": model_id,
        "provider": provider,
        "context_window": 8000,
        "max_output_tokens": 4000,
        "capabilities": ["text", "streaming"],
        **fields,
    }


CATALOG = parse_catalog(
    {
        "models": [
            model(
                "cheap",
                "ollama",
                region="local",
                quality_scores={"general": 0.4, "code": 0.7},
                cost_per_1k_input=0.0,
                cost_per_1k_output=0.0,
            ),
            model(
                "smart",
                "anthropic",
                quality_scores={"general": 0.95, "code": 0.8},
                cost_per_1k_input=0.01,
                cost_per_1k_output=0.05,
                context_window=200000,
                capabilities=["text", "vision", "tool_use"],
            ),
            model(
                "fast",
                "openai",
                quality_scores={"general": 0.7},
                cost_per_1k_input=0.001,
                cost_per_1k_output=0.002,
                region="eu",
                capabilities=["text", "function_calling"],
            ),
            model(
                "old",
                "openai",
                status="deprecated",
                quality_scores={"general": 0.99},
                cost_per_1k_input=0.0001,
                cost_per_1k_output=0.0001,
            ),
            model("off", "openai", status="disabled", quality_scores={"general": 1.0}),
        ]
    }
)


def ask(text: str = "hi", **fields: object) -> InferenceRequest:
    return InferenceRequest.create(
        agent_did="did:key:t",
        messages=[Message(role=MessageRole.USER, content=text)],
        max_tokens=100,
        **fields,
    )  # type: ignore[arg-type]


def chain(request: InferenceRequest, prompt_tokens: int = 10, **router: object) -> list[str]:
    return [m.model_id for m in LLMRouter(CATALOG, **router).route(request, prompt_tokens)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("strategy", "first"),
    [
        ("capability_first", "smart"),  # active before deprecated, then quality
        ("cost_optimized", "cheap"),
        ("quality_optimized", "smart"),
    ],
)
def test_strategies_pick_what_they_should(strategy: str, first: str) -> None:
    picked = chain(ask(routing={"strategy": strategy}))
    assert picked[0] == first
    assert "off" not in picked and len(picked) > 1


def test_quality_uses_the_task_type() -> None:
    assert chain(ask(routing={"strategy": "quality_optimized", "task_type": "code"}))[0] == "smart"
    ranked = chain(ask(routing={"strategy": "quality_optimized", "task_type": "code"}))
    assert ranked.index("cheap") < ranked.index("fast")  # 0.7 for code beats 0.7 general


def test_latency_uses_measured_latencies() -> None:
    latencies = {"fast": 120.0, "cheap": 900.0, "smart": 450.0}
    assert chain(ask(routing={"strategy": "latency_optimized"}), latencies_ms=latencies)[:3] == [
        "fast",
        "smart",
        "cheap",
    ]


def test_provider_pinned() -> None:
    picked = chain(ask(routing={"strategy": "provider_pinned", "provider": "openai"}))
    assert picked == ["fast", "old"]


def test_residency_and_capabilities_filter() -> None:
    assert chain(ask(routing={"strategy": "cost_optimized", "region": "eu"})) == ["fast"]
    assert chain(ask(routing={"strategy": "cost_optimized"}, required_capabilities=["vision"])) == [
        "smart"
    ]
    with pytest.raises(RoutingError) as caught:
        chain(ask(routing={"strategy": "cost_optimized", "region": "mars"}))
    assert caught.value.code == "E4104"


def test_context_length_is_validated() -> None:
    # 7,950 prompt tokens + 100 max_tokens fit only the 200k-window model.
    assert chain(ask(routing={"strategy": "cost_optimized"}), prompt_tokens=7950) == ["smart"]
    with pytest.raises(RoutingError) as caught:
        chain(ask(model_id="cheap"), prompt_tokens=7950)
    assert caught.value.code == "E4103" and "cheap" in caught.value.message


def test_open_breakers_are_skipped_and_all_down_is_E4102() -> None:
    assert (
        chain(ask(routing={"strategy": "quality_optimized"}), unavailable={"anthropic"})[0]
        != "smart"
    )
    with pytest.raises(RoutingError) as caught:
        chain(ask(model_id="smart"), unavailable={"anthropic"})
    assert caught.value.code == "E4102"


def test_named_model_keeps_its_fallbacks_in_order() -> None:
    request = ask(model_id="smart", routing={"fallback_models": ["fast", "cheap"]})
    assert chain(request) == ["smart", "fast", "cheap"]
    assert chain(request, unavailable={"anthropic"}) == ["fast", "cheap"]
    with pytest.raises(RoutingError) as caught:
        chain(ask(model_id="cheap", tools=[{"name": "get_weather"}]))
    assert caught.value.code == "E4101"


def test_registry_indexes_capabilities_and_filters() -> None:
    from gateway_client import ModelRegistry

    registry = ModelRegistry(CATALOG)
    assert registry.get_model("smart") is CATALOG.get("smart")
    assert {m.model_id for m in registry.models_with("text", "streaming")} == {
        m.model_id
        for m in CATALOG
        if m.status.value != "disabled" and {"text", "streaming"} <= set(m.capabilities)
    }
    assert [m.model_id for m in registry.list_models(provider="ollama")] == [
        m.model_id for m in CATALOG if m.provider == "ollama" and m.status.value != "disabled"
    ]
    assert all(m.region == "local" for m in registry.list_models(region="local"))
    assert registry.models_with("no-such-capability") == []
    assert registry.quality("cheap", "code") == 0.7
    assert registry.quality("cheap", "poetry") == 0.4  # falls back to general
    default = ModelRegistry.load()
    assert default.get_model("claude-3-5-sonnet").model_id == "claude-3-5-sonnet-20241022"  # type: ignore[union-attr]
    assert "vision" in default.capabilities


def test_an_open_deployment_breaker_skips_only_that_model() -> None:
    request = InferenceRequest.create(
        agent_did="did:key:test",
        messages=[Message(role=MessageRole.USER, content="hi")],
        routing={"strategy": "quality_optimized"},
    )
    best = LLMRouter(CATALOG).route(request, 10)[0]
    down = LLMRouter(CATALOG, unavailable={f"{best.provider}:{best.model_id}"}).route(request, 10)
    assert best.model_id not in [m.model_id for m in down]
    assert down  # the provider's other models and the rest still serve
