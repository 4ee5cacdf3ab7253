"""Generated requests (hypothesis strategies), good and bad, for the bad-input tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

FIELDS = [
    "agent_did",
    "messages",
    "model_id",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "priority",
    "timeout",
    "deadline",
    "tools",
    "tool_choice",
    "response_format",
    "routing",
    "metadata",
    "enable_cache",
    "semantic_cache",
    "fail_fast",
    "request_id",
    "no_such_field",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "robot", ""])
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={"content": json_values | st.text(max_size=40), "tool_calls": json_values},
    ),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {},
    optional={name: (messages if name == "messages" else json_values) for name in FIELDS},
)


def valid_base() -> dict[str, Any]:
    return {"agent_did": "did:key:fuzz", "messages": [{"role": "user", "content": "hi"}]}
