"""Limits and hardening at the edge: security headers, body size and time, authentication
before the body, per-key rate limits and in-flight bounds, lockout of key guessing, logs."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from starlette.types import Message, Receive, Scope, Send

from app.config import Settings
from app.limits import FailedAuth, InFlight, TokenBuckets
from app.main import create_app
from app.middleware import BodySizeLimitMiddleware, Gate, GateMiddleware
from tests.factories import Tenant, Tenants, audio_file, submit_check, upload

SECURITY = {
    "x-content-type-options": "nosniff",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-frame-options": "DENY",
}


def _secured(response: Any) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    assert response.headers.get("content-security-policy"), response.request.url


def test_every_response_carries_the_security_headers(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    spec = client.get("/openapi.json").json()
    responses = [client.get("/healthz"), client.get("/openapi.json"), client.get("/v1/nowhere")]
    responses.append(client.patch("/v1/orgs/me"))
    for path, operations in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path).replace(
            "/versions/" + path.rsplit("/", 1)[-1], "/versions/1"
        )
        for method in operations:
            responses.append(client.request(method.upper(), concrete))  # 401 or 422
            responses.append(client.request(method.upper(), concrete, headers=label.headers))
    for response in responses:
        _secured(response)
        if response.request.url.path.startswith("/v1/"):
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            )


def test_answers_bearing_a_key_are_never_cached(client: TestClient, tenants: Tenants) -> None:
    operator = tenants.operator()
    created = client.post("/v1/orgs", json={"kind": "label", "name": "x"}, headers=operator.headers)
    assert created.status_code == 201
    assert created.json()["api_key"]["key"]
    assert created.headers["cache-control"] == "no-store"
    _secured(created)
    rotated = client.post("/v1/keys", json={"name": "r"}, headers=operator.headers)
    assert rotated.headers["cache-control"] == "no-store"


def test_both_413s_say_the_same(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    tight = settings.model_copy(update={"max_upload_bytes": 200_000})
    inside = audio_file(tmp_path, seconds=4.9)  # over the file limit, under the request limit
    far_over = audio_file(tmp_path, seconds=10.0)  # over the request limit too
    with TestClient(create_app(tight)) as client:
        tenants = Tenants(client, engine)
        label = tenants.label()
        catalogue = tenants.catalogue(label)
        noticed_late = upload(client, label, catalogue["id"], inside)
        noticed_early = upload(client, label, catalogue["id"], far_over)
    assert noticed_late.status_code == noticed_early.status_code == 413
    late, early = noticed_late.json()["error"], noticed_early.json()["error"]
    assert late.pop("request_id") != early.pop("request_id")
    assert late == early
    assert late["details"] == {"max_bytes": 200_000}


def _asgi_call(
    client: TestClient, scope: Scope, receive: Receive
) -> tuple[int, dict[str, str], bytes]:
    """Call the running app directly (the test client would read the whole body first)."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def call() -> None:
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    assert client.portal is not None
    client.portal.call(call)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


def _scope(path: str, headers: dict[str, str], *, length: int) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.9", 5000),
        "server": ("testserver", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", str(length).encode()),
        ],
    }


def test_an_anonymous_upload_is_refused_before_its_body_is_read(
    client: TestClient, tenants: Tenants
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1_000_000, "more_body": True}

    path = f"/v1/catalogues/{catalogue['id']}/tracks"
    for headers in ({}, {"Authorization": "Bearer el_label_not-a-key"}):
        status, answer, _ = _asgi_call(client, _scope(path, headers, length=199 * 2**20), receive)
        assert status == 401
        assert answer["connection"] == "close"
    assert reads == 0
    checks = _scope("/v1/checks", {}, length=199 * 2**20)
    assert _asgi_call(client, checks, receive)[0] == 401
    assert reads == 0


def test_a_body_that_trickles_in_too_slowly_is_408(settings: Settings, engine: Engine) -> None:
    slow = settings.model_copy(update={"request_body_timeout_seconds": 0.3})
    with TestClient(create_app(slow)) as client:
        tenants = Tenants(client, engine)
        label = tenants.label()
        catalogue = tenants.catalogue(label)

        async def receive() -> Message:
            await asyncio.sleep(1.0)
            return {"type": "http.request", "body": b"x", "more_body": True}

        scope = _scope(f"/v1/catalogues/{catalogue['id']}/tracks", label.headers, length=10_000)
        status, _, body = _asgi_call(client, scope, receive)
    assert status == 408
    assert b'"request_timeout"' in body


def test_the_body_clock_starts_when_the_service_first_reads_it() -> None:
    """Time the service spends before reading (authentication, a database connection under
    load) is not charged to the client: a prompt body read late is accepted."""

    async def slow_to_read(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.5)  # longer than the timeout below, before the first read
        message = await receive()
        status = 200 if message["type"] == "http.request" else 499
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def prompt_body() -> Message:
        return {"type": "http.request", "body": b"x", "more_body": False}

    statuses: list[int] = []  # what the client is answered

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    limited = BodySizeLimitMiddleware(slow_to_read, max_bytes=10, report_bytes=10, timeout=0.2)
    asyncio.run(limited(_scope("/anything", {}, length=1), prompt_body, send))
    assert statuses == [200]


def test_checks_and_uploads_have_separate_per_key_rate_limits(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_checks_per_minute": 6.0,
            "rate_limit_uploads_per_minute": 6.0,
            "rate_limit_burst_seconds": 10.0,  # a burst of one
        }
    )
    piece = audio_file(tmp_path, seed=1, seconds=3.0)
    with TestClient(create_app(limited)) as client:
        tenants = Tenants(client, engine)
        company, other = tenants.ai_company(), tenants.ai_company()
        label = tenants.label()
        catalogue = tenants.catalogue(label)
        first = submit_check(client, company, piece)
        second = submit_check(client, company, piece)
        assert first.status_code != 429
        assert second.status_code == 429
        assert 1 <= int(second.headers["Retry-After"]) <= 10
        assert second.json()["error"]["details"]["limit"] == "checks"
        # Another key has its own bucket, and uploads their own limit.
        assert submit_check(client, other, piece).status_code != 429
        assert upload(client, label, catalogue["id"], piece).status_code == 202
        assert upload(client, label, catalogue["id"], piece).status_code == 429


def console_sign_in(client: TestClient, tenant: Tenant) -> str:
    """Sign in to the console as `tenant` through its form; returns the session's CSRF token."""
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, form.text
    signed_in = client.post(
        "/console/sign-in",
        data={"api_key": tenant.key, "csrf_token": token.group(1), "next": "/console/"},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    page = client.get("/console/catalogues")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    return csrf.group(1)


def console_upload(client: TestClient, catalogue_id: str, path: Path, csrf: str | None) -> Any:
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    with path.open("rb") as f:
        return client.post(
            f"/console/catalogues/{catalogue_id}/tracks",
            files={"file": (path.name, f, "application/octet-stream")},
            data={"title": path.stem, "artist": "Test Artist"},
            headers=headers,
        )


def test_console_uploads_pass_the_same_gate_as_api_uploads(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    limited = settings.model_copy(
        update={"rate_limit_uploads_per_minute": 6.0, "rate_limit_burst_seconds": 20.0}
    )  # a burst of two
    first, second = (audio_file(tmp_path, seed=s, seconds=3.0) for s in (1, 2))
    with TestClient(create_app(limited)) as client:
        tenants = Tenants(client, engine)
        label = tenants.label()
        catalogue = tenants.catalogue(label)
        csrf = console_sign_in(client, label)
        # Refused before the body is read: no CSRF token, a forged one, no session.
        reads = 0

        async def receive() -> Message:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"x" * 1_000_000, "more_body": True}

        path = f"/console/catalogues/{catalogue['id']}/tracks"
        cookie = f"el_console={client.cookies['el_console']}"
        for headers, status in (
            ({"Cookie": cookie}, 403),
            ({"Cookie": cookie, "X-CSRF-Token": "forged"}, 403),
            ({"X-CSRF-Token": csrf}, 401),
            ({"Cookie": "el_console=eyJrIjoxfQ.AAAA", "X-CSRF-Token": csrf}, 401),
        ):
            answer, sent, _ = _asgi_call(client, _scope(path, headers, length=199 * 2**20), receive)
            assert (answer, sent["connection"]) == (status, "close"), headers
        assert reads == 0
        # The key's upload bucket is one, whichever way in: the console's upload and the
        # API's spend it together, and the limit reads the same.
        accepted = console_upload(client, catalogue["id"], first, csrf)
        assert accepted.status_code == 202, accepted.text
        assert upload(client, label, catalogue["id"], second).status_code == 202
        limited_console = console_upload(client, catalogue["id"], second, csrf)
        limited_api = upload(client, label, catalogue["id"], second)
        for answer in (limited_console, limited_api):
            assert answer.status_code == 429, answer.text
            assert answer.json()["error"]["details"]["limit"] == "uploads"
            assert 1 <= int(answer.headers["Retry-After"]) <= 10
        # Another label's console session has its own bucket.
        other = tenants.label()
        client.cookies.clear()
        other_csrf = console_sign_in(client, other)
        theirs = tenants.catalogue(other)
        assert console_upload(client, theirs["id"], second, other_csrf).status_code == 202
        listed = client.get(f"/v1/catalogues/{catalogue['id']}/tracks", headers=label.headers)
        assert len(listed.json()["items"]) == 2


def test_console_uploads_share_the_in_flight_bound_of_api_uploads() -> None:
    bound = InFlight(1)
    app_reached: list[str] = []

    class Key:
        def __init__(self, key: str) -> None:
            self.key_id = key

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        app_reached.append(scope["path"])

    buckets = TokenBuckets(per_minute=600, burst=10)
    gates = [
        Gate("POST", re.compile(r"^/v1/up$"), buckets, bound, "uploads"),
        Gate(
            "POST",
            re.compile(r"^/console/up$"),
            buckets,
            bound,
            "uploads",
            authenticate=lambda scope: Key("k1"),  # type: ignore[arg-type,return-value]
        ),
    ]
    gate = GateMiddleware(
        app,
        authenticate=lambda scope: Key("k1"),  # type: ignore[arg-type,return-value]
        routed=lambda scope: True,
        gates=gates,
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run() -> None:
        assert bound.enter("k1")  # an API upload of the key is in progress
        await gate(
            {"type": "http", "method": "POST", "path": "/console/up", "headers": []}, receive, send
        )
        bound.leave("k1")
        await gate(
            {"type": "http", "method": "POST", "path": "/console/up", "headers": []}, receive, send
        )
        # A console path no gate names is not the gate's business.
        await gate(
            {"type": "http", "method": "POST", "path": "/console/other", "headers": []},
            receive,
            send,
        )

    asyncio.run(run())
    assert sent[0]["status"] == 429
    assert app_reached == ["/console/up", "/console/other"]


def test_key_guessing_is_locked_out_per_address_and_logged(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    strict = settings.model_copy(update={"auth_max_failures": 3, "auth_lockout_seconds": 60})
    with TestClient(create_app(strict)) as client, caplog.at_level(logging.WARNING):
        good = Tenants(client, engine).label()
        guesses = [f"el_label_guess{i}" for i in range(3)]
        for guess in guesses:
            bad = client.get("/v1/orgs/me", headers={"Authorization": f"Bearer {guess}"})
            assert bad.status_code == 401
        locked = client.get("/v1/orgs/me", headers=good.headers)
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) >= 59
        assert locked.json()["error"]["details"] == {"limit": "failed_authentication"}
        posted = client.post("/v1/keys", json={"name": "x"}, headers=good.headers)
        assert posted.status_code == 429
    lines = [str(r.msg) for r in caplog.records]
    assert sum("auth.failed" in line for line in lines) == 3
    assert any("auth.locked_out" in line for line in lines)
    assert not [line for line in lines for g in guesses if g in line]


def test_failed_auth_counts_within_a_window_and_success_does_not_reset_it() -> None:
    now = [0.0]
    failures = FailedAuth(max_failures=3, window=10, lockout=30, clock=lambda: now[0])
    failures.failed("a")
    failures.failed("a")
    now[0] = 11.0  # the window passed
    assert failures.failed("a") == (1, False)
    failures.failed("a")
    assert failures.failed("a") == (0, True)
    assert failures.locked_for("a") == 30
    assert failures.locked_for("b") is None
    now[0] = 41.0
    assert failures.locked_for("a") is None


def test_token_buckets_refill_at_their_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=2, clock=lambda: now[0])
    assert buckets.take("k") is None
    assert buckets.take("k") is None
    assert buckets.take("k") == pytest.approx(1.0)
    now[0] = 0.5
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] = 1.0
    assert buckets.take("k") is None
    assert buckets.take("other") is None


def test_concurrent_requests_per_key_are_bounded() -> None:
    release = asyncio.Event()
    started = 0

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal started
        started += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    class Caller:
        def __init__(self, key: str) -> None:
            self.key_id = uuid.uuid5(uuid.NAMESPACE_OID, key)

    gate = Gate(
        "POST",
        re.compile("^/v1/checks$"),
        TokenBuckets(per_minute=1000, burst=100),
        InFlight(2),
        "checks",
    )
    middleware = GateMiddleware(
        slow_app,
        authenticate=lambda scope: Caller(dict(scope["headers"])[b"authorization"].decode()),
        routed=lambda scope: True,
        gates=[gate],
    )

    async def request(key: str) -> int:
        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/checks",
            "headers": [(b"authorization", key.encode())],
        }
        await middleware(scope, receive, send)
        return statuses[0]

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(request(k)) for k in ("a", "a", "a", "b")]
        await asyncio.sleep(0.2)
        release.set()
        return list(await asyncio.gather(*tasks))

    statuses = asyncio.run(scenario())
    assert sorted(statuses[:3]) == [201, 201, 429]
    assert statuses[3] == 201
    assert started == 3
    assert gate.in_flight.enter("a")  # every slot was given back


@pytest.fixture
def chatty(settings: Settings) -> Settings:
    return settings.model_copy(update={"log_level": "INFO"})


def test_request_log_lines_name_the_callers_organisation(
    chatty: Settings, engine: Engine, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with TestClient(create_app(chatty)) as client, caplog.at_level(logging.INFO):
        tenants = Tenants(client, engine)
        label: Tenant = tenants.label()
        client.get("/v1/orgs/me", headers=label.headers)
        catalogue = tenants.catalogue(label)
        upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=3.0))
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    requests = [m for m in lines if m.get("event") == "request"]
    mine = [m for m in requests if m.get("org_id") == str(label.id)]
    assert {m["path"] for m in mine} >= {
        "/v1/orgs/me",
        "/v1/catalogues",
        f"/v1/catalogues/{catalogue['id']}/tracks",
    }
