"""What every service's HTTP app shares: problem+json errors, a body size limit,
request metrics, and the ``/healthz`` and ``/metrics`` routes.

Every error is answered as RFC 9457 problem+json: a :class:`ProblemError` as itself, a
validation error as 422, a body that cannot be parsed as 400, and anything unexpected as
500 ``/problems/internal``, logged with its traceback and never showing it to the client
(:func:`install_problem_handlers`, every service). A service with a job store adds
:func:`install_store_problem_handlers`: the store out of reach as 503 with
``Retry-After``, a value the store refuses (SQLSTATE class 22) as 422.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transcription_core.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ProblemError,
    ServiceUnavailable,
)

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "transcription_http_requests_total",
    "HTTP requests served, by service, route and status code.",
    ["service", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "transcription_http_request_duration_seconds",
    "HTTP request latency, by service and route.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(problem),
        status_code=problem["status"],
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error as RFC 9457 problem+json; no client mistake becomes a 500."""

    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> Response:
        return problem_response(exc.problem(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": _field_name(tuple(err.get("loc", ()))), "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        malformed = any(err.get("type") == "json_invalid" for err in exc.errors())
        return problem_response(
            {
                "type": "/problems/validation",
                "title": "Unprocessable Content",
                "status": 422,
                "detail": "the body is not valid JSON" if malformed else "the request is invalid",
                "errors": errors,
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's JSON body parse
            detail = "the body is not valid UTF-8"
        elif isinstance(exc.__cause__, RecursionError):
            detail = "the body is nested too deeply to parse"
        return problem_response(
            {
                "type": _HTTP_PROBLEM_TYPES.get(exc.status_code, "/problems/http"),
                "title": _phrase(exc.status_code),
                "status": exc.status_code,
                "detail": detail,
            },
            dict(exc.headers or {}),
        )

    app.add_middleware(InternalErrors)


def install_store_problem_handlers(app: FastAPI) -> None:
    """The job store's errors as problems: out of reach (a driver or connection error) is
    503 with ``Retry-After``, a value it refuses is 422. Only for a service with a store."""

    @app.exception_handler(DBAPIError)
    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    # asyncpg's answer when a pooled connection the server just terminated is used
    # before its close is processed ("cannot switch to state ...").
    @app.exception_handler(asyncpg.InternalClientError)
    @app.exception_handler(OSError)
    async def _store_error(_request: Request, exc: Exception) -> Response:
        if _refused_value(exc):
            log.warning("the job store refused a value: %s", exc, extra={"action": "bad_value"})
            problem = InvalidRequest(f"the request holds a value that cannot be stored: {exc}")
            return problem_response(problem.problem())
        log.error("job store unavailable: %s", exc)
        down = ServiceUnavailable("the job store is unavailable; retry shortly")
        return problem_response(down.problem(), {"Retry-After": "5"})


#: Problem types of the errors Starlette and FastAPI raise themselves.
_HTTP_PROBLEM_TYPES = {
    400: "/problems/malformed-body",
    404: "/problems/not-found",
    405: "/problems/method-not-allowed",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _refused_value(exc: BaseException) -> bool:
    """Whether the store refused a value of the request rather than being out of reach:
    SQLSTATE class 22 (data exception: NUL in text, NaN in jsonb...), or an argument the
    driver cannot encode (a ``ValueError``, such as asyncpg's ``DataError``)."""
    for error in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if error is None:
            continue
        if str(getattr(error, "sqlstate", "") or "").startswith("22"):
            return True
        if isinstance(error, ValueError):
            return True
    return False


class InternalErrors:
    """Answer an exception no handler took as 500 problem+json, logged with its traceback.

    Pure ASGI, inside Starlette's ``ServerErrorMiddleware``: the exception stops here (one
    log line with the traceback, not two). If the response had already started, there is
    nothing to answer: the exception goes on and the server closes the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "%s %s failed: %s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                exc_info=exc,
                extra={"action": "internal_error"},
            )
            if started:
                raise
            problem = {
                "type": "/problems/internal",
                "title": "Internal Server Error",
                "status": 500,
                "detail": f"the request failed unexpectedly ({type(exc).__name__}); "
                "it has been logged",
            }
            await problem_response(problem)(scope, receive, send)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413.

    A declared Content-Length is checked up front (the server enforces it); a body
    without one (chunked) is read first, up to the limit, then handed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._drain(receive)
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    async def _drain(self, receive: Receive, most: int = 1 << 20) -> None:
        """Read (and drop) what the client is still sending, so it can read our 413."""
        drained = 0
        while drained < most:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _refuse(self, send: Send) -> None:
        problem = PayloadTooLarge(f"the request body is over {self.max_bytes} bytes").problem()
        body = json.dumps(problem).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class RequestMetrics:
    """Count requests and time them by route template (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(self.service, route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, route).observe(time.perf_counter() - started)


def install_common_routes(
    app: FastAPI, service: str, ready: Callable[[], Awaitable[bool]] | None = None
) -> None:
    """``/healthz``, ``/readyz`` (``ready`` decides) and ``/metrics``, plus request metrics."""

    app.add_middleware(RequestMetrics, service=service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        # Naming the service lets a caller tell this server from another on the port.
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if ready is None or await ready():
            return JSONResponse({"status": "ready", "service": service})
        return JSONResponse({"status": "not ready", "service": service}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
