"""Bad input at ``l04 serve`` (issue 15, "Bad input"): a property-based fuzz (hypothesis, the
strategies in tests/bad_http.py) of bodies, headers, paths and methods at every endpoint of the
served OpenAPI document, raw bytes on its socket, bad keys against a server with auth on, and what
the fuzz found, pinned as plain cases.

The properties, for every answer: never a 5xx (a worker serves every provider of the catalog, so
the fleet is up and not even a 503 is due), every error in its API's documented shape with an
E4xxx code, nothing in Redis for a refused request (no new ``l04:job:*`` key), and afterwards the
same server process answers ``/health`` with no traceback and no error line in its log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bad_http import (
    BASES,
    HEADER_VALUES,
    METHODS,
    bodies,
    encoded,
    header_dicts,
    header_text,
    model_ids,
    query_strings,
    short_deadline,
)
from tests.fleet.test_providers_end_to_end import MODELS as PROVIDERS
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.processes import ROOT, MockUpstreamProcess, ServerProcess, WorkerProcess

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
#: L04_HTTP_MAX_BODY for these tests: small, so that bodies over it are cheap to send.
MAX_BODY = 64 * 1024
#: The servers' settings: that small body limit, and a short default deadline, so that a request
#: that should have been refused and waits for a worker instead fails in seconds, not minutes.
SERVER_ENV = {"L04_HTTP_MAX_BODY": str(MAX_BODY), "L04_HTTP_TIMEOUT": "10"}
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


#: uvicorn's own answer to bytes its HTTP parser refuses (a method it does not know, a header it
#: cannot read): the request never reaches the door, so it is in neither API's shape.
UNPARSED = "Invalid HTTP request received."


def check_answer(path: str, response: httpx.Response, *, short_deadline: bool = False) -> None:
    """No 5xx (a 504 only for a deadline the request itself set under 5 seconds), errors in
    their API's shape, and ``Retry-After`` wherever a client is told to come back."""
    status = response.status_code
    if status == 400 and response.text == UNPARSED:
        return
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
    start_server: Callable[..., ServerProcess],
    start_worker: Callable[..., WorkerProcess],
    upstream: MockUpstreamProcess,
) -> ServerProcess:
    """``l04 serve --no-auth`` with a small L04_HTTP_MAX_BODY, and a worker for every provider
    of the catalog (the HTTP ones on ``l04 mock-provider``): whatever model a valid request
    names, it is answered."""
    upstream.reset()
    start_worker(",".join(PROVIDERS), env=fleet_env(upstream))
    server = start_server(no_auth=True, env=SERVER_ENV)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(150):  # the worker's first heartbeat
            if client.get("/ready").status_code == 200:
                return server
            time.sleep(0.1)
    pytest.fail("l04 serve not ready with a worker running")


@pytest.fixture
def lone_door(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """``l04 serve --no-auth`` with a small L04_HTTP_MAX_BODY and no worker (for input that
    never gets as far as a job)."""
    return start_server(no_auth=True, env=SERVER_ENV)


def test_the_fuzzs_finds_are_refused_in_shape(
    fuzz_door: ServerProcess, redis_client: redis.Redis
) -> None:
    """Each input the fuzz found a 5xx or a wrong shape with, now refused in shape (or, for the
    valid neighbours of one, answered), with nothing enqueued."""
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


# -- the fuzz ------------------------------------------------------------------------------------

#: A bounded run: a fixed number of examples each (times L04_FUZZ_SCALE, for a longer hunt by
#: hand), no per-example deadline (a valid request waits for a real worker), no example database
#: left in the working tree.
SCALE = float(os.environ.get("L04_FUZZ_SCALE", "1"))
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def served_post_fields(server: ServerProcess) -> dict[str, list[str]]:
    """Each POST endpoint of the served OpenAPI document, with its body's field names."""
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    fields = {}
    for path, item in document["paths"].items():
        post = item.get("post", {})
        if "requestBody" in post and "OpenAI Batch" not in post.get("tags", []):
            # (Not a bodiless cancel; the Batch API's bodies make no job: test_http_batches
            # sends them bad input.)
            schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
            if "$ref" in schema:
                schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            fields[path] = sorted(schema.get("properties", {}))
    return fields


def check_success(path: str, response: httpx.Response) -> None:
    """A 2xx of an inference endpoint is a whole answer of its API, streamed or not."""
    assert response.status_code == 200, response.text[:500]
    if response.headers["content-type"].startswith("text/event-stream"):
        assert "error" not in [
            line.removeprefix("event: ") for line in response.text.splitlines()
        ], response.text[-500:]
        if path == MESSAGES:
            assert response.text.rstrip().endswith('"type":"message_stop"}'), response.text[-300:]
        elif path == RESPONSES:  # its last event is the response's end, numbered as the rest
            last = response.text.rstrip().splitlines()[-1]
            assert json.loads(last.removeprefix("data: "))["type"] in (
                "response.completed",
                "response.incomplete",
                "response.failed",
            ), response.text[-300:]
        else:
            assert response.text.endswith("data: [DONE]\n\n"), response.text[-300:]
        return
    body = response.json()
    expected = {
        CHAT: ("object", "chat.completion"),
        MESSAGES: ("type", "message"),
        EMBEDDINGS: ("object", "list"),
        RESPONSES: ("object", "response"),
    }
    if path in expected:
        name, value = expected[path]
        assert body[name] == value, body


def test_fuzzed_bodies_and_headers_at_the_inference_endpoints(
    fuzz_door: ServerProcess, redis_client: redis.Redis
) -> None:
    """Every POST endpoint of the OpenAPI document, with valid bodies and each way to break one
    (tests/bad_http.py), under valid and absurd headers: refusals in shape with nothing enqueued,
    valid requests answered whole by the worker, some of each on every endpoint."""
    posts = served_post_fields(fuzz_door)
    assert {CHAT, MESSAGES, EMBEDDINGS} <= set(posts)
    assert set(posts) <= set(BASES), "a POST endpoint with no valid body in tests/bad_http.py"
    outcomes: Counter[tuple[str, str]] = Counter()
    requests = st.sampled_from(sorted(posts)).flatmap(
        lambda path: st.tuples(
            st.just(path), bodies(path, posts[path]), header_dicts(sorted(HEADER_VALUES))
        )
    )
    with httpx.Client(base_url=fuzz_door.url, timeout=60) as client:

        @settings(FUZZ, max_examples=int(600 * SCALE))
        @given(requests)
        def post_one(request: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = request
            before = job_keys(redis_client)
            response = client.post(path, content=body, headers=encoded(headers))
            check_answer(path, response, short_deadline=short_deadline(headers))
            if 400 <= response.status_code < 500:
                assert job_keys(redis_client) <= before, ("enqueued", response.text)
                outcomes[path, "refused"] += 1
            elif response.status_code < 300:
                check_success(path, response)
                outcomes[path, "answered"] += 1

        post_one()
    for path in posts:
        assert outcomes[path, "refused"] and outcomes[path, "answered"], outcomes
    check_server_survived(fuzz_door)


def test_fuzzed_paths_methods_and_headers_at_every_endpoint(
    fuzz_door: ServerProcess, redis_client: redis.Redis
) -> None:
    """Every path of the OpenAPI document and some that are not, with any method, model id,
    query string, headers and a stray body: 2xx, 3xx or 4xx in shape, never a 5xx (/ready is
    200 here: a worker runs)."""
    document = httpx.get(f"{fuzz_door.url}/openapi.json", timeout=10).json()
    paths = [
        *sorted(document["paths"]),
        *["/", "/v1", "/v1/nope", "/v1/models/", "/health/", "//health", "/v1//models"],
    ]
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=fuzz_door.url, timeout=60) as client:

        @settings(FUZZ, max_examples=int(300 * SCALE))
        @given(
            METHODS,
            st.sampled_from(paths),
            model_ids,
            query_strings,
            header_dicts(sorted(HEADER_VALUES)),
            st.binary(max_size=64),
        )
        def request_one(
            method: str, path: str, model: str, query: str, headers: dict[str, str], body: bytes
        ) -> None:
            url = path.replace("{model}", model) + query
            before = job_keys(redis_client)
            response = client.request(method, url, content=body, headers=encoded(headers))
            check_answer(
                response.request.url.path, response, short_deadline=short_deadline(headers)
            )
            if 400 <= response.status_code < 500:
                assert job_keys(redis_client) <= before, ("enqueued", response.text)
            statuses[response.status_code] += 1

        request_one()
    assert statuses[200] and statuses[404] and statuses[405], statuses
    check_server_survived(fuzz_door)


# -- raw bytes on the socket ---------------------------------------------------------------------

_POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
_GET = b"GET /health HTTP/1.1\r\nHost: x\r\n"
RAW = {
    "a garbage request line": b"\x00\xff\xfe GARBAGE \r\n\r\n",
    "an empty request line": b"\r\n\r\n",
    "HTTP/9.9": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "HTTP/0.9": b"GET /health\r\n\r\n",
    "the HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a TLS ClientHello": bytes.fromhex("16030100a5010000a1030300") + bytes(64),
    "an unknown method": b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "an absolute URI": b"GET http://elsewhere.example/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "a 200 KB path": b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a 200 KB header": _GET + b"X-A: " + b"a" * 200_000 + b"\r\n\r\n",
    "10,000 headers": _GET + b"X-A: b\r\n" * 10_000 + b"\r\n",
    "a header without a colon": _GET + b"Nonsense\r\n\r\n",
    "NUL in a header": _GET + b"X-A: a\x00b\r\n\r\n",
    "Latin-1 in the path": b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare LF line ends": b"GET /health HTTP/1.1\nHost: x\n\n",
    "a folded header": _GET + b"X-A: a\r\n b\r\n\r\n",
    "Content-Length: -5": _POST + b"Content-Length: -5\r\n\r\n{}",
    "Content-Length: abc": _POST + b"Content-Length: abc\r\n\r\n{}",
    "Content-Length past 2**64": _POST + b"Content-Length: 99999999999999999999999\r\n\r\n{}",
    "Content-Length past L04_HTTP_MAX_BODY": _POST + b"Content-Length: 70000\r\n\r\n" + b"{" * 100,
    "two Content-Lengths": _POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": _POST
    + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "a chunk size that is no number": _POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
    "a chunk size past 2**64": _POST + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n",
    "chunks past L04_HTTP_MAX_BODY": _POST
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"8000\r\n"
    + b"[" * 0x8000
    + b"\r\n"
    + b"8000\r\n"
    + b"[" * 0x8000
    + b"\r\n"
    + b"8000\r\n"
    + b"[" * 0x8000
    + b"\r\n0\r\n\r\n",
    "a body shorter than its Content-Length": _POST + b'Content-Length: 1000\r\n\r\n{"model":',
    "a body longer than its Content-Length": _POST + b'Content-Length: 5\r\n\r\n{"model":"mock"}',
    "a chunked body that never ends": _POST + b"Transfer-Encoding: chunked\r\n\r\n100\r\n{}",
    "Expect: 100-continue and no body": _POST
    + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    "a WebSocket upgrade": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    + b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    + b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
    "an h2c upgrade": _GET
    + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    + b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    "a good request, then garbage": _GET + b"\r\n" + b"\x00\x01\x02 garbage\r\n\r\n",
}


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", answer, re.MULTILINE)]


def test_raw_garbage_and_lies_on_the_socket(
    lone_door: ServerProcess, redis_client: redis.Redis
) -> None:
    """Each case on a connection of its own: whatever comes back is a 4xx (or a 2xx for what is
    a request after all), never a 5xx; the server serves on, and nothing became a job."""
    for name, data in RAW.items():
        answer = exchange(lone_door, data)
        assert all(status < 500 for status in statuses(answer)), (name, answer[:300])
        assert answer == b"" or statuses(answer), (name, answer[:300])
    assert not job_keys(redis_client)
    check_server_survived(lone_door)


def test_slow_and_dropped_clients(lone_door: ServerProcess, redis_client: redis.Redis) -> None:
    """Slowloris-like: connections that stop in the request line, in the headers, in the body,
    and one that resets mid-body. The server answers others meanwhile; when they go, each
    partial body is a 499, no error."""
    partial = [
        b"POST /v1/chat/com",
        _POST + b"Content-Le",
        _POST + b"Content-Length: 1000\r\n\r\n",
        _POST + b'Content-Length: 1000\r\n\r\n{"model":"mock","messages":[{"ro',
        _POST + b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"model":',
    ]
    held = []
    for _ in range(6):
        for data in partial:
            sock = socket.create_connection(("127.0.0.1", lone_door.port), timeout=5)
            sock.sendall(data)
            held.append(sock)
    time.sleep(0.3)
    with httpx.Client(base_url=lone_door.url, timeout=5) as client:
        assert client.get("/health").status_code == 200
        refused = client.post(CHAT, content=b"{}")
        assert refused.status_code == 400 and check_error(CHAT, refused) == "E4500"
    for sock in held:
        sock.close()
    reset = socket.create_connection(("127.0.0.1", lone_door.port), timeout=5)
    reset.sendall(_POST + b"Content-Length: 1000\r\n\r\n{")
    time.sleep(0.2)
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()  # an RST, not a FIN
    mid_body = 3 * 6 + 1
    deadline = time.monotonic() + 10
    while (
        len([1 for line in access_lines(lone_door, CHAT) if line["http_status"] == 499]) < mid_body
    ):
        assert time.monotonic() < deadline, access_lines(lone_door, CHAT)
        time.sleep(0.1)
    assert not job_keys(redis_client)
    check_server_survived(lone_door)


@st.composite
def lying_requests(draw: st.DrawFn) -> bytes:
    """A chat request whose Content-Length (or chunk size) says something else than its body."""
    body = draw(bodies(CHAT, sorted(BASES[CHAT])))
    lie = draw(
        st.one_of(
            st.integers(-len(body), 64).filter(bool).map(lambda d: str(len(body) + d)),
            st.sampled_from(["", "-0", "+5", "0x10", "1e3", " 5", "5 5", "99999999999999999999"]),
            st.just("chunked"),
        )
    )
    if lie == "chunked":
        size = draw(st.integers(0, len(body) + 64).filter(lambda n: n != len(body)))
        framing = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % size + body + b"\r\n0\r\n\r\n"
    else:
        framing = b"Content-Length: " + lie.encode() + b"\r\n\r\n" + body
    return _POST + b"Connection: close\r\n" + framing


def test_fuzzed_content_length_lies(lone_door: ServerProcess, redis_client: redis.Redis) -> None:
    """Fuzzed bodies framed by a Content-Length or a chunk size that lies about them: whatever
    comes back is no 5xx, and none of them became a job."""

    @settings(FUZZ, max_examples=int(150 * SCALE))
    @given(lying_requests())
    def send_one(data: bytes) -> None:
        answer = exchange(lone_door, data)
        assert all(status < 500 for status in statuses(answer)), (data[:300], answer[:300])

    send_one()
    assert not job_keys(redis_client)
    check_server_survived(lone_door)


# -- keys ----------------------------------------------------------------------------------------


def l04_keys(redis_url: str, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "l04", "keys", *args],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.decode()


@st.composite
def bad_credentials(draw: st.DrawFn, keys: dict[str, str]) -> dict[str, str]:
    """No key, a malformed one, a near miss of the good key, a revoked or an expired key, in
    either API's header."""
    good = keys["good"]
    where = draw(st.integers(7, len(good) - 1))
    other = draw(st.sampled_from("AZaz09_-").filter(lambda c: c != good[where]))
    secret = draw(
        st.one_of(
            header_text,
            st.sampled_from([keys["revoked"], keys["expired"], "sk-l04-", "sk-l04-" + "A" * 43]),
            st.just(good[:where] + other + good[where + 1 :]),  # one character off
            st.sampled_from([good[:-1], good + "A", good.upper(), "sk-l03-" + good[7:]]),
            header_text.map(lambda tail: "sk-l04-" + tail),
        )
    )
    return draw(
        st.sampled_from(
            [
                {},
                {"authorization": f"Bearer {secret}"},
                {"authorization": secret},
                {"authorization": f"Basic {secret}"},
                {"authorization": "Bearer"},
                {"x-api-key": secret},
            ]
        )
    )


def test_every_bad_key_is_a_401_on_every_keyed_endpoint(
    start_server: Callable[..., ServerProcess], redis_url: str, redis_client: redis.Redis
) -> None:
    """Against a server with auth on (the default): every missing, malformed, unknown, revoked
    or expired key is a 401 (E4408) in its API's shape, whatever the body; /health and /metrics
    need no key; no key that was presented appears in the server's log."""
    server = start_server(env=SERVER_ENV)
    keys = {
        name: json.loads(l04_keys(redis_url, "create", "--agent", "did:key:fuzz", "--json", *more))
        for name, more in [("good", []), ("revoked", []), ("expired", ["--expires-in", "1s"])]
    }
    l04_keys(redis_url, "revoke", keys["revoked"]["id"])
    secrets = {name: record["key"] for name, record in keys.items()}
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    keyed = [("GET", "/v1/models"), ("GET", "/v1/models/mock")]
    keyed += [("POST", path) for path, item in document["paths"].items() if "post" in item]
    presented: set[str] = set()
    time.sleep(1.2)  # the expired key's second
    with httpx.Client(base_url=server.url, timeout=30) as client:
        good = {"authorization": f"Bearer {secrets['good']}"}
        assert client.get("/v1/models", headers=good).status_code == 200  # the good key works

        @settings(FUZZ, max_examples=int(250 * SCALE))
        @given(
            st.sampled_from(keyed),
            bad_credentials(secrets),
            st.sampled_from([b"", b"{}", b"\xff"])
            | st.sampled_from(sorted(BASES)).map(lambda path: json.dumps(BASES[path]).encode()),
        )
        def refuse_one(endpoint: tuple[str, str], credentials: dict[str, str], body: bytes) -> None:
            method, path = endpoint
            presented.update(v.split(" ", 1)[-1] for v in credentials.values() if "sk-l04-" in v)
            response = client.request(method, path, headers=encoded(credentials), content=body)
            assert response.status_code == 401, (endpoint, credentials, response.text)
            assert check_error(path, response) == "E4408"
            error_type = response.json()["error"]["type"]
            assert error_type == "authentication_error", response.text

        refuse_one()

        @settings(FUZZ, max_examples=int(30 * SCALE))
        @given(st.sampled_from(["/health", "/metrics"]), bad_credentials(secrets))
        def open_one(path: str, credentials: dict[str, str]) -> None:
            assert client.get(path, headers=encoded(credentials)).status_code == 200

        open_one()
    assert not job_keys(redis_client)
    log = server.log()
    assert not [secret for secret in presented if len(secret) >= 12 and secret in log]
    assert secrets["good"] not in log
    check_server_survived(server)
