"""Request and response shapes for organisations and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from app.orgs.models import OrgKind
from app.validation import SingleLine


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


class KeyIssued(KeyRead):
    """A newly issued key; `key` is shown this once and cannot be recovered."""

    key: str


class OrgCreated(BaseModel):
    org: OrgRead
    api_key: KeyIssued
