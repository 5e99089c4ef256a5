"""Test data builders: organisations with keys, catalogues; through the API where it matters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.db import make_sessionmaker, transaction
from app.orgs import service as orgs
from app.orgs.models import OrgKind


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    kind: OrgKind
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class Tenants:
    """Creates organisations (the operator bootstrap goes straight to the database, as the CLI
    does) and catalogues through the API."""

    def __init__(self, client: TestClient, engine: Engine) -> None:
        self.client = client
        self.sessions = make_sessionmaker(engine)
        self._operator: Tenant | None = None

    def operator(self) -> Tenant:
        if self._operator is None:
            with transaction(self.sessions) as session:
                org, issued = orgs.create(session, kind=OrgKind.OPERATOR, name="ops")
                self._operator = Tenant(org.id, OrgKind.OPERATOR, issued.secret)
        return self._operator

    def create(self, kind: OrgKind | str, name: str | None = None) -> Tenant:
        kind = OrgKind(kind)
        response = self.client.post(
            "/v1/orgs",
            json={"kind": kind.value, "name": name or f"{kind.value}-{uuid.uuid4().hex[:6]}"},
            headers=self.operator().headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Tenant(uuid.UUID(body["org"]["id"]), kind, body["api_key"]["key"])

    def label(self) -> Tenant:
        return self.create(OrgKind.LABEL)

    def ai_company(self) -> Tenant:
        return self.create(OrgKind.AI_COMPANY)

    def auditor(self) -> Tenant:
        return self.create(OrgKind.AUDITOR)

    def catalogue(self, label: Tenant, **license: Any) -> dict[str, Any]:
        terms = {"rate_per_use_micros": 1000, **license}
        response = self.client.post(
            "/v1/catalogues",
            json={"name": f"catalogue-{uuid.uuid4().hex[:6]}", "license": terms},
            headers=label.headers,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body
