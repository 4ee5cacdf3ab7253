"""Bad input at ``l04 serve`` (issue 15, "Bad input"): what the fuzz found, pinned as plain cases.

The properties, for every answer: never a 5xx (a worker serves ``mock``, so the fleet is up and
not even a 503 is due), every error in its API's documented shape with an E4xxx code, nothing in
Redis for a refused request (no new ``l04:job:*`` key), and afterwards the same server process
answers ``/health`` with no traceback and no error line in its log.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from tests.processes import ServerProcess, WorkerProcess

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
#: L04_HTTP_MAX_BODY for these tests: small, so that bodies over it are cheap to send.
MAX_BODY = 64 * 1024
CODE = re.compile(r"E4\d{3}")


# -- the properties ------------------------------------------------------------------------------


def job_keys(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter("l04:job:*", count=1000))


def check_error(path: str, response: httpx.Response) -> str:
    """The error body is in the documented shape of ``path``'s API; its E4xxx code."""
    body = response.json()
    if path == MESSAGES:
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        assert isinstance(body["error"]["type"], str) and body["error"]["type"], body
        code = re.match(r"\[(E4\d{3})\] ", body["error"]["message"])
        assert code is not None, body
        return code.group(1)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert isinstance(error["code"], str) and CODE.fullmatch(error["code"]), body
    return str(error["code"])


def check_answer(path: str, response: httpx.Response, *, short_deadline: bool = False) -> None:
    """No 5xx (a 504 only for a deadline the request itself set under a few seconds), errors in
    their API's shape, and ``Retry-After`` wherever a client is told to come back."""
    status = response.status_code
    if status == 504 and short_deadline:
        assert check_error(path, response) in ("E4404", "E4205")
    else:
        assert status < 500, (status, response.text[:500])
    if status >= 400 and response.request.method != "HEAD":
        check_error(path, response)
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


def check_server_survived(server: ServerProcess) -> None:
    """The same process answers, and logged no traceback and no error."""
    assert server.process is not None and server.process.poll() is None
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    log = server.log()
    assert "Traceback" not in log
    assert '"level": "ERROR"' not in log, [line for line in log.splitlines() if "ERROR" in line]


def exchange(server: ServerProcess, data: bytes, *, half_close: bool = True) -> bytes:
    """``data`` sent raw on a new connection; what came back before the server closed it (or
    went quiet for a second)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def access_lines(server: ServerProcess, path: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [
        line
        for line in lines
        if line.get("logger") == "l04.http.access" and path in line["message"]
    ]


# -- the finds, pinned ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    status: int
    code: str = "E4500"
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def _chat(content: str, more: str = "") -> bytes:
    """A chat body with ``content`` (raw JSON text) as the user's content, then ``more``."""
    return f'{{"model":"mock","messages":[{{"role":"user","content":{content}}}]{more}}}'.encode()


def _messages(content: str, more: str = "") -> bytes:
    head = '{"model":"mock","max_tokens":16,"messages":[{"role":"user","content":'
    return f"{head}{content}}}]{more}}}".encode()


TOOL_NAN = '{"name":"f","parameters":{"type":"object","properties":{"x":{"minimum":NaN}}}}'
SCHEMA_1E400 = '{"type":"json_schema","json_schema":{"name":"r","schema":{"maximum":1e400}}}'

FOUND = [
    # json.loads raises a plain ValueError (not JSONDecodeError) past 4,300 digits: was a 502.
    Case("a 5,000-digit number", CHAT, _chat('"x"', ',"seed":' + "9" * 5000), 400),
    Case("a 5,000-digit number", MESSAGES, _messages("1" + "0" * 5000), 400),
    # A lone surrogate escape decodes to a str no UTF-8 encoder takes: was a 502 at submit
    # (PydanticSerializationError), or passed unseen where the door dropped the field.
    Case("a lone surrogate", CHAT, _chat(r'"\ud800"'), 400),
    Case("a lone surrogate", MESSAGES, _messages(r'"a\udfff"'), 400),
    Case("a lone surrogate in a key", MESSAGES, _messages('"x"', r',"metadata":{"\ud800":1}'), 400),
    Case("a lone surrogate, deep", CHAT, _chat('"x"', r',"l04":{"region":"\udbff"}'), 400),
    Case("a surrogate pair", CHAT, _chat(r'"\ud83d\ude00"'), 200, code=""),
    # NaN, Infinity and numbers past a double (1e400 reads as inf) are not JSON (RFC 8259):
    # json.loads took them, and in a field of any shape (a tool's parameters, a schema) they
    # went on to the provider, written as NaN / Infinity, which a strict JSON parser refuses
    # (a provider error, a 502).
    Case(
        "NaN", CHAT, _chat('"x"', ',"tools":[{"type":"function","function":' + TOOL_NAN + "}]"), 400
    ),
    Case(
        "Infinity",
        MESSAGES,
        _messages('"x"', ',"tools":[{"name":"f","input_schema":{"a":-Infinity}}]'),
        400,
    ),
    Case("1e400", CHAT, _chat('"x"', ',"response_format":' + SCHEMA_1E400), 400),
    Case("1e-400 (it reads as 0.0)", CHAT, _chat('"x"', ',"temperature":1e-400'), 200, code=""),
    # A path or a method not served was FastAPI's {"detail": "Not Found"}, in neither API's shape.
    Case("a path not served", "/v1/nope", b"{}", 404),
    Case("a path not served", "/", b"", 404, method="GET"),
    Case("a method not allowed", CHAT, b"", 405, method="GET"),
    Case("a method not allowed", MESSAGES, b"", 405, method="PUT"),
    Case("a method not allowed", "/v1/models", b"", 405, method="DELETE"),
    Case("a method not allowed", "/health", b"{}", 405),
]


@pytest.fixture
def fuzz_door(
    start_server: Callable[..., ServerProcess], start_worker: Callable[..., WorkerProcess]
) -> ServerProcess:
    """``l04 serve --no-auth`` with a small L04_HTTP_MAX_BODY, and a worker for ``mock``."""
    start_worker("mock")
    server = start_server(no_auth=True, env={"L04_HTTP_MAX_BODY": str(MAX_BODY)})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(150):  # the worker's first heartbeat
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.1)
    return server


@pytest.fixture
def lone_door(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """``l04 serve --no-auth`` with a small L04_HTTP_MAX_BODY and no worker (for input that
    never gets as far as a job)."""
    return start_server(no_auth=True, env={"L04_HTTP_MAX_BODY": str(MAX_BODY)})


def test_the_fuzzs_finds_are_refused_in_shape(
    fuzz_door: ServerProcess, redis_client: redis.Redis
) -> None:
    with httpx.Client(base_url=fuzz_door.url, timeout=30) as client:
        for case in FOUND:
            before = job_keys(redis_client)
            response = client.request(
                case.method, case.path, content=case.body, headers=case.headers
            )
            assert response.status_code == case.status, (case.name, case.path, response.text)
            check_answer(case.path, response)
            if case.status == 200:
                continue
            assert check_error(case.path, response) == case.code, case.name
            assert job_keys(redis_client) <= before, case.name
    check_server_survived(fuzz_door)


def test_a_client_that_leaves_in_the_middle_of_its_body_is_no_error(
    lone_door: ServerProcess, redis_client: redis.Redis
) -> None:
    """Was an ERROR line ("unexpected ClientDisconnect") and a 502 written to nobody."""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % CHAT.encode()
    assert exchange(lone_door, head + b'Content-Length: 1000\r\n\r\n{"model":') == b""
    deadline = time.monotonic() + 5
    while not access_lines(lone_door, CHAT):
        assert time.monotonic() < deadline, lone_door.log()
        time.sleep(0.05)
    assert [line["http_status"] for line in access_lines(lone_door, CHAT)] == [499]
    assert not job_keys(redis_client)
    check_server_survived(lone_door)
