"""The model catalog: which models exist, on which provider, what they can do and cost.

The catalog is a TOML file (``config/catalog.toml`` by default, ``L04_CATALOG`` to replace it).
A malformed entry fails at load with E4003 naming the file, the model and the field.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway_core.errors import InvalidCatalog, ModelDisabled, ModelNotFound
from gateway_core.queues import PROVIDERS

M = TypeVar("M", bound=BaseModel)


class ModelStatus(StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    DISABLED = "disabled"


class ModelKind(StrEnum):
    """What a model does. The router picks only chat models for chat requests; an embeddings
    job takes only an embedding model (E4101 either way round)."""

    CHAT = "chat"
    EMBEDDING = "embedding"


class ModelLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class AgentLimits(BaseModel):
    """An agent's own limits (``[agents."<agent_did>"]``; ``"*"`` applies to every agent).

    Rates are per rate-limit window (a minute by default) and per model; quotas are across all
    models, per ``quota_period_s``, in tokens and in USD (E4402 when spent).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    token_quota: int | None = Field(default=None, gt=0)
    cost_quota: float | None = Field(default=None, gt=0.0)  # USD
    quota_period_s: int = Field(default=86_400, gt=0)


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1)
    provider: str
    # The name the provider's API knows the model by (defaults to model_id).
    provider_model: str | None = None
    aliases: list[str] = Field(default_factory=list)
    kind: ModelKind = ModelKind.CHAT
    capabilities: list[str] = Field(default_factory=lambda: ["text"])
    # Tokens in: a chat model's prompt and answer together, an embedding model's one input.
    context_window: int = Field(gt=0)
    # Chat models only (an embedding model writes no tokens).
    max_output_tokens: int | None = Field(default=None, gt=0)
    # Embedding models only: the length of the model's vectors (requests may ask for fewer).
    embedding_dimensions: int | None = Field(default=None, gt=0)
    cost_per_1k_input: float = Field(default=0.0, ge=0.0)  # USD
    cost_per_1k_output: float = Field(default=0.0, ge=0.0)  # USD
    limits: ModelLimits = Field(default_factory=ModelLimits)
    status: ModelStatus = ModelStatus.ACTIVE
    region: str = "global"
    quality_scores: dict[str, float] = Field(default_factory=dict)
    tokenizer: str = "cl100k_base"

    @model_validator(mode="after")
    def _known_provider(self) -> ModelSpec:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        if self.kind is ModelKind.EMBEDDING:
            if self.embedding_dimensions is None:
                raise ValueError("an embedding model needs embedding_dimensions")
            if self.max_output_tokens is not None:
                raise ValueError("an embedding model has no max_output_tokens")
            return self
        if self.embedding_dimensions is not None:
            raise ValueError('embedding_dimensions is for kind = "embedding" models only')
        if self.max_output_tokens is None:
            raise ValueError("a chat model needs max_output_tokens")
        if self.max_output_tokens > self.context_window:
            raise ValueError("max_output_tokens is larger than context_window")
        return self

    @property
    def api_name(self) -> str:
        return self.provider_model or self.model_id

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            prompt_tokens / 1000 * self.cost_per_1k_input
            + completion_tokens / 1000 * self.cost_per_1k_output,
            8,
        )


class Catalog:
    """Models by id and alias. Immutable once loaded."""

    def __init__(
        self,
        models: list[ModelSpec],
        default_model: str | None = None,
        agents: dict[str, AgentLimits] | None = None,
    ) -> None:
        self.agents = dict(agents or {})
        self._models: dict[str, ModelSpec] = {}
        self._names: dict[str, str] = {}
        for spec in models:
            for name in (spec.model_id, *spec.aliases):
                if name in self._names:
                    raise InvalidCatalog(f"model name {name!r} is used twice in the catalog")
                self._names[name] = spec.model_id
            self._models[spec.model_id] = spec
        if default_model is not None:
            if default_model not in self._names:
                raise InvalidCatalog(f"default_model {default_model!r} is not in the catalog")
            if self._models[self._names[default_model]].kind is not ModelKind.CHAT:
                raise InvalidCatalog(f"default_model {default_model!r} is not a chat model")
        self.default_model = default_model

    def __iter__(self) -> Any:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ModelSpec | None:
        model_id = self._names.get(name)
        return self._models[model_id] if model_id else None

    def resolve(self, name: str | None) -> ModelSpec:
        """The model a request names (or the default), or E4001 / E4005."""
        wanted = name or self.default_model
        if wanted is None:
            raise ModelNotFound("no model_id given and the catalog has no default_model")
        spec = self.get(wanted)
        if spec is None:
            raise ModelNotFound(
                f"model {wanted!r} is not in the catalog", details={"model_id": wanted}
            )
        if spec.status is ModelStatus.DISABLED:
            raise ModelDisabled(
                f"model {spec.model_id!r} is disabled", details={"model_id": spec.model_id}
            )
        return spec

    def agent_limits(self, agent_did: str) -> AgentLimits | None:
        """The agent's own entry, else the ``"*"`` entry, else None (no agent limits)."""
        return self.agents.get(agent_did) or self.agents.get("*")

    @property
    def providers(self) -> set[str]:
        return {spec.provider for spec in self._models.values()}


def _validated(kind: type[M], entry: Any, source: str, what: str, label: str) -> M:
    """One catalog entry, or E4003 naming the file, the entry and every field at fault."""
    try:
        return kind.model_validate(entry)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidCatalog(
            f"{source}: {what} {label}: " + "; ".join(problems),
            details={"source": source, what: label, "errors": problems},
        ) from None


def parse_catalog(data: dict[str, Any], source: str = "catalog") -> Catalog:
    models = []
    for index, entry in enumerate(data.get("models", [])):
        label = entry.get("model_id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        models.append(_validated(ModelSpec, entry, source, "model", label))
    agents = {
        agent_did: _validated(AgentLimits, entry, source, "agent", agent_did)
        for agent_did, entry in (data.get("agents") or {}).items()
    }
    return Catalog(models, default_model=data.get("default_model"), agents=agents)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog file, or the packaged default when ``path`` is None."""
    if path is None:
        text = resources.files("config").joinpath("catalog.toml").read_text(encoding="utf-8")
        source = "config/catalog.toml"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidCatalog(f"{source}: cannot read catalog: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCatalog(f"{source}: not valid TOML: {exc}") from None
    return parse_catalog(data, source)


@lru_cache(maxsize=8)
def cached_catalog(path: str | None) -> Catalog:
    return load_catalog(path)
