"""Console session cookies and CSRF tokens: signed, expiring, bound to their session."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.console.sessions import CsrfRejected, Signer, load_secret
from app.main import create_app

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_a_session_reads_back_until_it_expires() -> None:
    signer = Signer(b"k" * 32)
    key = uuid.uuid4()
    cookie, nonce = signer.issue(key, now=NOW, hours=8)
    found = signer.read(cookie, now=NOW + dt.timedelta(hours=7, minutes=59))
    assert found is not None
    assert (found.key_id, found.nonce) == (key, nonce)
    assert signer.read(cookie, now=NOW + dt.timedelta(hours=8)) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # the signature
        lambda c: "e" + c[1:] if c[0] != "e" else "f" + c[1:],  # the body
        lambda c: c.split(".")[0],  # no signature
        lambda c: "",
        lambda c: "not base64!.???",
    ],
)
def test_a_tampered_or_foreign_cookie_is_no_session(tamper: object) -> None:
    signer = Signer(b"k" * 32)
    cookie, _ = signer.issue(uuid.uuid4(), now=NOW, hours=8)
    assert signer.read(tamper(cookie), now=NOW) is None  # type: ignore[operator]
    assert Signer(b"x" * 32).read(cookie, now=NOW) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    signer = Signer(b"k" * 32)
    _, nonce = signer.issue(uuid.uuid4(), now=NOW, hours=1)
    _, other = signer.issue(uuid.uuid4(), now=NOW, hours=1)
    signer.check_csrf(nonce, signer.csrf_token(nonce))
    for token in (None, "", signer.csrf_token(other)):
        with pytest.raises(CsrfRejected):
            signer.check_csrf(nonce, token)


def test_the_secret_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "console.key"
    first = load_secret(path)
    assert len(first) == 32
    assert path.stat().st_mode & 0o077 == 0
    assert load_secret(path) == first


def test_console_routes_stay_out_of_the_openapi_document() -> None:
    spec = create_app().openapi()
    assert not [p for p in spec["paths"] if p.startswith("/console")]
    assert "/v1/checks/{check_id}/audio" in spec["paths"]


def test_console_pages_need_a_session(client: TestClient) -> None:
    page = client.get("/console/dashboard?from=2026-01-01", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/sign-in?next=")
    client.cookies.set("el_console", "eyJrIjoxfQ.AAAA", path="/console")
    forged = client.get("/console/dashboard", follow_redirects=False)
    assert forged.status_code == 303
    # An open redirect is refused: `next` stays inside the console.
    sign_in = client.get("/console/sign-in?next=https://evil.example/")
    assert 'value="/console/"' in sign_in.text
