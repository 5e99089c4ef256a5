"""Request and response shapes for organisations and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from app.orgs.models import OrgKind
from app.validation import MultiLine, SingleLine


class OrgCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: OrgKind
    name: SingleLine = Field(min_length=1, max_length=200)


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: OrgKind
    name: str
    created_at: dt.datetime
    suspended_at: dt.datetime | None = Field(description="Set while an operator suspends it.")
    suspension_reason: str | None
    credit_limit_micros: int | None = Field(
        description="AI companies: its own credit limit; null: the service default."
    )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLine = Field(default="default", min_length=1, max_length=100)


class KeyRead(BaseModel):
    """An API key as listed: only its visible prefix, never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    recovery: bool = Field(description="Issued by an operator; only an operator can revoke it.")
    revoked_by_org_id: uuid.UUID | None
    revocation_reason: str | None


class KeyIssued(KeyRead):
    """A newly issued key; `key` is shown this once and cannot be recovered."""

    key: str


class OrgCreated(BaseModel):
    org: OrgRead
    api_key: KeyIssued


class Reason(BaseModel):
    """Why an operator acts; kept in the audit trail."""

    model_config = ConfigDict(extra="forbid")

    reason: MultiLine = Field(min_length=3, max_length=2000)


class CreditLimitIn(Reason):
    credit_limit_micros: int | None = Field(
        strict=True,
        ge=0,
        le=10**15,
        description="Most the AI company may owe, in micro-units; null: the service default.",
    )


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    actor_org_id: uuid.UUID | None = Field(description="Null: done from the command line.")
    actor_key_id: uuid.UUID | None
    action: str
    target_org_id: uuid.UUID
    target_key_id: uuid.UUID | None
    reason: str | None
