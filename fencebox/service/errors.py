"""HTTP errors of the service and the handlers that turn every failure into a JSON answer.

The body is ``{"error": "<message>", "code": "<kind>"}``: a string ``error`` is what the Open
Inference Protocol (and tritonclient) expects, and ``code`` names the kind for programs.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fencebox.errors import (
    Cancelled,
    ConfigError,
    DataError,
    FenceboxError,
    InputError,
    ModelError,
    SpecError,
)
from fencebox.image import ImageTooLarge, UnsupportedImage

log = logging.getLogger("fencebox.service")


class ServiceError(FenceboxError):
    """An error with an HTTP status, a machine-readable code and a message for the client."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    """The request is malformed (400)."""

    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    """No or a wrong API key (401)."""

    status, code = 401, "unauthorized"


class RequestTimeout(ServiceError):
    """The body did not arrive within the route's ``limits.read_timeout_s`` (408)."""

    status, code = 408, "request_timeout"


class Forbidden(ServiceError):
    """The request asks for something the route's configuration does not allow (403)."""

    status, code = 403, "forbidden"


class NotFound(ServiceError):
    """No such model route (404)."""

    status, code = 404, "not_found"


class PayloadTooLarge(ServiceError):
    """The body or image exceeds the route's limits (413)."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """The content type or image format is not accepted (415)."""

    status, code = 415, "unsupported_media_type"


class TooManyRequests(ServiceError):
    """The key's query budget is spent for now (429, with Retry-After)."""

    status, code = 429, "rate_limited"


class UpstreamError(ServiceError):
    """The upstream model server is down or answered something unusable (502)."""

    status, code = 502, "upstream_error"


class Overloaded(ServiceError):
    """The route's queue is full or the backend is not ready (503, with Retry-After)."""

    status, code = 503, "overloaded"


class GatewayTimeout(ServiceError):
    """The upstream or the request deadline ran out (504)."""

    status, code = 504, "timeout"


def retry_after(seconds: float) -> dict[str, str]:
    """A Retry-After header (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def classify(exc: BaseException) -> ServiceError:
    """Map any exception raised while serving to the ServiceError the client sees."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, Cancelled):
        return GatewayTimeout(str(exc))
    if isinstance(exc, ImageTooLarge):
        return PayloadTooLarge(str(exc))
    if isinstance(exc, UnsupportedImage):
        return UnsupportedMediaType(str(exc))
    if isinstance(exc, InputError | SpecError | DataError | ConfigError):
        return BadRequest(str(exc))
    if isinstance(exc, ModelError):
        return ServiceError(f"model error: {exc}")
    if isinstance(exc, FenceboxError):
        return BadRequest(str(exc))
    return ServiceError("internal server error")


def json_error(
    request: Request | None, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The ``{"error", "code"}`` answer every failure gets, noting ``code`` for the error metric."""
    if request is not None:
        request.scope["fencebox.error"] = code
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def error_response(err: ServiceError, request: Request | None = None) -> JSONResponse:
    """The JSON body and headers for ``err`` (noting its code for the error metric).

    A 500 is a bug whose state we cannot vouch for: it closes the connection (``Connection: close``),
    so the client's next request opens a fresh one instead of failing on a dropped keep-alive.
    """
    headers = dict(err.headers)
    if err.status == 500:
        headers["Connection"] = "close"
    return json_error(request, err.status, err.code, err.message, headers)


def install_handlers(app: FastAPI) -> None:
    """Register handlers so that 4xx/5xx of every origin (ours, validation, routing) answer JSON."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(FenceboxError)
    async def _fencebox(request: Request, exc: FenceboxError) -> JSONResponse:
        return error_response(classify(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return json_error(request, 422, "validation_error", "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        code = codes.get(exc.status_code, "http_error")
        return json_error(request, exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(classify(exc), request)
