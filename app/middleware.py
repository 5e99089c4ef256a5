"""Pure ASGI middleware (no response buffering): request ids, the request log line, security
headers, body size and time limits, and the gate that authenticates and rate-limits requests
before their bodies are read.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    AppError,
    RequestTimeout,
    TooManyRequests,
    error_body,
    headers_of,
    payload_too_large,
)
from app.limits import InFlight, TokenBuckets, retry_after
from app.logging import get_logger

log = get_logger("app.request")

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Sent with every response. HSTS matters once the service is behind TLS (browsers ignore it
# over plain HTTP); the API's answers are data, never pages, so their policy allows nothing.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


async def send_error(scope: Scope, send: Send, error: AppError, *, close: bool = False) -> None:
    """Answer `error` in the one error shape, from outside the application."""
    body = error_body(error, _state(scope).get("request_id"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers_of(error).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Give every request an id (or keep a safe one the client sent), add the security
    headers to every response, and log one line per request with the caller's organisation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = sent if _SAFE_ID.match(sent) else uuid.uuid4().hex
        _state(scope)["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers.setdefault("Content-Security-Policy", API_CSP)
                # Answers carry tenants' data and, once, API keys: never stored by a cache.
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            # The org is set by authentication, which may run in a worker thread whose
            # context variables do not come back here; the scope's state does.
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                org_id=_state(scope).get("org_id"),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


class BodySizeLimitMiddleware:
    """Answer 413 as soon as a request body exceeds `max_bytes`, and 408 when it is still
    arriving `timeout` seconds after the application first asked for it, before it is all read.

    The clock starts at that first read, not when the request arrived: time the service itself
    spends first (authentication, waiting for a database connection under load) is not the
    client's to make up.

    A declared Content-Length over the limit is refused without reading anything; a chunked
    body is counted as it streams and cut off at the limit. `report_bytes` is the limit the
    413 names (the upload limit; `max_bytes` adds room for multipart framing), so this 413 and
    the one raised while storing an upload read the same.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, report_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.report_bytes = report_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(scope, send, payload_too_large(self.report_bytes), close=True)
            return

        received = 0
        rejected = False
        response_started = False
        deadline: float | None = None
        body_done = False

        async def reject(error: AppError) -> Message:
            nonlocal rejected
            rejected = True
            if not response_started:
                await send_error(scope, send, error, close=True)
            # The application sees a disconnect and stops reading.
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, body_done, deadline
            if rejected:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # waiting for a disconnect: no deadline
            if deadline is None:
                deadline = time.monotonic() + self.timeout
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                return await reject(
                    RequestTimeout(
                        f"the request body did not arrive within {self.timeout:g} s",
                        details={"timeout_seconds": self.timeout},
                    )
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    return await reject(payload_too_large(self.report_bytes))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return  # our error has been sent; drop whatever the application answers
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not rejected:
                raise


class Caller(Protocol):
    """What authentication yields that the gate needs."""

    @property
    def key_id(self) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class Gate:
    """Requests matching `method` and `path` are rate-limited and bounded per key as `name`.

    authenticate : for a route outside the API's prefix (a console route), how its caller is
        authenticated before the body is read; None for the API's own bearer keys. Two gates
        sharing `buckets` and `in_flight` count one key's requests through either way in
        against the same limits.
    """

    method: str
    path: re.Pattern[str]
    buckets: TokenBuckets
    in_flight: InFlight
    name: str
    authenticate: Callable[[Scope], Caller] | None = None


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class GateMiddleware:
    """Authenticate every API request that carries a body before the body is read (an
    anonymous 200 MB upload is refused at once), then apply the per-key rate limit and
    in-flight bound of the gate its route falls under. A gate outside the API's prefix (the
    console's upload) brings its own authentication and is treated the same way.

    authenticate : called in a worker thread with the scope; returns the caller, stores it in
        the scope's state for the route's own dependency to reuse, or raises an AppError
    routed : whether a route answers this method and path (others are left to the router,
        which answers 404 or 405 as for any request)
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Callable[[Scope], Caller],
        routed: Callable[[Scope], bool],
        gates: Mapping[str, Gate] | list[Gate],
        prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.routed = routed
        self.gates = list(gates.values()) if isinstance(gates, Mapping) else list(gates)
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith(self.prefix)
        gate = next(
            (
                g
                for g in self.gates
                if g.method == scope["method"]
                and g.path.match(scope["path"])
                and (g.authenticate is None) == api
            ),
            None,
        )
        if not (api or gate is not None) or not self.routed(scope):
            await self.app(scope, receive, send)
            return
        authenticate = gate.authenticate if gate and gate.authenticate else self.authenticate
        try:
            caller = await anyio.to_thread.run_sync(authenticate, scope)
        except AppError as error:
            await send_error(scope, send, error, close=True)
            return
        if gate is None:
            await self.app(scope, receive, send)
            return
        key = str(caller.key_id)
        wait = gate.buckets.take(key)
        if wait is not None:
            await self._limited(scope, send, gate, f"rate limit for {gate.name} reached", wait)
            return
        if not gate.in_flight.enter(key):
            message = f"this key already has {gate.in_flight.limit} {gate.name} in progress"
            await self._limited(scope, send, gate, message, 1.0)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.in_flight.leave(key)

    async def _limited(
        self, scope: Scope, send: Send, gate: Gate, message: str, wait: float
    ) -> None:
        log.warning("request.rate_limited", gate=gate.name, org_id=_state(scope).get("org_id"))
        error = TooManyRequests(
            f"{message}; retry after {retry_after(wait)} s",
            details={"limit": gate.name, "retry_after_seconds": int(retry_after(wait))},
            headers={"Retry-After": retry_after(wait)},
        )
        await send_error(scope, send, error, close=True)
