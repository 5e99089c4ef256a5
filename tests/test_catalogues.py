"""Catalogues and versioned license terms: creation, reading, tenant isolation, validation."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.checks.attribution import DEFAULT_CALIBRATION, AttributionParams
from app.config import Settings
from app.main import create_app
from tests.factories import Tenants


def test_label_registers_catalogue_with_terms(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    response = client.post(
        "/v1/catalogues",
        json={
            "name": "Baroque Organ Works",
            "description": "Recorded 1998-2004",
            "license": {
                "rate_per_use_micros": 2500,
                "threshold": 0.6,
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_to": "2027-01-01T00:00:00Z",
            },
        },
        headers=label.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["label_id"] == str(label.id)
    assert body["license"] | {"created_at": None} == {
        "version": 1,
        "rate_per_use_micros": 2500,
        "penalty_rate_per_use_micros": None,
        "currency": "USD",
        "threshold": 0.6,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_to": "2027-01-01T00:00:00Z",
        "status": "active",
        "created_at": None,
    }
    read = client.get(f"/v1/catalogues/{body['id']}", headers=label.headers).json()
    assert read == body


def test_threshold_defaults_to_the_calibrated_use_threshold(
    client: TestClient, tenants: Tenants
) -> None:
    catalogue = tenants.catalogue(tenants.label())
    calibrated = AttributionParams.load(DEFAULT_CALIBRATION).use_threshold
    assert catalogue["license"]["threshold"] == calibrated


def test_threshold_setting_overrides_the_calibration(settings: Settings, engine: Engine) -> None:
    with TestClient(create_app(settings.model_copy(update={"default_threshold": 0.77}))) as c:
        tenants = Tenants(c, engine)
        catalogue = tenants.catalogue(tenants.label())
    assert catalogue["license"]["threshold"] == 0.77


def test_new_terms_make_a_new_version_and_old_versions_stay(
    client: TestClient, tenants: Tenants
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label, rate_per_use_micros=1000)
    url = f"/v1/catalogues/{catalogue['id']}"
    put = client.put(
        f"{url}/license",
        json={"rate_per_use_micros": 1500, "threshold": 0.7, "status": "suspended"},
        headers=label.headers,
    )
    assert put.status_code == 200
    assert put.json()["version"] == 2

    assert client.get(url, headers=label.headers).json()["license"]["version"] == 2
    versions = client.get(f"{url}/license/versions", headers=label.headers).json()
    assert [(v["version"], v["rate_per_use_micros"], v["status"]) for v in versions] == [
        (1, 1000, "active"),
        (2, 1500, "suspended"),
    ]
    first = client.get(f"{url}/license/versions/1", headers=label.headers).json()
    assert first["rate_per_use_micros"] == 1000
    assert client.get(f"{url}/license/versions/3", headers=label.headers).status_code == 404


def test_label_lists_only_its_own_catalogues(client: TestClient, tenants: Tenants) -> None:
    a, b = tenants.label(), tenants.label()
    mine = {tenants.catalogue(a)["id"] for _ in range(3)}
    tenants.catalogue(b)
    page = client.get("/v1/catalogues", headers=a.headers).json()
    assert {c["id"] for c in page["items"]} == mine

    auditor = tenants.auditor()
    everything = client.get("/v1/catalogues", headers=auditor.headers).json()
    assert len(everything["items"]) == 4
    only_b = client.get(
        "/v1/catalogues", params={"label_id": str(b.id)}, headers=auditor.headers
    ).json()
    assert {c["label_id"] for c in only_b["items"]} == {str(b.id)}


def test_other_label_cannot_read_or_change_a_catalogue(
    client: TestClient, tenants: Tenants
) -> None:
    a, b = tenants.label(), tenants.label()
    catalogue = tenants.catalogue(a)
    url = f"/v1/catalogues/{catalogue['id']}"
    for method, path, body in [
        ("GET", url, None),
        ("PUT", f"{url}/license", {"rate_per_use_micros": 0}),
        ("GET", f"{url}/license/versions", None),
        ("GET", f"{url}/license/versions/1", None),
    ]:
        response = client.request(method, path, json=body, headers=b.headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    unknown = client.get("/v1/catalogues/00000000-0000-4000-8000-000000000000", headers=b.headers)
    # Another tenant's catalogue and a missing one answer the same way.
    assert unknown.status_code == 404
    assert client.get(url, headers=a.headers).json()["license"]["version"] == 1


@pytest.mark.parametrize(
    ("license", "field"),
    [
        ({"rate_per_use_micros": -1}, "body.license.rate_per_use_micros"),
        ({"rate_per_use_micros": 1.5}, "body.license.rate_per_use_micros"),
        ({"rate_per_use_micros": "100"}, "body.license.rate_per_use_micros"),
        ({"rate_per_use_micros": 10, "threshold": 1.01}, "body.license.threshold"),
        ({"rate_per_use_micros": 10, "threshold": -0.1}, "body.license.threshold"),
        (
            {
                "rate_per_use_micros": 10,
                "valid_from": "2026-06-01T00:00:00Z",
                "valid_to": "2026-05-01T00:00:00Z",
            },
            "body.license.valid_to",
        ),
        (
            {"rate_per_use_micros": 10, "valid_from": "2026-06-01T00:00:00"},
            "body.license.valid_from",
        ),
        ({"rate_per_use_micros": 10, "status": "paused"}, "body.license.status"),
        ({"rate_per_use_micros": 10, "royalty": 3}, "body.license.royalty"),
        ({}, "body.license.rate_per_use_micros"),
    ],
)
def test_invalid_terms_are_422_naming_the_field(
    client: TestClient, tenants: Tenants, license: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/v1/catalogues", json={"name": "x", "license": license}, headers=tenants.label().headers
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert field in error["message"]


def test_unknown_top_level_field_is_422(client: TestClient, tenants: Tenants) -> None:
    response = client.post(
        "/v1/catalogues",
        json={"name": "x", "license": {"rate_per_use_micros": 1}, "owner": "someone"},
        headers=tenants.label().headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.owner"


def test_put_license_validates_like_create(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    response = client.put(
        f"/v1/catalogues/{catalogue['id']}/license",
        json={"rate_per_use_micros": -5},
        headers=label.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.rate_per_use_micros"


def test_malformed_json_is_422_not_500(client: TestClient, tenants: Tenants) -> None:
    response = client.post(
        "/v1/catalogues",
        content=b"{not json",
        headers={**tenants.label().headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_malformed_id_is_422(client: TestClient, tenants: Tenants) -> None:
    response = client.get("/v1/catalogues/not-a-uuid", headers=tenants.label().headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "path.catalogue_id"


def test_a_penalty_rate_is_kept_and_may_not_undercut_the_rate(
    client: TestClient, tenants: Tenants
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label, rate_per_use_micros=1000, penalty_rate_per_use_micros=5000)
    assert catalogue["license"]["penalty_rate_per_use_micros"] == 5000
    cheaper = client.put(
        f"/v1/catalogues/{catalogue['id']}/license",
        json={"rate_per_use_micros": 1000, "penalty_rate_per_use_micros": 999},
        headers=label.headers,
    )
    assert cheaper.status_code == 422
    fields = [d["field"] for d in cheaper.json()["error"]["details"]]
    assert fields == ["body.penalty_rate_per_use_micros"]
