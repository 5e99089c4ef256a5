"""Who is calling: API-key authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db import SessionDep
from app.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from app.limits import FailedAuth, retry_after
from app.logging import get_logger
from app.orgs import service as orgs
from app.orgs.models import ApiKey, Organisation, OrgKind

log = get_logger(__name__)


class Suspended(Forbidden):
    """The key is valid but its organisation is suspended."""

    code = "organisation_suspended"


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer el_...`")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated organisation behind a request."""

    org_id: uuid.UUID
    kind: OrgKind
    key_id: uuid.UUID

    @property
    def actor(self) -> orgs.Actor:
        return orgs.Actor(self.org_id, self.key_id, is_operator=self.kind == OrgKind.OPERATOR)

    def owns_or_reads_all(self, owner_id: uuid.UUID, kind: str, ident: object) -> None:
        """Raise NotFound unless this principal owns the object or may read every tenant's."""
        if owner_id != self.org_id and self.kind not in READ_ALL:
            raise NotFound(kind, ident)


# Roles that may read every tenant's objects (DESIGN.md: operators and auditors read all).
READ_ALL = frozenset({OrgKind.OPERATOR, OrgKind.AUDITOR})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(
    session: Session, *, authorization: str | None, client: str, failures: FailedAuth
) -> Principal:
    """The caller behind an `Authorization` header value.

    401 for a missing, unknown or revoked key, 403 for a suspended organisation, and 429 for
    an address that presented too many bad keys lately (logged, never with the key).
    """
    locked = failures.locked_for(client)
    if locked is not None:
        log.warning("auth.locked_out", client=client, retry_after_seconds=round(locked))
        raise TooManyRequests(
            "too many bad API keys from this address; wait before trying again",
            details={"limit": "failed_authentication"},
            headers={"Retry-After": retry_after(locked)},
        )
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    found = orgs.authenticate(session, secret.strip())
    if found is None:
        count, now_locked = failures.failed(client)
        log.warning("auth.failed", client=client, failures=count, locked_out=now_locked)
        raise Unauthorized("unknown or revoked API key")
    org, key = found
    return admit(org, key)


def admit(org: Organisation, key: ApiKey) -> Principal:
    """The principal for a live key of `org`: 403 while the organisation is suspended. Every
    way in (an API key, a console session) ends here, so the rules are the same."""
    structlog.contextvars.bind_contextvars(org_id=str(org.id), org_kind=org.kind)
    if org.suspended_at is not None:
        raise Suspended(
            f"organisation {org.id} was suspended by an operator on "
            f"{org.suspended_at:%Y-%m-%d %H:%M} UTC: {org.suspension_reason}; "
            "its keys are refused until an operator reinstates it",
            details={"org_id": str(org.id), "suspended_at": org.suspended_at.isoformat()},
        )
    return Principal(org_id=org.id, kind=OrgKind(org.kind), key_id=key.id)


def authenticate_key(session: Session, key_id: uuid.UUID) -> Principal | None:
    """The caller behind a key named by id (a console session), or None once the key is
    revoked; 403 for a suspended organisation, as for the API."""
    found = orgs.live_key(session, key_id)
    return None if found is None else admit(*found)


def authenticate_request(session: Session, request: Request) -> Principal:
    """Authenticate a request once: the gate middleware does it before the body is read, and
    the route's dependency reuses what it found. The organisation goes into the request log."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    principal = authenticate(
        session,
        authorization=request.headers.get("authorization"),
        client=client_address(request),
        failures=request.app.state.failed_auth,
    )
    request.state.principal = principal
    request.state.org_id = str(principal.org_id)
    return principal


def get_principal(
    request: Request,
    session: SessionDep,
    # Declared for the OpenAPI security scheme; the header is read by `authenticate_request`.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return authenticate_request(session, request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*kinds: OrgKind) -> Callable[[Principal], Principal]:
    """A dependency that admits only the given organisation kinds (403 for the others)."""
    allowed = frozenset(kinds)
    names = ", ".join(sorted(k.value for k in allowed))

    def dependency(principal: PrincipalDep) -> Principal:
        if principal.kind not in allowed:
            raise Forbidden(f"this endpoint is for: {names}; your key is {principal.kind.value}")
        return principal

    return dependency


OperatorDep = Annotated[Principal, Depends(require(OrgKind.OPERATOR))]
LabelDep = Annotated[Principal, Depends(require(OrgKind.LABEL))]
AiCompanyDep = Annotated[Principal, Depends(require(OrgKind.AI_COMPANY))]
AuditorDep = Annotated[Principal, Depends(require(OrgKind.AUDITOR))]
ReaderDep = Annotated[Principal, Depends(require(OrgKind.OPERATOR, OrgKind.AUDITOR))]
LabelOrReaderDep = Annotated[
    Principal, Depends(require(OrgKind.LABEL, OrgKind.OPERATOR, OrgKind.AUDITOR))
]
