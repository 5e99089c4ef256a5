"""Domain errors and the one JSON shape every error response takes.

Every error body is `{"error": {"code", "message", "details", "request_id"}}`. Domain code raises
an `AppError` subclass; the handlers here render it. Nothing raises `HTTPException` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.logging import get_logger

log = get_logger(__name__)


class AppError(Exception):
    """Root of every error the API reports on purpose."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(
        self, message: str, *, details: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


class Unauthorized(AppError):
    """Missing, malformed, unknown or revoked API key."""

    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    """The caller's role may not use this endpoint."""

    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    """No such object, or it belongs to another tenant (never said which)."""

    status_code = 404
    code = "not_found"

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found", details={"kind": kind, "id": str(ident)})


class Conflict(AppError):
    """The request clashes with the current state (duplicate, in flight)."""

    status_code = 409
    code = "conflict"


class RequestTimeout(AppError):
    """The request body did not arrive in time."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(AppError):
    """The upload exceeds the configured size limit."""

    status_code = 413
    code = "payload_too_large"


def payload_too_large(max_bytes: int) -> PayloadTooLarge:
    """The one 413 every size check raises, wherever the excess is noticed."""
    return PayloadTooLarge(
        f"the upload exceeds the limit of {max_bytes} bytes", details={"max_bytes": max_bytes}
    )


class TooManyRequests(AppError):
    """A rate limit was hit; `Retry-After` says when to try again."""

    status_code = 429
    code = "rate_limited"


class Unprocessable(AppError):
    """Well-formed request whose content cannot be used (bad audio, bad parameters)."""

    status_code = 422
    code = "unprocessable"


class PaymentRequired(AppError):
    """Going ahead would exceed a spending limit; nothing was done."""

    status_code = 402
    code = "spending_limit"


class ServiceUnavailable(AppError):
    """A dependency (database, index) is not ready."""

    status_code = 503
    code = "unavailable"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The shape of every error response."""

    error: ErrorBody


# Statuses any API route may answer: no or bad key, wrong role, a body too slow, rate limits
# and lockouts, the database unavailable.
EVERY_ROUTE = (401, 403, 408, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for the given statuses."""
    descriptions = {
        400: "Bad request",
        401: "Missing, unknown or revoked API key",
        402: "A spending limit would be exceeded; nothing was charged",
        403: "The caller's role may not do this",
        404: "Not found (or owned by another tenant)",
        409: "Conflict with the current state",
        408: "The request body did not arrive in time",
        413: "Upload too large",
        422: "Validation failed; `details` names the fields",
        429: "Rate limited; `Retry-After` says when to try again",
        503: "Not ready, or the database is unavailable; retry after `Retry-After`",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _render(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details, request_id=_request_id(request))
    return JSONResponse(
        {"error": body.model_dump(mode="json")}, status_code=status, headers=dict(headers or {})
    )


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _render(request, exc.status_code, exc.code, exc.message, exc.details, headers_of(exc))


def headers_of(exc: AppError) -> dict[str, str]:
    """The headers an error response carries."""
    extra = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    return extra | exc.headers


def error_body(exc: AppError, request_id: str | None) -> bytes:
    """The JSON body of an error response (for code that answers outside the handlers)."""
    body = ErrorBody(code=exc.code, message=exc.message, details=exc.details, request_id=request_id)
    return ErrorResponse(error=body).model_dump_json().encode()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    names = ", ".join(f["field"] for f in fields)
    return _render(request, 422, "validation_error", f"invalid request: {names}", fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = codes.get(exc.status_code, "http_error")
    return _render(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


# How long a client should wait after the database went away (it restarts in seconds).
DATABASE_RETRY_AFTER = "5"


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached (restarting, failing over): 503, try again shortly."""
    log.warning("request.database_unavailable", error_type=type(exc).__name__)
    return _render(
        request,
        503,
        "unavailable",
        "the database is unavailable; retry shortly (an Idempotency-Key makes a retry safe)",
        headers={"Retry-After": DATABASE_RETRY_AFTER},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request.unhandled_error", error_type=type(exc).__name__)
    return _render(request, 500, "internal_error", "internal error; quote the request id")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Connection-level failures only: a bad statement (ProgrammingError, DataError) is a bug.
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
