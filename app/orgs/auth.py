"""Who is calling: API-key authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.db import SessionDep
from app.errors import Forbidden, NotFound, Unauthorized
from app.orgs import service as orgs
from app.orgs.models import OrgKind


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


def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    found = orgs.authenticate(session, credentials.credentials)
    if found is None:
        raise Unauthorized("unknown or revoked API key")
    org, key = found
    structlog.contextvars.bind_contextvars(org_id=str(org.id), org_kind=org.kind)
    if org.suspended_at is not None:
        raise Suspended(
            f"organisation {org.id} was suspended by an operator on "
            f"{org.suspended_at:%Y-%m-%d %H:%M} UTC: {org.suspension_reason}; "
            "its keys are refused until an operator reinstates it",
            details={"org_id": str(org.id), "suspended_at": org.suspended_at.isoformat()},
        )
    return Principal(org_id=org.id, kind=OrgKind(org.kind), key_id=key.id)


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
