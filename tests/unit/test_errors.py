"""The error tree: one class per condition under the category callers catch, one table of codes."""

from __future__ import annotations

import ast
import inspect
import pickle
import re
from pathlib import Path

import pytest

import gateway_client
from gateway_client import (
    ERROR_CODES,
    AllModelsUnavailable,
    BrokerUnavailable,
    CacheError,
    CacheUnavailable,
    CapabilityNotSupported,
    CircuitBreakerError,
    CircuitOpen,
    ConfigurationError,
    ContextLengthExceeded,
    DeadlineExceeded,
    EmbeddingFailed,
    GatewayError,
    InvalidCatalog,
    InvalidMessages,
    InvalidParameters,
    InvalidRequest,
    InvalidSetting,
    JobCancelled,
    JobError,
    JobLost,
    JobStoreUnavailable,
    KeyRefused,
    MalformedResponse,
    ModelDisabled,
    ModelNotAllowed,
    ModelNotFound,
    NoSuitableModel,
    ProviderAuthFailed,
    ProviderError,
    ProviderFailed,
    ProviderNotConfigured,
    ProviderRejected,
    ProviderTimeout,
    QueueFull,
    QuotaExhausted,
    RateLimited,
    RateLimitError,
    RecoveryFailed,
    ResidencyNotSatisfiable,
    ResponseError,
    RoutingError,
    StreamInterrupted,
    UnknownJob,
    UnreadableJobMessage,
    ValidationError,
    error_from_payload,
)
from gateway_core import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway_core", "config", "tasks", "gateway_client", "workers", "gateway_http", "l04")

CATEGORIES = (
    ConfigurationError,
    RoutingError,
    ProviderError,
    CacheError,
    RateLimitError,
    JobError,
    ValidationError,
    ResponseError,
    CircuitBreakerError,
)

# Written out, not derived: moving a code to another class must fail here first.
TREE: dict[str, tuple[type[GatewayError], type[GatewayError]]] = {
    "E4000": (ConfigurationError, ConfigurationError),
    "E4001": (ConfigurationError, ModelNotFound),
    "E4002": (ConfigurationError, ProviderNotConfigured),
    "E4003": (ConfigurationError, InvalidCatalog),
    "E4004": (ConfigurationError, InvalidSetting),
    "E4005": (ConfigurationError, ModelDisabled),
    "E4100": (RoutingError, NoSuitableModel),
    "E4101": (RoutingError, CapabilityNotSupported),
    "E4102": (RoutingError, AllModelsUnavailable),
    "E4103": (RoutingError, ContextLengthExceeded),
    "E4104": (RoutingError, ResidencyNotSatisfiable),
    "E4200": (ProviderError, ProviderFailed),
    "E4201": (ProviderError, ProviderRejected),
    "E4202": (ProviderError, ProviderTimeout),
    "E4203": (ProviderError, ProviderAuthFailed),
    "E4205": (JobError, DeadlineExceeded),
    "E4206": (JobError, JobLost),
    "E4300": (CacheError, CacheUnavailable),
    "E4301": (CacheError, EmbeddingFailed),
    "E4400": (RateLimitError, BrokerUnavailable),
    "E4401": (RateLimitError, RateLimited),
    "E4402": (RateLimitError, QuotaExhausted),
    "E4403": (RateLimitError, QueueFull),
    "E4404": (JobError, DeadlineExceeded),
    "E4405": (JobError, JobCancelled),
    "E4406": (JobError, UnknownJob),
    "E4407": (RateLimitError, JobStoreUnavailable),
    "E4408": (RateLimitError, KeyRefused),
    "E4409": (RateLimitError, ModelNotAllowed),
    "E4500": (ValidationError, InvalidRequest),
    "E4501": (ValidationError, InvalidMessages),
    "E4502": (ValidationError, InvalidParameters),
    "E4503": (ValidationError, UnreadableJobMessage),
    "E4600": (ResponseError, MalformedResponse),
    "E4604": (ResponseError, StreamInterrupted),
    "E4701": (CircuitBreakerError, CircuitOpen),
    "E4702": (CircuitBreakerError, RecoveryFailed),
}
JOB_OUTCOMES = ("E4404", "E4205", "E4405", "E4406", "E4206")
RESERVED = {"E4000", "E4702"}


def test_the_table_is_the_tree() -> None:
    assert set(ERROR_CODES) == set(TREE)
    for code, (category, condition) in TREE.items():
        spec = ERROR_CODES[code]
        assert spec.code == code
        assert spec.error_class is condition, code
        assert issubclass(condition, category) and issubclass(category, GatewayError)
        assert [c for c in CATEGORIES if issubclass(condition, c)] == [category], code
    assert {code for code, spec in ERROR_CODES.items() if spec.reserved} == RESERVED


def test_each_condition_has_one_code_but_the_deadline() -> None:
    for condition in {spec.error_class for spec in ERROR_CODES.values()} - set(CATEGORIES):
        assert condition.default_code is not None or condition is DeadlineExceeded
    assert DeadlineExceeded.codes() == {"E4404", "E4205"}
    assert JobError.codes() == set(JOB_OUTCOMES)
    assert RateLimitError.codes() == {"E4400", "E4401", "E4402", "E4403", "E4407", "E4408", "E4409"}
    assert ProviderError.codes() == {"E4200", "E4201", "E4202", "E4203"}


def test_the_docstring_draws_every_class_with_its_codes() -> None:
    doc = errors.__doc__ or ""
    for category in CATEGORIES:
        assert re.search(rf"^    [│├└─ ]*{category.__name__}\b", doc, re.M), category
    for code, spec in ERROR_CODES.items():
        name = spec.error_class.__name__
        line = next((ln for ln in doc.splitlines() if re.search(rf"─ {name}\s", ln)), "")
        assert code in line, (code, name)


def test_every_error_class_is_exported() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, GatewayError)
    }
    assert defined <= set(gateway_client.__all__)
    for name in defined:
        assert getattr(gateway_client, name) is getattr(errors, name)


def _raises(error: GatewayError, caught: type[BaseException]) -> bool:
    try:
        raise error
    except caught:
        return True
    except GatewayError:
        return False


def test_except_rate_limit_error_no_longer_catches_job_outcomes() -> None:
    for code in JOB_OUTCOMES:
        error = error_from_payload({"code": code, "message": "m"})
        assert _raises(error, JobError), code
        assert not _raises(error, RateLimitError), code
        assert not _raises(error, ProviderError), code
    assert not _raises(JobCancelled("cancelled"), RateLimitError)
    assert not _raises(DeadlineExceeded("late", code="E4205"), ProviderError)
    assert _raises(QueueFull("full"), RateLimitError)
    assert _raises(JobStoreUnavailable(), RateLimitError)


def test_a_deadline_says_whether_the_job_had_started() -> None:
    queued = error_from_payload({"code": "E4404", "message": "m"})
    running = error_from_payload({"code": "E4205", "message": "m"})
    assert type(queued) is type(running) is DeadlineExceeded
    assert (queued.started, running.started) == (False, True)
    assert not queued.retryable and not running.retryable


@pytest.mark.parametrize("code", sorted(TREE))
def test_every_code_round_trips_to_its_condition_class(code: str) -> None:
    spec = ERROR_CODES[code]
    payload = {"code": code, "message": "m", "retryable": not spec.retryable, "details": {"a": 1}}
    error = error_from_payload(payload)
    assert type(error) is TREE[code][1]
    assert error.to_payload() == payload
    assert error_from_payload(error.to_payload()).to_payload() == payload
    unpickled = pickle.loads(pickle.dumps(error))
    assert type(unpickled) is type(error) and unpickled.to_payload() == payload
    # The table's defaults, when the payload leaves them out.
    bare = error_from_payload({"code": code})
    assert (bare.message, bare.retryable, bare.details) == (spec.title, spec.retryable, {})
    assert bare.title == spec.title


def test_unknown_or_missing_codes_become_E4200_keeping_the_code() -> None:
    newer = error_from_payload({"code": "E4999", "message": "from a newer worker"})
    assert type(newer) is ProviderFailed and newer.code == "E4200"
    assert newer.message == "from a newer worker"
    assert newer.details == {"unknown_code": "E4999"}
    assert error_from_payload({}).code == "E4200"
    for bad in ("E4999", "E42", "4200", ""):
        with pytest.raises(ValueError):
            GatewayError("m", code=bad or "nope")


def test_a_category_with_a_code_builds_the_condition() -> None:
    full = RateLimitError("slow down", code="E4403", details={"retry_after": 1})
    assert type(full) is QueueFull and full.retryable and full.retry_after == 1.0
    assert str(full) == "[E4403] slow down"
    assert type(GatewayError("gone", code="E4405")) is JobCancelled
    assert type(JobError(code="E4404")) is DeadlineExceeded
    assert type(ConfigurationError("bad", code="E4004")) is InvalidSetting
    # Without a code: the category's default, as the class of that code.
    assert type(RateLimitError("slow down")) is RateLimited
    assert type(ProviderError()) is ProviderFailed
    assert type(GatewayError("?")) is GatewayError and GatewayError("?").code == "E4000"


def test_each_condition_class_defaults_to_its_code() -> None:
    for category in CATEGORIES:  # (a bare GatewayError: test_a_bare_gateway_error_stays_one)
        if category.default_code is not None:
            error = category()
            assert error.code == category.default_code
            assert type(error) is ERROR_CODES[category.default_code].error_class
    for code, (_, condition) in TREE.items():
        if condition.default_code is None:
            continue
        error = condition()
        assert (type(error), error.code, error.message) == (
            condition,
            code,
            ERROR_CODES[code].title,
        )
        assert condition("m", retryable=True).retryable is True


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (RateLimitError, "E4405"),  # a cancellation is no rate limit any more
        (RateLimitError, "E4404"),
        (RateLimitError, "E4406"),
        (ProviderError, "E4205"),  # nor a deadline or a lost job a provider failure
        (ProviderError, "E4206"),
        (ProviderError, "E4401"),
        (JobError, "E4403"),
        (QueueFull, "E4401"),  # a condition takes its own code only
        (DeadlineExceeded, "E4405"),
        (ValidationError, "E4001"),
    ],
)
def test_a_code_of_another_branch_is_refused(cls: type[GatewayError], code: str) -> None:
    with pytest.raises(ValueError, match=f"{code} does not belong to {cls.__name__}"):
        cls("m", code=code)


def test_classes_of_several_codes_need_one_named() -> None:
    with pytest.raises(ValueError, match="DeadlineExceeded needs a code: one of E4205, E4404"):
        DeadlineExceeded("late")
    with pytest.raises(ValueError, match="JobError needs a code"):
        JobError("what happened?")


def test_a_callers_own_subclass_keeps_its_class() -> None:
    class Busy(QueueFull):
        pass

    error = Busy("busy")
    assert type(error) is Busy and error.code == "E4403" and isinstance(error, RateLimitError)
    assert type(pickle.loads(pickle.dumps(error))) is QueueFull  # the wire knows the code only


# -- every code is raised or written somewhere, or reserved ---------------------------------------


def _not_producing(tree: ast.AST) -> set[int]:
    """Nodes that only test for a code or a class: comparisons, isinstance, except, annotations."""
    parts: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts.append(node)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "isinstance",
            "issubclass",
        ):
            parts.extend(node.args[1:])
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            parts.append(node.type)
        elif isinstance(node, ast.AnnAssign):
            parts.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = ast.walk(node.args)
            parts.extend(a.annotation for a in arguments if isinstance(a, ast.arg) and a.annotation)
            if node.returns is not None:
                parts.append(node.returns)
    return {id(inner) for part in parts for inner in ast.walk(part)}


def _codes_in_source() -> dict[str, list[str]]:
    """Where each code is produced: a string constant of the code, a condition class of one code
    used as a value (raised, built, chosen), or a quoted code in a Lua script. Tests for a code or
    a class (comparisons, isinstance, except clauses, annotations) and errors.py do not count.
    """
    found: dict[str, list[str]] = {}
    single = {
        spec.error_class.__name__: code
        for code, spec in ERROR_CODES.items()
        if spec.error_class.default_code == code
    }
    # errors.py's helpers (``unknown_job``) count as the class they return.
    for name, function in inspect.getmembers(errors, inspect.isfunction):
        returned = function.__annotations__.get("return")
        if returned in single:
            single[name] = single[returned]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tables = ("gateway_core/errors.py", "gateway_core/http_status.py")
            if path in {ROOT / table for table in tables}:
                continue  # the table of codes, and the HTTP status of each: they produce none
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skip = _not_producing(tree)
            where = str(path.relative_to(ROOT))
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                code = None
                if isinstance(node, ast.Constant) and node.value in ERROR_CODES:
                    code = str(node.value)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    code = single.get(node.id)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    code = single.get(node.attr)
                if code is not None:
                    found.setdefault(code, []).append(f"{where}:{node.lineno}")
        for path in sorted((ROOT / package).rglob("*.lua")):
            for match in re.finditer(r"""['"](E4\d{3})['"]""", path.read_text(encoding="utf-8")):
                found.setdefault(match.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_code_is_raised_or_written_somewhere_or_reserved() -> None:
    found = _codes_in_source()
    for code, spec in ERROR_CODES.items():
        if spec.reserved:
            assert code not in found, f"{code} is marked reserved but produced at {found[code]}"
        else:
            assert code in found, f"nothing raises or writes {code}: mark it reserved"
    # The codes written only by Lua scripts are there.
    assert any(p.endswith("job_claim.lua") for p in found["E4206"])
    assert any(p.endswith(".lua") for p in found["E4404"])


def test_a_callers_own_subclass_of_a_category_builds_with_its_codes() -> None:
    class Throttled(RateLimitError):
        pass

    plain = Throttled("slow down")
    assert type(plain) is Throttled and plain.code == "E4401"
    full = Throttled("queue", code="E4403")
    assert type(full) is Throttled and full.code == "E4403"
    with pytest.raises(ValueError):
        Throttled("no", code="E4405")  # a job outcome is no rate limit


def test_a_bare_gateway_error_stays_one() -> None:
    error = GatewayError("something")
    assert type(error) is GatewayError and error.code == "E4000"
    assert not isinstance(error, ConfigurationError)
