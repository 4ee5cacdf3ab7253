"""The routes of the Files and Batch APIs, and what a server holds for them (the file store
and its batch driver's task), added to the application by :func:`add_batch_routes`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config.settings import GatewaySettings
from gateway_client.batch.files import FileStore
from gateway_client.batch.store import BatchStore
from gateway_client.gateway import ModelGateway
from gateway_http import batches, files
from gateway_http.batch_driver import BatchDriver
from gateway_http.batch_kinds import BATCH_KINDS
from gateway_http.body import read_json, validate
from gateway_http.errors import Dialect
from gateway_http.openapi import error_responses

#: The OpenAPI tag of these endpoints (their bodies make no job: the fuzz tests of the
#: inference endpoints leave them out; tests/fleet/test_http_batches.py sends them bad input).
TAG = "OpenAI Batch"
UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": ["batch"]},
    },
}

Guarded = Callable[[Request, Dialect, Callable[[], Awaitable[Response]]], Awaitable[Response]]


class BatchService:
    """One server's part of the Batch API: the file store and the batch driver's loop."""

    def __init__(self, settings: GatewaySettings, gateway: ModelGateway) -> None:
        self.settings = settings
        self.files = FileStore(
            gateway.redis,
            max_total=settings.files_max_bytes,
            max_file=settings.file_max_bytes,
            ttl_s=settings.files_ttl,
        )
        self.store = BatchStore(gateway.redis)
        self.driver = BatchDriver(
            gateway,
            self.files,
            BATCH_KINDS,
            lease_s=settings.batch_lease_s,
            window=settings.batch_window,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.driver.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def add_batch_routes(
    app: FastAPI, door: Callable[[], Any], service: Callable[[], BatchService], guarded: Guarded
) -> None:
    """``door()``: the server's Door (its authenticator and settings)."""

    def route(handler: Callable[[Request, Any], Awaitable[Response]], endpoint: str) -> Any:
        async def endpoint_handler(request: Request) -> Response:
            async def run() -> Response:
                request.scope["l04.endpoint"] = endpoint
                caller = await door().auth.caller(request)
                request.scope["l04.key_id"] = caller.label
                return await handler(request, caller)

            return await guarded(request, "openai", run)

        return endpoint_handler

    only = error_responses("openai", only=(400, 401, 404, 413, 503))

    async def upload(request: Request, caller: Any) -> Response:
        return await files.upload(request, caller, service().files)

    async def list_files(request: Request, caller: Any) -> Response:
        return await files.listing(request, caller, service().files)

    async def get_file(request: Request, caller: Any) -> Response:
        return await files.retrieve(caller, service().files, request.path_params["file_id"])

    async def file_content(request: Request, caller: Any) -> Response:
        return await files.content(caller, service().files, request.path_params["file_id"])

    async def delete_file(request: Request, caller: Any) -> Response:
        return await files.delete(caller, service().files, request.path_params["file_id"])

    async def create_batch(request: Request, caller: Any) -> Response:
        data = await read_json(request, door().settings.http_max_body)
        body = validate(batches.BatchBody, data)
        s = service()
        answer = await batches.create(body, caller, s.files, s.store, BATCH_KINDS, s.settings)
        s.driver.wake()
        return answer

    async def get_batch(request: Request, caller: Any) -> Response:
        info = await batches.find(service().store, caller, request.path_params["batch_id"])
        return JSONResponse(batches.batch_object(info))

    async def cancel_batch(request: Request, caller: Any) -> Response:
        return await batches.cancel(service().store, caller, request.path_params["batch_id"])

    async def list_batches(request: Request, caller: Any) -> Response:
        return await batches.listing(request, service().store, caller)

    table = [
        ("POST", "/v1/files", upload, "Upload a file (purpose=batch)"),
        ("GET", "/v1/files", list_files, "List this key's files"),
        ("GET", "/v1/files/{file_id}", get_file, "A file's object"),
        ("GET", "/v1/files/{file_id}/content", file_content, "A file's content"),
        ("DELETE", "/v1/files/{file_id}", delete_file, "Delete a file"),
        ("POST", "/v1/batches", create_batch, "Create a batch, driven by the fleet"),
        ("GET", "/v1/batches", list_batches, "List this key's batches"),
        ("GET", "/v1/batches/{batch_id}", get_batch, "A batch's object"),
        ("POST", "/v1/batches/{batch_id}/cancel", cancel_batch, "Cancel a batch"),
    ]
    bodies: dict[str, dict[str, Any]] = {
        "/v1/files": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}},
        "/v1/batches": {"application/json": {"schema": batches.BatchBody.model_json_schema()}},
    }
    for method, path, handler, summary in table:
        extra = None
        if method == "POST" and path in bodies:
            extra = {"requestBody": {"required": True, "content": bodies[path]}}
        app.add_api_route(
            path,
            route(handler, path),
            methods=[method],
            tags=[TAG],
            summary=summary,
            responses=only,
            openapi_extra=extra,
        )
