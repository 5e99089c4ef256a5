"""Operators take an organisation back from a leaked key: revoke its keys, suspend it; audited."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import Tenant, Tenants


def _key_id(client: TestClient, caller: Tenant, secret: str) -> str:
    keys = client.get("/v1/keys", headers=caller.headers).json()
    return next(k["id"] for k in keys if secret.startswith(k["prefix"]))


def test_a_leaked_key_cannot_revoke_the_operators_recovery_key(
    client: TestClient, tenants: Tenants
) -> None:
    operator = tenants.operator()
    victim = tenants.label()
    recovery = client.post(
        f"/v1/orgs/{victim.id}/keys", json={"name": "recovery"}, headers=operator.headers
    ).json()
    assert recovery["recovery"] is True
    # The attacker holds the label's first key: mints one of its own, revokes the others.
    minted = client.post("/v1/keys", json={"name": "mine"}, headers=victim.headers).json()
    attacker = Tenant(victim.id, victim.kind, minted["key"])
    first = _key_id(client, victim, victim.key)
    assert client.delete(f"/v1/keys/{first}", headers=attacker.headers).status_code == 200
    refused = client.delete(f"/v1/keys/{recovery['id']}", headers=attacker.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["reason"] == "recovery_key"

    # The owner comes back with the recovery key; the operator revokes the attacker's key.
    owner = Tenant(victim.id, victim.kind, recovery["key"])
    assert client.get("/v1/orgs/me", headers=owner.headers).status_code == 200
    revoked = client.post(
        f"/v1/orgs/{victim.id}/keys/{minted['id']}/revocation",
        json={"reason": "leaked key, ticket 42"},
        headers=operator.headers,
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by_org_id"] == str(operator.id)
    assert revoked.json()["revocation_reason"] == "leaked key, ticket 42"
    assert client.get("/v1/orgs/me", headers=attacker.headers).status_code == 401

    trail = client.get(f"/v1/orgs/{victim.id}/audit", headers=owner.headers).json()["items"]
    actions = [(e["action"], e["actor_org_id"], e["reason"]) for e in trail]
    assert ("key_revoked", str(operator.id), "leaked key, ticket 42") in actions
    assert ("key_revoked", str(victim.id), None) in actions  # the attacker's own revocation
    assert [e["action"] for e in trail].count("key_issued") == 3
    assert all(e["at"] for e in trail)


def test_an_operator_revokes_only_keys_of_the_organisation_named(
    client: TestClient, tenants: Tenants
) -> None:
    operator = tenants.operator()
    one, other = tenants.label(), tenants.label()
    key = _key_id(client, one, one.key)
    wrong = client.post(
        f"/v1/orgs/{other.id}/keys/{key}/revocation",
        json={"reason": "mistake"},
        headers=operator.headers,
    )
    assert wrong.status_code == 404
    label_tries = client.post(
        f"/v1/orgs/{one.id}/keys/{key}/revocation", json={"reason": "x" * 5}, headers=one.headers
    )
    assert label_tries.status_code == 403


def test_a_suspended_organisations_keys_are_refused_until_reinstated(
    client: TestClient, tenants: Tenants
) -> None:
    operator = tenants.operator()
    company = tenants.ai_company()
    suspended = client.post(
        f"/v1/orgs/{company.id}/suspension",
        json={"reason": "unpaid invoices"},
        headers=operator.headers,
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["suspended_at"] is not None
    refused = client.get("/v1/orgs/me", headers=company.headers)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "organisation_suspended"
    assert "unpaid invoices" in error["message"]
    # Even a key minted for it by an operator is refused while it is suspended.
    spare = client.post(
        f"/v1/orgs/{company.id}/keys", json={"name": "spare"}, headers=operator.headers
    ).json()
    spare_headers = {"Authorization": f"Bearer {spare['key']}"}
    assert client.get("/v1/orgs/me", headers=spare_headers).status_code == 403

    back = client.post(
        f"/v1/orgs/{company.id}/reinstatement", json={"reason": "paid"}, headers=operator.headers
    )
    assert back.status_code == 200
    assert back.json()["suspended_at"] is None
    assert client.get("/v1/orgs/me", headers=company.headers).status_code == 200
    trail = client.get(f"/v1/orgs/{company.id}/audit", headers=operator.headers).json()["items"]
    assert [e["action"] for e in trail if e["action"].startswith("org_")] == [
        "org_reinstated",  # newest first
        "org_suspended",
    ]
    assert {e["actor_key_id"] for e in trail if e["action"].startswith("org_")} == {
        _key_id(client, operator, operator.key)
    }


def test_operators_cannot_be_suspended_and_others_cannot_suspend(
    client: TestClient, tenants: Tenants
) -> None:
    operator = tenants.operator()
    label = tenants.label()
    mine = client.post(
        f"/v1/orgs/{operator.id}/suspension", json={"reason": "oops"}, headers=operator.headers
    )
    assert mine.status_code == 409
    assert (
        client.post(
            f"/v1/orgs/{label.id}/suspension", json={"reason": "mine"}, headers=label.headers
        ).status_code
        == 403
    )
    auditor = tenants.auditor()
    assert (
        client.post(
            f"/v1/orgs/{label.id}/suspension", json={"reason": "mine"}, headers=auditor.headers
        ).status_code
        == 403
    )


def test_a_tenant_reads_only_its_own_audit_trail(client: TestClient, tenants: Tenants) -> None:
    one, other = tenants.label(), tenants.label()
    assert client.get(f"/v1/orgs/{one.id}/audit", headers=other.headers).status_code == 404
    assert client.get(f"/v1/orgs/{one.id}/audit", headers=one.headers).status_code == 200
