"""``LLMRouter``: which model answers a request, and which ones take over if it cannot.

Every candidate must have the request's capabilities, fit prompt + max_tokens in its context
window (else E4103), sit in the required region (else E4104) and not be disabled. Candidates
whose circuit breaker is open are skipped (E4102 when that leaves none). The survivors are ranked
by the request's strategy; the first answers, the rest are its fallback chain.

Strategies (the seed's): ``capability_first`` (default: active before deprecated, then general
quality, then cost), ``cost_optimized`` (expected cost of this request), ``latency_optimized``
(latencies the fleet measured; unmeasured models last), ``quality_optimized`` (the quality score
for the request's task type), ``provider_pinned`` (only the pinned provider's models).
A request naming a model gets that model first and its own ``fallback_models`` after it; a
request naming neither a model nor a strategy gets the catalog's ``default_model``.

Only chat models answer chat requests: an embedding model (``kind = "embedding"``) is never a
candidate, and naming one is E4101. An embeddings job is not routed: it names its model, which
must be an embedding model (:func:`embedding_model`), and has no fallbacks (vectors of two
models are not comparable, so another model's answer would be a wrong one).

A request made with a virtual key whose ``models`` are limited is routed among those only: a
model it names (or the default) outside them is E4409, its fallbacks outside them are left out
of the chain, and a strategy ranks only them. So no model the key may not use is ever called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from redis.asyncio import Redis

from config.catalog import Catalog, ModelKind, ModelSpec, ModelStatus
from gateway_core import keys, tokens
from gateway_core.breakers import deployment
from gateway_core.embeddings import EmbeddingRequest
from gateway_core.errors import (
    AllModelsUnavailable,
    CapabilityNotSupported,
    ContextLengthExceeded,
    InvalidParameters,
    ModelNotAllowed,
    NoSuitableModel,
    ResidencyNotSatisfiable,
    RoutingError,
)
from gateway_core.request import InferenceRequest, RoutingStrategy
from gateway_core.virtual_keys import VirtualKey

MAX_CHAIN = 4


class LLMRouter:
    def __init__(
        self,
        catalog: Catalog,
        latencies_ms: Mapping[str, float] | None = None,
        unavailable: set[str] | None = None,
        key: VirtualKey | None = None,
    ) -> None:
        self.catalog = catalog
        self.latencies_ms = dict(latencies_ms or {})
        # Models (or whole providers) whose circuit breaker is open.
        self.unavailable = set(unavailable or ())
        # The virtual key the request came with: only its models may answer.
        self.key = key

    def route(self, request: InferenceRequest, prompt_tokens: int) -> list[ModelSpec]:
        """The chain: the model that answers first, then its fallbacks, never empty."""
        options = request.routing
        named_model = request.model_id
        if named_model is None and "strategy" not in options.model_fields_set:
            # No model and no strategy asked for: the operator's default model answers.
            named_model = self.catalog.default_model
        if named_model is not None:
            named = [self.catalog.resolve(named_model)]
            fallbacks = [self.catalog.resolve(m) for m in options.fallback_models]
            for model in named + fallbacks:
                if model.kind is not ModelKind.CHAT:
                    raise CapabilityNotSupported(
                        f"model {model.model_id} is an embedding model: it does not chat",
                        details={"model_id": model.model_id, "kind": model.kind.value},
                    )
            if self.key is not None:
                self.key.check_model(named[0].model_id, *named[0].aliases)
            candidates = named + [m for m in fallbacks if self._allowed(m)]
        else:
            candidates = [
                m
                for m in self.catalog
                if m.status is not ModelStatus.DISABLED and m.kind is ModelKind.CHAT
            ]
            if options.strategy is RoutingStrategy.PROVIDER_PINNED:
                if not options.provider:
                    raise NoSuitableModel("provider_pinned routing needs routing.provider")
                candidates = [m for m in candidates if m.provider == options.provider]
            if self.key is not None and candidates:
                allowed = [m for m in candidates if self._allowed(m)]
                if not allowed:
                    raise ModelNotAllowed(
                        f"no candidate model is one key {self.key.id} may use; it may use "
                        + ", ".join(self.key.models),
                        details={"key_id": self.key.id, "allowed": list(self.key.models)},
                    )
                candidates = allowed
        fitting = self._fitting(candidates, request, prompt_tokens, explicit=bool(request.model_id))
        healthy = [m for m in fitting if not self._down(m)]
        if not healthy:
            raise AllModelsUnavailable(
                "every model that fits the request is unavailable (circuit open)",
                details={"models": [m.model_id for m in fitting]},
            )
        if named_model is None:
            healthy.sort(key=self._rank_key(request, prompt_tokens))
        return healthy[:MAX_CHAIN]

    def _allowed(self, model: ModelSpec) -> bool:
        return self.key is None or self.key.allows(model.model_id, *model.aliases)

    def _down(self, model: ModelSpec) -> bool:
        return model.provider in self.unavailable or (
            deployment(model.provider, model.model_id) in self.unavailable
        )

    def _fitting(
        self,
        candidates: list[ModelSpec],
        request: InferenceRequest,
        prompt_tokens: int,
        explicit: bool,
    ) -> list[ModelSpec]:
        """Candidates meeting every hard requirement; the most telling refusal if none do."""
        needed = set(request.required_capabilities)
        if request.tools:
            needed.add("tool_use")
        if any(m.has_images for m in request.messages):
            needed.add("vision")
        checks: list[tuple[type[RoutingError], str, Callable[[ModelSpec], bool]]] = [
            (
                CapabilityNotSupported,
                f"no model offers {', '.join(sorted(needed))}",
                lambda m: needed <= _capabilities(m),
            ),
            (
                ContextLengthExceeded,
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) "
                "exceed every candidate's context window",
                lambda m: prompt_tokens + request.max_tokens <= m.context_window,
            ),
            (
                ResidencyNotSatisfiable,
                f"no candidate in region {request.routing.region!r}",
                lambda m: request.routing.region in (None, m.region),
            ),
        ]
        remaining = candidates
        for refusal, message, check in checks:
            passing = [m for m in remaining if check(m)]
            if not passing:
                if explicit and len(candidates) == 1:
                    message = f"model {candidates[0].model_id}: " + message
                raise refusal(message, details={"models": [m.model_id for m in remaining]})
            remaining = passing
        return remaining

    def _rank_key(
        self, request: InferenceRequest, prompt_tokens: int
    ) -> Callable[[ModelSpec], tuple[float, ...]]:
        strategy = request.routing.strategy
        task = request.routing.task_type or "general"

        def quality(m: ModelSpec) -> float:
            return m.quality_scores.get(task, m.quality_scores.get("general", 0.0))

        def cost(m: ModelSpec) -> float:
            return m.cost(prompt_tokens, request.max_tokens)

        def deprecated(m: ModelSpec) -> float:
            return 1.0 if m.status is ModelStatus.DEPRECATED else 0.0

        # Deprecated models come last under every strategy: they are the last resort.
        if strategy is RoutingStrategy.COST_OPTIMIZED:
            return lambda m: (deprecated(m), cost(m), -quality(m))
        if strategy is RoutingStrategy.LATENCY_OPTIMIZED:
            return lambda m: (
                deprecated(m),
                self.latencies_ms.get(m.model_id, math.inf),
                -quality(m),
            )
        if strategy is RoutingStrategy.QUALITY_OPTIMIZED:
            return lambda m: (deprecated(m), -quality(m), cost(m))
        return lambda m: (deprecated(m), -quality(m), cost(m))


def embedding_model(catalog: Catalog, request: EmbeddingRequest) -> ModelSpec:
    """The embedding model that answers ``request``: E4001 / E4005 as for chat, E4101 for a chat
    model, E4502 for more dimensions than the model's vectors have, E4103 for an input longer
    than the model takes (counted with the model's tokenizer, as chat prompts are)."""
    spec = catalog.resolve(request.model_id)
    if spec.kind is not ModelKind.EMBEDDING or spec.embedding_dimensions is None:
        raise CapabilityNotSupported(
            f"model {spec.model_id} is a chat model: it makes no embeddings",
            details={"model_id": spec.model_id, "kind": spec.kind.value},
        )
    if request.dimensions is not None and request.dimensions > spec.embedding_dimensions:
        raise InvalidParameters(
            f"dimensions {request.dimensions} is more than {spec.model_id}'s vectors have "
            f"({spec.embedding_dimensions})",
            details={"model_id": spec.model_id, "max_dimensions": spec.embedding_dimensions},
        )
    for index, text in enumerate(request.input):
        # A token (byte-level BPE) covers at least one byte: only a longer text can have too many.
        if len(text.encode()) > spec.context_window:
            counted = tokens.count_text(text, spec.tokenizer)
            if counted > spec.context_window:
                raise ContextLengthExceeded(
                    f"input {index} has {counted} tokens, more than {spec.model_id} takes "
                    f"({spec.context_window})",
                    details={"model_id": spec.model_id, "input": index, "tokens": counted},
                )
    return spec


async def measured_latencies(redis: Redis) -> dict[str, float]:
    """Per-model latency moving averages the workers keep (``workers/control/latency.py``)."""
    raw = await redis.hgetall(keys.LATENCIES)
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}


def _capabilities(model: ModelSpec) -> set[str]:
    caps = set(model.capabilities)
    if "function_calling" in caps:
        caps.add("tool_use")
    return caps
