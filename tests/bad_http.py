"""Generated HTTP requests (hypothesis strategies), good and bad, for the fuzz of ``l04 serve``
(tests/fleet/test_http_fuzz.py): bodies, headers, paths and raw bytes.

Every body strategy starts from a valid body of its endpoint (``BASES``) and breaks it one way,
so that a run covers both refusals and answers; the body field names come from the served
OpenAPI document, so a field added to an endpoint is fuzzed without a change here.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.bad_requests import json_values

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"

#: A valid body of each POST endpoint (an endpoint the server serves must have one here).
BASES: dict[str, dict[str, Any]] = {
    CHAT: {"model": "mock", "messages": [{"role": "user", "content": "fuzz"}]},
    MESSAGES: {
        "model": "mock",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "fuzz"}],
    },
    EMBEDDINGS: {"model": "mock-embed", "input": "fuzz"},
    RESPONSES: {"model": "mock", "input": "fuzz"},
}

_MARK = "\x00nasty\x00"


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript writes them


def splice(base: dict[str, Any], name: str, fragment: str, *, in_content: bool = False) -> bytes:
    """``base`` with raw JSON text ``fragment`` as field ``name`` (or as the first message's
    content, or the input to embed): text no Python value dumps to (lone surrogates, 5,000
    digits, deep nesting)."""
    data = json.loads(json.dumps(base))
    if in_content and "messages" in data:
        data["messages"][0]["content"] = _MARK
    elif in_content:
        data["input"] = _MARK
    else:
        data[name] = _MARK
    return as_json(data).replace(json.dumps(_MARK).encode(), fragment.encode())


#: Raw JSON values that break parsers, encoders and validators.
NASTY = st.sampled_from(
    [
        r'"\ud800"',
        r'"x\udfff"',
        r'"\ud83d\ude00"',
        r'"\u0000"',
        r'"\u202e\ufeff"',
        '""',
        "1" + "0" * 5000,
        "-" + "9" * 4301,
        "1e400",
        "-1e400",
        "1e-400",
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "1.5",
        "4294967297",
        "9223372036854775808",
        "-9223372036854775809",
        "[" * 500 + "]" * 500,
        "[" * 5000 + "]" * 5000,
        '{"a":' * 900 + "1" + "}" * 900,
        "[" + ",".join(["1"] * 10_000) + "]",
        "{" + ",".join(f'"{i}":{i}' for i in range(3000)) + "}",
        '"' + "x" * 60_000 + '"',
        "true",
        "null",
        "[]",
        "{}",
        "[{}]",
        '{"":null}',
    ]
)

#: Bytes that are not UTF-8: a lone continuation byte, an overlong "/", an encoded
#: surrogate, a code point past U+10FFFF, a truncated sequence, BOMs.
INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xfe\xff"]
)

text = st.text(max_size=40)
roles = st.sampled_from(
    ["system", "developer", "user", "assistant", "tool", "function", "", "USER"]
)
image_urls = st.sampled_from(
    [
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/png;base64,!!!!",
        "data:text/plain;base64,aGk=",
        "data:image/png,raw",
        "data:,",
        "http://127.0.0.1:1/x.png",
        "file:///etc/passwd",
        "",
    ]
)
chat_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "refusal", "input_audio", "file", ""])},
        optional={
            "text": text | json_values,
            "image_url": st.fixed_dictionaries({"url": image_urls | text}) | json_values,
            "refusal": text,
        },
    ),
    max_size=3,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": text,
            "function": st.fixed_dictionaries({"name": text}, optional={"arguments": text}),
        },
        optional={"type": st.sampled_from(["function", "custom"])},
    ),
    max_size=2,
)
chat_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": text | chat_parts | json_values,
            "name": text,
            "tool_calls": tool_calls | json_values,
            "tool_call_id": text,
        },
    ),
    max_size=4,
)
anthropic_blocks = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["text", "image", "tool_use", "tool_result", "document", "thinking", ""]
            )
        },
        optional={
            "text": text | json_values,
            "source": st.fixed_dictionaries(
                {"type": st.sampled_from(["base64", "url", "file"])},
                optional={
                    "media_type": st.sampled_from(["image/png", "text/plain", ""]),
                    "data": st.sampled_from(["iVBORw0KGgo=", "!!!", ""]),
                    "url": image_urls,
                },
            ),
            "id": text,
            "name": text,
            "input": json_values,
            "tool_use_id": text,
            "content": text | json_values,
        },
    ),
    max_size=3,
)
anthropic_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles}, optional={"content": text | anthropic_blocks | json_values}
    ),
    max_size=4,
)
l04_extension = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | text
        for name in (
            "strategy",
            "fallback_models",
            "provider",
            "region",
            "task_type",
            "semantic_cache",
            "enable_cache",
            "no_such_option",
        )
    },
) | st.fixed_dictionaries(
    {"fallback_models": st.lists(st.sampled_from(["mock", "gpt-4o-mini", "nope", ""]), max_size=9)}
)


#: Chat models of the catalog, one of each provider (the fuzz's worker serves them all).
chat_models = st.sampled_from(
    ["mock", "gpt-4o-mini", "claude-3-5-sonnet-20241022", "llama3.1:8b", "claude-code"]
)
embedding_models = st.sampled_from(["mock-embed", "text-embedding-3-small"])
#: Any text a user may write: every plane, combining marks, controls, RTL, emoji.
prose = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=80)
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
chat_turns = st.sampled_from(
    [
        [],
        [{"role": "system", "content": "be brief"}],
        [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}],
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    ]
)
#: Valid chat bodies: many fields at once, each at a value the API takes (the other body
#: strategies break them).
chat_valid = st.builds(
    lambda turns, text, more: {
        "messages": [*turns, {"role": "user", "content": text}],
        **more,
    },
    chat_turns,
    prose,
    st.fixed_dictionaries(
        {},
        optional={
            "model": chat_models,
            "max_tokens": st.integers(1, 64),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0.01, 1),
            "stop": st.sampled_from(["\n", ["END"], []]),
            "seed": st.integers(-(2**63), 2**63),
            "tools": st.just(
                [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
                    }
                ]
            ),
            "tool_choice": st.sampled_from(["auto", "none"]),
            "response_format": st.sampled_from(
                [
                    {"type": "text"},
                    {"type": "json_object"},
                    {"type": "json_schema", "json_schema": {"name": "r", "schema": WEATHER_SCHEMA}},
                ]
            ),
            "stream": st.booleans(),
            "stream_options": st.just({"include_usage": True}),
            "n": st.just(1),
            "logprobs": st.just(False),
            "service_tier": st.sampled_from(["priority", "default", "auto", "flex", "scale"]),
            "user": prose,
            "metadata": st.dictionaries(st.sampled_from(["a", "trace"]), prose, max_size=2),
            "l04": st.fixed_dictionaries(
                {},
                optional={
                    "strategy": st.sampled_from(
                        ["capability_first", "cost_optimized", "latency_optimized"]
                    ),
                    "fallback_models": st.lists(chat_models, max_size=2),
                    "semantic_cache": st.booleans(),
                    "enable_cache": st.booleans(),
                },
            ),
        },
    ),
)
messages_valid = st.builds(
    lambda model, text, more: {
        "model": model,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
        **more,
    },
    chat_models,
    prose | st.builds(lambda t: [{"type": "text", "text": t}], prose),
    st.fixed_dictionaries(
        {},
        optional={
            "system": st.sampled_from(["be brief", [{"type": "text", "text": "be brief"}]]),
            "stop_sequences": st.just(["END"]),
            "temperature": st.floats(0, 1),
            "stream": st.booleans(),
            "tools": st.just([{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]),
            "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "none"}]),
            "metadata": st.just({"user_id": "u-1"}),
            "service_tier": st.sampled_from(["auto", "standard_only"]),
            "thinking": st.just({"type": "disabled"}),
        },
    ),
)
embeddings_valid = st.fixed_dictionaries(
    {"model": embedding_models, "input": prose | st.lists(prose, min_size=1, max_size=3)},
    optional={"encoding_format": st.sampled_from(["float", "base64"]), "user": prose},
)
responses_parts = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["input_text", "input_image", "output_text", "input_file", "refusal", "text", ""]
            )
        },
        optional={"text": text | json_values, "image_url": image_urls | json_values},
    ),
    max_size=3,
)
#: Input items of the Responses API, valid or not.
responses_items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["message", "function_call", "function_call_output", "reasoning", "", "x"]
            ),
            "role": roles,
            "content": text | responses_parts | json_values,
            "call_id": text,
            "name": text,
            "arguments": text | json_values,
            "output": text | json_values,
        },
    ),
    max_size=4,
)
responses_valid = st.builds(
    lambda model, text, more: {"model": model, "input": text, **more},
    chat_models,
    prose
    | st.builds(
        lambda t: [{"role": "developer", "content": "be brief"}, {"role": "user", "content": t}],
        prose,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "instructions": prose,
            "max_output_tokens": st.integers(1, 64),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0.01, 1),
            "tools": st.just(
                [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
            ),
            "tool_choice": st.sampled_from(["auto", "none"]),
            "text": st.sampled_from(
                [
                    {"format": {"type": "text"}},
                    {"format": {"type": "json_object"}},
                    {"format": {"type": "json_schema", "name": "r", "schema": WEATHER_SCHEMA}},
                ]
            ),
            "metadata": st.dictionaries(st.sampled_from(["a", "trace"]), prose, max_size=2),
            "service_tier": st.sampled_from(["priority", "default", "auto", "flex"]),
            "stream": st.booleans(),
            "background": st.booleans(),
            "store": st.just(True),
            "truncation": st.just("disabled"),
        },
    ),
)
VALID = {
    CHAT: chat_valid,
    MESSAGES: messages_valid,
    EMBEDDINGS: embeddings_valid,
    RESPONSES: responses_valid,
}


def bodies(path: str, fields: list[str]) -> st.SearchStrategy[bytes]:
    """Bodies for POST ``path``, whose schema has ``fields``: valid ones and each way to break
    one (every field, the messages, the ``l04`` extension, bytes, encodings, size)."""
    base = BASES[path]
    names = st.sampled_from([*fields, "no_such_field", ""])
    valid = json.dumps(base)
    messages = anthropic_messages if path == MESSAGES else chat_messages
    # Where the conversation goes: the Responses API's ``input`` items, else ``messages``.
    turns = ("input", responses_items) if path == RESPONSES else ("messages", messages)
    return st.one_of(
        st.fixed_dictionaries({}, optional={"stream": st.booleans()}).map(
            lambda more: as_json({**base, **more})
        ),
        VALID[path].map(as_json),
        st.tuples(VALID[path], names, json_values).map(lambda b: as_json({**b[0], b[1]: b[2]})),
        st.binary(max_size=200),
        json_values.map(as_json),
        st.tuples(names, json_values).map(lambda nv: as_json({**base, nv[0]: nv[1]})),
        st.tuples(names, NASTY).map(lambda nv: splice(base, nv[0], nv[1])),
        NASTY.map(lambda fragment: splice(base, "", fragment, in_content=True)),
        turns[1].map(lambda m: as_json({**base, turns[0]: m})),
        l04_extension.map(lambda extension: as_json({**base, "l04": extension})),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut].encode()),
        INVALID_UTF8.map(
            lambda bad: valid.replace("fuzz", "fu" + bad.decode("latin-1")).encode("latin-1")
        ),
        st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "utf-16-be"]).map(valid.encode),
        st.integers(1, 4096).map(
            lambda extra: valid.replace("fuzz", "z" * (64 * 1024 + extra)).encode()
        ),
    )


# -- headers -------------------------------------------------------------------------------------

#: What h11 (httpx) sends as a header value: visible Latin-1, spaces inside.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(str.strip)

HEADER_VALUES: dict[str, list[str]] = {
    "content-type": [
        "application/json",
        "application/json; charset=latin-1",
        "APPLICATION/JSON",
        "application/problem+json",
        "application/jsonx",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        ";",
        "",
    ],
    "x-l04-timeout": [
        "5",
        "30.5",
        "3e1",
        "0",
        "-1",
        "nan",
        "inf",
        "-inf",
        "1e309",
        "86401",
        "1e-320",
        "0x10",
        "1_0",
        "",
        "abc",
    ],
    "x-l04-priority": ["high", "LOW", "normal", "urgent", "", "0"],
    "idempotency-key": ["k", "a" * 255, "a" * 256, "", "\xa0", "\x85key", "key with spaces"],
    "x-request-id": ["trace-1", "a" * 129, "../../etc", "id with space", "\xff", ""],
    "authorization": ["Bearer sk-l04-nope", "Bearer", "Basic Zm9vOmJhcg==", "", "sk-l04-x"],
    "x-api-key": ["sk-l04-nope", "", "\xe9"],
    "accept": ["text/event-stream", "application/xml", "*/*", ""],
    "accept-encoding": ["gzip", "br", "identity;q=0", "x"],
    "content-encoding": ["gzip", "br", "x"],
    "expect": ["100-continue", "x"],
    "connection": ["close", "upgrade", "keep-alive, upgrade"],
    "upgrade": ["websocket", "h2c", "x"],
    "host": ["", "x" * 300, "[::1", "a:b:c"],
}


def header_dicts(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    value = {name: st.sampled_from(HEADER_VALUES[name]) | header_text for name in names}
    return st.one_of(
        st.just({}),
        st.sampled_from(names).flatmap(lambda name: value[name].map(lambda v: {name: v})),
        st.fixed_dictionaries({}, optional=value),
    )


def short_deadline(headers: dict[str, str]) -> bool:
    """Whether the request set X-L04-Timeout to a deadline a job may well miss (a 504 is its
    documented answer then)."""
    try:
        return float(headers.get("x-l04-timeout", "")) < 5
    except ValueError:
        return False


def encoded(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as Latin-1 bytes (httpx encodes str values as ASCII only; h11 sends no
    value with whitespace around it, nor does HTTP keep it)."""
    return {name: value.strip().encode("latin-1") for name, value in headers.items()}


# -- paths and methods ---------------------------------------------------------------------------

#: GET half the time: most of the endpoints answer it.
METHODS = st.just("GET") | st.sampled_from(
    ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
)
model_ids = st.one_of(
    st.sampled_from(
        ["mock", "gpt-4o-mini", "nope", "..", "%2e%2e%2fhealth", "a/b/c", "%ff", "%", "%zz", "%00"]
    ),
    text.map(lambda s: quote(s, safe="")),
    st.integers(1, 20_000).map(lambda n: "m" * n),
)
query_strings = st.one_of(
    st.just(""),
    st.sampled_from(["?", "?a", "?a=1&a=2", "?%ff=%ff", "?=", "?" + "a=b&" * 500]),
    text.map(lambda s: "?" + quote(s, safe="=&")),
)
