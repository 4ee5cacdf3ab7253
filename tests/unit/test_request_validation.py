"""A request checks itself as it is built: bad messages, fields and deadlines are typed errors."""

from __future__ import annotations

import time

import pytest

from gateway_client import (
    InferenceRequest,
    Message,
    MessageRole,
    ValidationError,
)


async def test_seed_constructor_validates() -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceRequest.create(agent_did="did:key:a", messages=[], max_tokens=10)
    assert caught.value.code == "E4501"
    request = InferenceRequest.create(
        agent_did="did:key:a",
        messages=[Message(role=MessageRole.USER, content="hi")],
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        seed=7,
    )
    assert request.priority.value == "normal"
    assert request.model_id is None and request.enable_cache is True


def test_bad_messages_and_deadlines_are_typed_errors_at_construction() -> None:
    with pytest.raises(ValidationError) as caught:
        Message(role="wizard", content="hi")  # type: ignore[arg-type]
    assert caught.value.code == "E4501" and "role" in caught.value.message
    for deadline in (1e300, float("inf"), time.time() + 86400 + 120):
        with pytest.raises(ValidationError) as caught:
            InferenceRequest.create(
                agent_did="did:key:a",
                messages=[Message(role=MessageRole.USER, content="hi")],
                deadline=deadline,
            )
        assert caught.value.code == "E4502" and "deadline" in caught.value.message
    soon = InferenceRequest.create(
        agent_did="did:key:a",
        messages=[Message(role=MessageRole.USER, content="hi")],
        deadline=time.time() + 3600,
    )
    assert soon.deadline is not None
