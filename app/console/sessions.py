"""Console sign-in: an API key is exchanged once for a signed session cookie.

The cookie holds no secret: it names the API key by id, when the session started and ends, and
a random nonce, signed with HMAC-SHA256 under the console's own key (a file created on first
start, shared by replicas). It is `HttpOnly` (scripts cannot read it) and `SameSite=Strict`
(other sites cannot make the browser send it). Every request looks the key up again through
`app.orgs.auth.authenticate_key`, the same admission the API uses, so revoking the key or
suspending its organisation ends the session at once.

Every form carries a CSRF token, an HMAC of the session's nonce; the sign-in form, before any
session exists, carries one bound to a short-lived pre-session cookie instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.errors import Forbidden

SESSION_COOKIE = "el_console"
PRESESSION_COOKIE = "el_console_pre"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class CsrfRejected(Forbidden):
    """A form arrived without the token of the session that showed it."""

    code = "csrf_rejected"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key_id: uuid.UUID
    started_at: dt.datetime
    expires_at: dt.datetime
    nonce: str


def load_secret(path: Path) -> bytes:
    """The console's signing key, created (32 random bytes, mode 0600) if absent."""
    if path.exists():
        secret = path.read_bytes()
        if len(secret) < 32:
            raise ValueError(f"console secret {path} is shorter than 32 bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    try:
        os.link(tmp, path)  # another process may have created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def issue(self, key_id: uuid.UUID, *, now: dt.datetime, hours: float) -> tuple[str, str]:
        """A new session for the key: (cookie value, its nonce)."""
        nonce = secrets.token_urlsafe(16)
        body = json.dumps(
            {
                "k": str(key_id),
                "s": int(now.timestamp()),
                "e": int((now + dt.timedelta(hours=hours)).timestamp()),
                "n": nonce,
            },
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._mac('session', body))}", nonce

    def read(self, cookie: str | None, *, now: dt.datetime) -> ConsoleSession | None:
        """The session a cookie names, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body_text, _, mac_text = cookie.partition(".")
        try:
            body = _unb64(body_text)
            mac = _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            fields = json.loads(body)
            found = ConsoleSession(
                key_id=uuid.UUID(fields["k"]),
                started_at=dt.datetime.fromtimestamp(fields["s"], dt.UTC),
                expires_at=dt.datetime.fromtimestamp(fields["e"], dt.UTC),
                nonce=str(fields["n"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return found if now < found.expires_at else None

    def csrf_token(self, nonce: str) -> str:
        return _b64(self._mac("csrf", nonce.encode()))

    def check_csrf(self, nonce: str | None, token: str | None) -> None:
        """403 unless `token` is the CSRF token for `nonce`."""
        if not nonce or not token or not hmac.compare_digest(token, self.csrf_token(nonce)):
            raise CsrfRejected(
                "this form is missing its CSRF token or it does not match your session; "
                "reload the page and try again"
            )
