"""``GET /v1/models``: the catalog as OpenAI's model objects (aliases resolve on lookup)."""

from __future__ import annotations

from typing import Any

from config.catalog import Catalog, ModelSpec, ModelStatus

_OWNERS = {"mock": "l04"}


def model_object(spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.model_id,
        "object": "model",
        "created": 0,
        "owned_by": _OWNERS.get(spec.provider, spec.provider),
        # Beyond OpenAI's fields: what a client of a gateway wants to know of a model.
        "l04": {
            "provider": spec.provider,
            "aliases": list(spec.aliases),
            "kind": spec.kind.value,
            "capabilities": list(spec.capabilities),
            "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens,
            "embedding_dimensions": spec.embedding_dimensions,
            "region": spec.region,
            "status": spec.status.value,
        },
    }


def model_list(catalog: Catalog, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The catalog's models that serve, ``only`` those a key may use when it names some."""
    return {
        "object": "list",
        "data": [
            model_object(spec)
            for spec in catalog
            if spec.status is not ModelStatus.DISABLED and (not only or spec.model_id in only)
        ],
    }
