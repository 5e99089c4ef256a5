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


def test_a_match_beside_a_paid_use_has_its_own_threshold_and_false_positive_curve(
    settings: Settings, tmp_path: Path
) -> None:
    """The packaged calibration pays a mix's quieter sources from a lower threshold (fitted
    on spurious matches beside true uses) and says what that costs; a file from before it
    judges them as if heard alone."""
    packaged = Calibration.load(settings.calibration_file)
    params = packaged.params
    assert params.beside_use_threshold < params.use_threshold
    # Under the abstain threshold too, where the calibration puts it there: a match paid
    # beside a use is listed from it (`AttributionParams.report_floor`).
    assert params.report_floor == min(params.abstain_threshold, params.beside_use_threshold)
    assert params.beside_threshold(params.use_threshold) == pytest.approx(
        params.beside_use_threshold, abs=1e-6
    )
    # A catalogue's own threshold is scaled by the same ratio (never paid under the scale).
    scaled = params.beside_threshold(0.8)
    ratio = params.beside_use_threshold / params.use_threshold
    assert 0.8 * ratio <= scaled <= 0.8 * ratio + 1e-6
    assert packaged.beside_curve, "the packaged file has no curve beside a paid use"
    # Beside a true use, a spurious match at the use threshold is rarer than a negative's.
    at_use = params.use_threshold
    beside_rate = packaged.expected_fpr(at_use, beside=True)
    alone_rate = packaged.expected_fpr(at_use)
    assert beside_rate is not None
    assert alone_rate is not None
    assert beside_rate <= alone_rate
    assert packaged.expected_fpr(params.beside_use_threshold, beside=True) <= 0.01

    data = json.loads(settings.calibration_file.read_text())
    del data["params"]["beside_use_threshold"]
    del data["beside_curve"]
    before = tmp_path / "calibration-before-beside.json"
    before.write_text(json.dumps(data))
    old = Calibration.load(before)
    assert old.params.beside_use_threshold == old.params.use_threshold
    assert old.params.beside_threshold(0.8) == 0.8
    assert old.expected_fpr(0.5, beside=True) is None
