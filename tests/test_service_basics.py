"""Cross-cutting behaviour: error shape, request ids, health probes, OpenAPI docs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.checks.attribution import Calibration
from app.config import Settings
from app.embedding import get_embedder
from app.main import create_app
from tests.factories import Tenants


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert first
    assert second
    assert first != second


def test_a_safe_client_request_id_is_kept_and_echoed_in_errors(client: TestClient) -> None:
    response = client.get("/v1/orgs/me", headers={"X-Request-ID": "trace-123"})
    assert response.headers["X-Request-ID"] == "trace-123"
    assert response.json()["error"]["request_id"] == "trace-123"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert unsafe.headers["X-Request-ID"] != "bad id\nwith newline"


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.patch("/v1/orgs/me")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_readyz_reports_database_and_migration_head(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["migration"] == body["migration_head"] is not None


def test_readyz_is_503_when_migrations_are_behind(client: TestClient, engine: Engine) -> None:
    with engine.begin() as conn:
        head = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["migration"] == "older"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :h"), {"h": head})


# TDMRep files: read by text-and-data-mining agents without an account.
PUBLIC = {"/v1/catalogues/{catalogue_id}/tdmrep.json", "/.well-known/tdmrep.json"}


def test_openapi_documents_every_endpoint_and_the_error_shape(
    client: TestClient, tenants: Tenants
) -> None:
    spec = client.get("/openapi.json").json()
    assert "ErrorResponse" in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            if path.startswith("/v1/") and path not in PUBLIC:
                assert "401" in operation["responses"], f"{method} {path} lacks 401"
                assert operation.get("security"), f"{method} {path} documents no key"
    for path in PUBLIC:  # public reservations need no key, and say so
        assert "security" not in spec["paths"][path]["get"]
    assert client.get("/docs").status_code == 200


def test_a_calibration_fitted_for_another_embedder_is_named_at_start_up(
    settings: Settings, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The packaged file was fitted for the embedder the service runs: no warning.
    packaged = Calibration.load(settings.calibration_file)
    embedder = get_embedder(settings.embedder)
    assert packaged.fitted_for == (embedder.name, embedder.version)
    assert not packaged.fitted_for_another(embedder.name, embedder.version)

    # A file fitted for an earlier version: its thresholds mean other false-positive rates.
    data = json.loads(settings.calibration_file.read_text())
    data["provenance"]["embedder"]["version"] = "3"
    older = tmp_path / "calibration-spectral-3.json"
    older.write_text(json.dumps(data))
    stale = settings.model_copy(update={"calibration_file": older})
    with caplog.at_level(logging.WARNING), TestClient(create_app(stale)) as client:
        assert client.get("/readyz").status_code == 200  # it still serves
    warnings = [
        r for r in caplog.records if "calibration.fitted_for_another_embedder" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "spectral 3" in warnings[0].getMessage()

    # A file that does not say what it was fitted for is taken as it is.
    del data["provenance"]
    older.write_text(json.dumps(data))
    assert Calibration.load(older).fitted_for is None
