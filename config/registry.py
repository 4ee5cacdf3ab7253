"""``ModelRegistry``: the seed's queries over the catalog, with a capability index.

The catalog file is the single source of models; the registry answers the questions a router,
an operator or an agent runtime asks of it: a model by id or alias, every model with some
capabilities (an index per capability, so a lookup does not scan the catalog), by provider,
region and status, and a model's quality score for a task type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from config.catalog import Catalog, ModelKind, ModelSpec, ModelStatus, cached_catalog


class ModelRegistry:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._by_capability: dict[str, set[str]] = defaultdict(set)
        for spec in catalog:
            for capability in spec.capabilities:
                self._by_capability[capability].add(spec.model_id)

    @classmethod
    def load(cls, path: str | None = None) -> ModelRegistry:
        """The registry of a catalog file (``L04_CATALOG``'s form), or the packaged default."""
        return cls(cached_catalog(path))

    def get_model(self, name: str) -> ModelSpec | None:
        """A model by id or alias, whatever its status."""
        return self.catalog.get(name)

    def list_models(
        self,
        *,
        provider: str | None = None,
        region: str | None = None,
        status: ModelStatus | None = None,
        capabilities: Iterable[str] = (),
        include_disabled: bool = False,
        kind: ModelKind | None = None,
    ) -> list[ModelSpec]:
        """Models matching every filter given, in catalog order (``kind``: chat or embedding
        models only; None: both)."""
        wanted = set(capabilities)
        ids: set[str] | None = None
        for capability in wanted:
            having = self._by_capability.get(capability, set())
            ids = set(having) if ids is None else ids & having
        found = []
        for spec in self.catalog:
            if ids is not None and spec.model_id not in ids:
                continue
            if provider is not None and spec.provider != provider:
                continue
            if region is not None and spec.region != region:
                continue
            if kind is not None and spec.kind is not kind:
                continue
            if status is not None and spec.status is not status:
                continue
            if status is None and not include_disabled and spec.status is ModelStatus.DISABLED:
                continue
            found.append(spec)
        return found

    def models_with(self, *capabilities: str) -> list[ModelSpec]:
        """Usable (not disabled) models that have every one of ``capabilities``."""
        return self.list_models(capabilities=capabilities)

    def quality(self, name: str, task_type: str = "general") -> float:
        """The model's score for ``task_type``, else its general score, else 0."""
        spec = self.catalog.get(name)
        if spec is None:
            return 0.0
        scores = spec.quality_scores
        return scores.get(task_type, scores.get("general", 0.0))

    @property
    def capabilities(self) -> set[str]:
        return set(self._by_capability)

    def __len__(self) -> int:
        return len(self.catalog)
