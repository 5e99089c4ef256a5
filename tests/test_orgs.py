"""Organisations and API keys: issuance, storage, authentication and revocation."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.factories import Tenants


def test_create_org_returns_key_once_and_stores_only_its_hash(
    client: TestClient, tenants: Tenants, engine: Engine
) -> None:
    response = client.post(
        "/v1/orgs",
        json={"kind": "label", "name": "Nordic Tapes"},
        headers=tenants.operator().headers,
    )
    assert response.status_code == 201
    body = response.json()
    key = body["api_key"]["key"]
    assert key.startswith("el_label_")
    assert body["api_key"]["prefix"] == key[: len(body["api_key"]["prefix"])]
    assert len(key) > 40

    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT prefix, key_hash FROM api_keys")).all()
    assert (body["api_key"]["prefix"], hashlib.sha256(key.encode()).hexdigest()) in stored
    assert all(key not in row for row in stored)

    listed = client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).json()
    assert [k["prefix"] for k in listed] == [body["api_key"]["prefix"]]
    assert "key" not in listed[0]


def test_keys_are_random(tenants: Tenants) -> None:
    keys = {tenants.label().key for _ in range(5)}
    assert len(keys) == 5


def test_me_returns_the_callers_org(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    body = client.get("/v1/orgs/me", headers=label.headers).json()
    assert body["id"] == str(label.id)
    assert body["kind"] == "label"


def test_missing_malformed_and_unknown_keys_are_401(client: TestClient) -> None:
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer el_label_not-a-real-key"},
    ):
        response = client.get("/v1/orgs/me", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_key_stops_working_and_other_keys_keep_working(
    client: TestClient, tenants: Tenants
) -> None:
    label = tenants.label()
    second = client.post("/v1/keys", json={"name": "rotation"}, headers=label.headers).json()
    second_headers = {"Authorization": f"Bearer {second['key']}"}
    assert client.get("/v1/orgs/me", headers=second_headers).status_code == 200

    revoked = client.delete(f"/v1/keys/{second['id']}", headers=label.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/v1/orgs/me", headers=second_headers).status_code == 401
    assert client.get("/v1/orgs/me", headers=label.headers).status_code == 200


def test_cannot_revoke_another_tenants_key(client: TestClient, tenants: Tenants) -> None:
    a, b = tenants.label(), tenants.label()
    b_key = client.get("/v1/keys", headers=b.headers).json()[0]
    response = client.delete(f"/v1/keys/{b_key['id']}", headers=a.headers)
    assert response.status_code == 404
    assert client.get("/v1/orgs/me", headers=b.headers).status_code == 200


def test_operator_issues_a_replacement_key(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    response = client.post(
        f"/v1/orgs/{label.id}/keys", json={"name": "recovery"}, headers=tenants.operator().headers
    )
    assert response.status_code == 201
    new_headers = {"Authorization": f"Bearer {response.json()['key']}"}
    assert client.get("/v1/orgs/me", headers=new_headers).json()["id"] == str(label.id)


def test_org_list_is_paginated(client: TestClient, tenants: Tenants) -> None:
    created = {str(tenants.label().id) for _ in range(5)}
    headers = tenants.operator().headers
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "kind": "label"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/orgs", params=params, headers=headers).json()
        assert len(page["items"]) <= 2
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == created


def test_malformed_cursor_is_422(client: TestClient, tenants: Tenants) -> None:
    response = client.get(
        "/v1/orgs", params={"cursor": "!!nonsense"}, headers=tenants.operator().headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "query.cursor"


def test_create_org_validates_kind_and_name(client: TestClient, tenants: Tenants) -> None:
    headers = tenants.operator().headers
    bad_kind = client.post("/v1/orgs", json={"kind": "pirate", "name": "x"}, headers=headers)
    assert bad_kind.status_code == 422
    assert "body.kind" in bad_kind.json()["error"]["message"]
    empty = client.post("/v1/orgs", json={"kind": "label", "name": ""}, headers=headers)
    assert empty.status_code == 422
    assert "body.name" in empty.json()["error"]["message"]
    extra = client.post(
        "/v1/orgs", json={"kind": "label", "name": "x", "admin": True}, headers=headers
    )
    assert extra.status_code == 422
    assert "body.admin" in extra.json()["error"]["message"]
