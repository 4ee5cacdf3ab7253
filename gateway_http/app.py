"""The ASGI application of ``l04 serve``: its routes, and the state one server process holds
(a :class:`ModelGateway` and the key store: connections, nothing else).

Every endpoint answers in its API's shape whatever happens: a :class:`GatewayError` becomes the
status and body of :mod:`gateway_http.errors`; a bug is logged by type and answered as a 502
with E4200 (never a 500 with a traceback, never a dead server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from config.settings import GatewaySettings, load_settings
from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle
from gateway_client.metrics import FleetStateCollector
from gateway_core import keys
from gateway_core.errors import (
    BrokerUnavailable,
    GatewayError,
    JobStoreUnavailable,
    ModelNotFound,
    ProviderFailed,
    UnknownJob,
)
from gateway_core.response import StreamChunk
from gateway_http import anthropic_messages, openai_chat, openai_embeddings, responses_api
from gateway_http.access import AccessMiddleware, Drain
from gateway_http.auth import Authenticator, KeyStore
from gateway_http.batch_routes import BatchService, add_batch_routes
from gateway_http.body import BodyRefused, read_json, validate
from gateway_http.door import (
    Caller,
    ClientGone,
    JobOptions,
    abandon,
    answer_headers,
    check_model,
    check_models,
    hold_idempotency_key,
    job_options,
    unless_gone,
    wait_for_answer,
)
from gateway_http.errors import Dialect, HttpError, request_error
from gateway_http.metrics_endpoint import fleet_registry, metrics_response
from gateway_http.models import model_list, model_object
from gateway_http.openapi import document, error_responses, operation
from gateway_http.sse import EventStreamResponse
from gateway_http.tracing import TraceContextMiddleware

log = logging.getLogger("l04.http")

#: Past a request's deadline and the worker's grace, how long the door still waits on Redis.
STORE_SLACK_S = 3.0
#: At shutdown, how long the requests cut by the drain's end get to finish (Drain.settle).
SETTLE_S = 5.0


class Door:
    """What one server process holds: connections, no state of its own."""

    def __init__(
        self, settings: GatewaySettings, gateway: ModelGateway, auth: Authenticator, drain: Drain
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.auth = auth
        self.drain = drain
        # How long an Idempotency-Key's request is remembered: as long as its answer is.
        self.ttl = settings.result_ttl + settings.http_timeout + settings.deadline_grace
        self.fleet_metrics = fleet_registry(
            FleetStateCollector(
                settings.redis_url,
                settings.effective_broker_url,
                sorted(gateway.catalog.providers),
                settings.sentinel,
            )
        )


def _error(error: HttpError, dialect: Dialect, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        error.body(dialect),
        status_code=error.status,
        headers={**(headers or {}), **error.headers()},
    )


def _note(request: Request, endpoint: str, caller: Caller | None = None) -> None:
    """What the access log and the request metrics say of this request."""
    request.scope["l04.endpoint"] = endpoint
    if caller is not None:
        request.scope["l04.key_id"] = caller.label


async def _guarded(
    request: Request,
    dialect: Dialect,
    handler: Callable[[], Awaitable[Response]],
) -> Response:
    try:
        return await handler()
    except BodyRefused as refused:
        return _error(refused.error, dialect)
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    except GatewayError as error:
        return _error(HttpError.of(error), dialect, _ids(request))
    except Exception as exc:
        log.exception("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__)
        bug = ProviderFailed(f"internal error in the HTTP server ({type(exc).__name__})")
        return _error(HttpError.of(bug), dialect, _ids(request))


def _ids(request: Request) -> dict[str, str]:
    """The request's and its job's ids, on an error as on an answer (when they were made)."""
    ids = {}
    if "l04.request_id" in request.scope:
        ids["x-request-id"] = request.scope["l04.request_id"]
    if "l04.job_id" in request.scope:
        ids["x-l04-job-id"] = request.scope["l04.job_id"]
    return ids


def _ends(door: Door, options: JobOptions) -> float:
    """When the request must have its answer by, on the loop's clock: its deadline, the grace
    the worker has to report, and a little more; past it the job store is not answering (a
    frozen Redis), and the client gets 503 E4407 instead of waiting on."""
    slack = door.settings.deadline_grace + STORE_SLACK_S
    return asyncio.get_running_loop().time() + options.timeout + slack


def _unanswered() -> JobStoreUnavailable:
    return JobStoreUnavailable(
        "the job store did not answer before the request's deadline", details={"retry_after": 1}
    )


def _lost(error: GatewayError) -> GatewayError:
    """A job this request just made that the store no longer knows was lost with Redis's data
    (a restart without persistence): retryable, not the 404 of a lookup by id."""
    if isinstance(error, UnknownJob):
        return JobStoreUnavailable(
            "the job's record is gone (Redis lost its data?): send the request again",
            details={"retry_after": 1},
        )
    return error


async def _inference(
    request: Request,
    door: Door,
    dialect: Dialect,
    endpoint: str,
) -> Response:
    _note(request, endpoint)
    caller = await door.auth.caller(request)
    _note(request, endpoint, caller)
    data = await read_json(request, door.settings.http_max_body)
    if dialect == "openai":
        chat = validate(openai_chat.ChatCompletionBody, data)
        options = job_options(request, caller, chat.service_tier, door.settings.http_timeout)
        job = openai_chat.to_request(chat, caller, options)
        stream = bool(chat.stream)
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        tier = chat.service_tier
    else:
        messages = validate(anthropic_messages.MessagesBody, data)
        options = job_options(request, caller, messages.service_tier, door.settings.http_timeout)
        job = anthropic_messages.to_request(messages, caller, options)
        stream = bool(messages.stream)
        include_usage, tier = False, None
    check_models(caller, door.gateway.catalog, job)
    ends = _ends(door, options)
    try:
        async with asyncio.timeout_at(ends):
            await hold_idempotency_key(door.gateway.redis, options, endpoint, data, door.ttl)
            handle = await door.gateway.submit(
                job, options.job_id, stream=stream, key_id=caller.key_id
            )
            request.scope["l04.job_id"] = handle.job_id
            if stream:
                return await _stream(request, handle, options, dialect, include_usage, ends)
            response, headers = await wait_for_answer(
                handle, handle.result(), options, request.receive
            )
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    except TimeoutError:
        raise _unanswered() from None
    except GatewayError as error:
        raise _lost(error) from None
    body = (
        openai_chat.completion_object(response, tier)
        if dialect == "openai"
        else anthropic_messages.message_object(response)
    )
    return JSONResponse(body, headers=headers)


async def _embeddings(request: Request, door: Door) -> Response:
    _note(request, "/v1/embeddings")
    caller = await door.auth.caller(request)
    _note(request, "/v1/embeddings", caller)
    data = await read_json(request, door.settings.http_max_body)
    body = validate(openai_embeddings.EmbeddingsBody, data)
    options = job_options(request, caller, None, door.settings.http_timeout)
    embedding = openai_embeddings.to_request(body, caller, options)
    check_model(caller, door.gateway.catalog, embedding.model_id)
    try:
        async with asyncio.timeout_at(_ends(door, options)):
            await hold_idempotency_key(
                door.gateway.redis, options, "/v1/embeddings", data, door.ttl
            )
            job = await door.gateway.embed(embedding, options.job_id, key_id=caller.key_id)
            request.scope["l04.job_id"] = job.job_id
            response, headers = await wait_for_answer(
                job.handle, job.result(), options, request.receive
            )
    except ClientGone:
        return Response(status_code=499)
    except TimeoutError:
        raise _unanswered() from None
    except GatewayError as error:
        raise _lost(error) from None
    return JSONResponse(
        openai_embeddings.embeddings_object(response, body.encoding_format), headers=headers
    )


async def _stream(
    request: Request,
    handle: JobHandle,
    options: JobOptions,
    dialect: Dialect,
    include_usage: bool,
    ends: float,
) -> Response:
    """Wait for the job's first event, then stream. An error before it is a plain HTTP error
    (the SDKs raise their exception classes on it); one after it is an SSE error event."""
    chunks = handle.stream()
    try:
        first = await unless_gone(chunks.__anext__(), request.receive)
    except ClientGone:
        await chunks.aclose()
        await abandon(handle, options)
        return Response(status_code=499)
    except BaseException:
        await chunks.aclose()
        raise
    headers = await answer_headers(handle, options, first.response if first.is_final else None)
    model = headers.get("x-l04-model", "")

    async def events() -> AsyncIterator[bytes]:
        writer: Any = (
            openai_chat.ChunkStream(handle.job_id, model, include_usage)
            if dialect == "openai"
            else anthropic_messages.EventStream(handle.job_id, model)
        )
        yield writer.start()
        chunk: StreamChunk = first
        try:
            while True:
                if chunk.is_final:
                    assert chunk.response is not None
                    if chunk.content_delta and chunk.sequence == 0:
                        yield writer.text(chunk.content_delta)
                    yield writer.end(chunk.response)
                    return
                if chunk.content_delta:
                    yield writer.text(chunk.content_delta)
                async with asyncio.timeout_at(ends):
                    chunk = await chunks.__anext__()
        except GatewayError as error:
            yield HttpError.of(_lost(error)).sse(dialect)
        except TimeoutError:
            yield HttpError.of(_unanswered()).sse(dialect)
        except StopAsyncIteration:
            return
        finally:
            await chunks.aclose()

    cut = HttpError.of(
        BrokerUnavailable("the server shut down before the stream ended; retry on another")
    ).sse(dialect)
    return EventStreamResponse(
        events(), headers, on_disconnect=lambda: abandon(handle, options), on_cut=cut
    )


def create_app(
    settings: GatewaySettings | None = None,
    *,
    key_store: Callable[[ModelGateway], KeyStore] | None = None,
    drain: Drain | None = None,
) -> FastAPI:
    """The application. ``key_store`` None serves without authentication (``--no-auth``)."""
    settings = settings or load_settings()
    drain = drain or Drain()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = ModelGateway(settings)
        auth = Authenticator(key_store(gateway) if key_store is not None else None)
        state["door"] = Door(settings, gateway, auth, drain)
        state["batches"] = BatchService(settings, gateway)  # the Batch API's store and driver
        state["batches"].start()
        try:
            yield
        finally:
            await drain.settle(SETTLE_S)  # requests cut by the drain's end finish with the gateway
            await state["batches"].stop()
            await gateway.close()

    app = FastAPI(
        title="L04 Model Gateway",
        version="0.1.0",
        summary="OpenAI- and Anthropic-compatible APIs over a durable, queue-driven LLM fleet",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(AccessMiddleware, drain=drain)
    app.add_middleware(TraceContextMiddleware)  # outermost: the access log is in the trace
    app.openapi = lambda: document(app)  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def not_served(request: Request, exc: StarletteHTTPException) -> Response:
        """A path or a method the door does not serve (404, 405), in its API's error shape
        rather than FastAPI's ``{"detail": ...}``."""
        dialect: Dialect = "anthropic" if request.url.path == "/v1/messages" else "openai"
        where = f"{request.method} {request.url.path[:200]}"
        message = {
            404: f"no such endpoint: {where}",
            405: f"method not allowed: {where}",
        }.get(exc.status_code, f"{where}: {exc.detail}")
        return _error(request_error(exc.status_code, message), dialect, dict(exc.headers or {}))

    def door() -> Door:
        door: Door = state["door"]
        return door

    # The Files and Batch APIs (gateway_http/batch_routes.py).
    add_batch_routes(app, door, lambda: state["batches"], _guarded)

    @app.post(
        "/v1/chat/completions",
        tags=["OpenAI"],
        summary="Create a chat completion (OpenAI Chat Completions API)",
        openapi_extra=operation(openai_chat.ChatCompletionBody, "openai", streams=True),
    )
    async def chat_completions(request: Request) -> Response:
        return await _guarded(
            request, "openai", lambda: _inference(request, door(), "openai", "/v1/chat/completions")
        )

    @app.post(
        "/v1/messages",
        tags=["Anthropic"],
        summary="Create a message (Anthropic Messages API)",
        openapi_extra=operation(anthropic_messages.MessagesBody, "anthropic", streams=True),
    )
    async def messages(request: Request) -> Response:
        return await _guarded(
            request, "anthropic", lambda: _inference(request, door(), "anthropic", "/v1/messages")
        )

    @app.post(
        "/v1/embeddings",
        tags=["OpenAI"],
        summary="Create embeddings (OpenAI Embeddings API), as jobs on the fleet",
        openapi_extra=operation(openai_embeddings.EmbeddingsBody, "openai", streams=False),
    )
    async def embeddings(request: Request) -> Response:
        return await _guarded(request, "openai", lambda: _embeddings(request, door()))

    # OpenAI's Responses API and background mode (issue 16): its own module's routes.
    responses_api.register(app, door, _guarded, _note)

    @app.get(
        "/v1/models",
        tags=["OpenAI"],
        summary="List the catalog's models (a key limited to some models sees those)",
        responses=error_responses("openai", only=(401, 503)),
    )
    async def list_models(request: Request) -> Response:
        async def handler() -> Response:
            caller = await door().auth.caller(request)
            _note(request, "/v1/models", caller)
            return JSONResponse(model_list(door().gateway.catalog, caller.models))

        return await _guarded(request, "openai", handler)

    @app.get(
        "/v1/models/{model:path}",
        tags=["OpenAI"],
        summary="One model of the catalog, by id or alias",
        responses=error_responses("openai", only=(401, 404, 503)),
    )
    async def get_model(request: Request, model: str) -> Response:
        async def handler() -> Response:
            caller = await door().auth.caller(request)
            _note(request, "/v1/models/{model}", caller)
            if not model:
                raise ModelNotFound("no model id in the path: GET /v1/models/{model}")
            spec = door().gateway.catalog.resolve(model)
            if caller.models and spec.model_id not in caller.models:
                raise ModelNotFound(f"model {model!r} is not in the catalog")  # not for this key
            return JSONResponse(model_object(spec))

        return await _guarded(request, "openai", handler)

    @app.get("/health", tags=["Operations"], summary="Liveness: the process answers")
    async def health(request: Request) -> Response:
        _note(request, "/health")
        return JSONResponse({"status": "ok"})

    @app.get("/ready", tags=["Operations"], summary="Readiness: Redis answers, a worker serves")
    async def ready(request: Request) -> Response:
        _note(request, "/ready")
        return await _readiness(door())

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics of this server")
    async def prometheus(request: Request) -> Response:
        _note(request, "/metrics")
        return await run_in_threadpool(metrics_response, door().fleet_metrics)

    return app


async def _readiness(door: Door) -> Response:
    """Ready when Redis answers and at least one worker has reported on some queue lately."""
    if door.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    redis = door.gateway.redis
    providers = sorted(door.gateway.catalog.providers)
    try:
        started = time.monotonic()
        alive = await redis.exists(*[keys.provider_health(p) for p in providers])
        ping_ms = round((time.monotonic() - started) * 1000, 3)
    except Exception as exc:
        return JSONResponse(
            {"status": "not ready", "redis": False, "error": type(exc).__name__}, status_code=503
        )
    if not alive:
        return JSONResponse(
            {"status": "not ready", "redis": True, "workers": 0, "why": "no worker on any queue"},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "redis": True, "redis_ms": ping_ms})
