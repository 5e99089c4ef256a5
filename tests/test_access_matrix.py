"""Every endpoint called with every kind of key, no key and a revoked key.

The table below is the access policy in one place; `test_matrix_covers_every_route` makes sure a
new endpoint cannot ship without a row here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Tenant, Tenants, audio_file, submit_check, upload

ROLES = ("operator", "label", "other_label", "ai_company", "auditor", "no_key", "revoked")


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: dict[str, int]
    body: dict[str, Any] | None = None
    upload: bool = False  # send a small audio file (a track upload or a check)
    form: dict[str, str] | None = None  # form fields sent with the file
    file_field: str = "file"


def _all(status: int, **overrides: int) -> dict[str, int]:
    """`status` for every authenticated role, 401 without a valid key, then the overrides."""
    table = dict.fromkeys(ROLES, status) | {"no_key": 401, "revoked": 401}
    return table | overrides


MATRIX = [
    Row("GET", "/healthz", dict.fromkeys(ROLES, 200)),
    Row("GET", "/readyz", dict.fromkeys(ROLES, 200)),
    Row(
        "POST",
        "/v1/orgs",
        _all(403, operator=201),
        body={"kind": "label", "name": "x"},
    ),
    Row("GET", "/v1/orgs", _all(403, operator=200, auditor=200)),
    Row("GET", "/v1/orgs/me", _all(200)),
    Row("GET", "/v1/orgs/{label_id}", _all(404, operator=200, auditor=200, label=200)),
    Row(
        "POST",
        "/v1/orgs/{label_id}/keys",
        _all(403, operator=201),
        body={"name": "spare"},
    ),
    Row(
        "POST",
        "/v1/orgs/{stranger_id}/keys/{foreign_key_id}/revocation",
        _all(403, operator=200),
        body={"reason": "leaked"},
    ),
    Row(
        "POST", "/v1/orgs/{stranger_id}/suspension", _all(403, operator=200), body={"reason": "why"}
    ),
    Row(
        "POST",
        "/v1/orgs/{stranger_id}/reinstatement",
        _all(403, operator=200),
        body={"reason": "why"},
    ),
    Row(
        "PUT",
        "/v1/orgs/{stranger_id}/credit-limit",
        _all(403, operator=200),
        body={"credit_limit_micros": 5, "reason": "why"},
    ),
    Row("GET", "/v1/orgs/{label_id}/audit", _all(404, operator=200, auditor=200, label=200)),
    Row("GET", "/v1/keys", _all(200)),
    Row("POST", "/v1/keys", _all(201), body={"name": "rotation"}),
    # Another tenant's key: every caller gets 404, whatever its role.
    Row("DELETE", "/v1/keys/{foreign_key_id}", _all(404)),
    Row(
        "POST",
        "/v1/catalogues",
        _all(403, label=201, other_label=201),
        body={"name": "c", "license": {"rate_per_use_micros": 1}},
    ),
    Row("GET", "/v1/catalogues", _all(200, ai_company=403)),
    Row(
        "GET",
        "/v1/catalogues/{catalogue_id}",
        _all(200, ai_company=403, other_label=404),
    ),
    Row(
        "PUT",
        "/v1/catalogues/{catalogue_id}/license",
        _all(403, label=200, other_label=404),
        body={"rate_per_use_micros": 5},
    ),
    Row(
        "GET",
        "/v1/catalogues/{catalogue_id}/license/versions",
        _all(200, ai_company=403, other_label=404),
    ),
    Row(
        "GET",
        "/v1/catalogues/{catalogue_id}/license/versions/{version}",
        _all(200, ai_company=403, other_label=404),
    ),
    Row(
        "POST",
        "/v1/catalogues/{catalogue_id}/tracks",
        _all(403, label=202, other_label=404),
        upload=True,
        form={"title": "t", "artist": "a"},
    ),
    Row(
        "GET",
        "/v1/catalogues/{catalogue_id}/tracks",
        _all(200, ai_company=403, other_label=404),
    ),
    Row("GET", "/v1/tracks/{track_id}", _all(200, ai_company=403, other_label=404)),
    Row("GET", "/v1/tracks/{track_id}/audio", _all(200, ai_company=403, other_label=404)),
    Row("DELETE", "/v1/tracks/{track_id}", _all(403, label=200, other_label=404)),
    Row(
        "PUT",
        "/v1/catalogues/{catalogue_id}/preferences",
        _all(403, label=200, other_label=404),
        body={"entries": {"cawg.ai_training": {"use": "notAllowed"}}},
    ),
    # Preferences are public to AI companies; another label's are not its business.
    Row("GET", "/v1/catalogues/{catalogue_id}/preferences", _all(200, other_label=404)),
    Row("GET", "/v1/catalogues/{catalogue_id}/preferences/versions", _all(200, other_label=404)),
    Row(
        "PUT",
        "/v1/tracks/{track_id}/preferences",
        _all(403, label=200, other_label=404),
        body={"entries": {}},
    ),
    Row("GET", "/v1/tracks/{track_id}/preferences", _all(200, other_label=404)),
    Row(
        "POST",
        "/v1/preferences/lookup",
        _all(403, ai_company=200, auditor=200, operator=200),
        body={"isrcs": ["NOA1B2400001"]},
    ),
    Row("GET", "/v1/preferences/export", _all(403, ai_company=200, auditor=200, operator=200)),
    # The owner gets past access to the package check: a WAV is not a zip (422).
    Row(
        "POST",
        "/v1/catalogues/{catalogue_id}/ddex",
        _all(403, label=422, other_label=404),
        upload=True,
        file_field="package",
    ),
    # Reservations are public: no key needed, and a revoked one does not matter.
    Row("GET", "/.well-known/tdmrep.json", dict.fromkeys(ROLES, 200)),
    Row("GET", "/v1/catalogues/{catalogue_id}/tdmrep.json", dict.fromkeys(ROLES, 200)),
    Row("POST", "/v1/checks", _all(403, ai_company=201), upload=True),
    Row("GET", "/v1/checks", _all(200, label=403, other_label=403)),
    Row("GET", "/v1/checks/{check_id}", _all(200, label=403, other_label=403)),
    # The check used no track, so no label may hear it.
    Row("GET", "/v1/checks/{check_id}/audio", _all(200, label=404, other_label=404)),
    # The world's check charged nothing, so the operator's reversal is refused as a conflict.
    Row(
        "POST",
        "/v1/checks/{check_id}/reversal",
        _all(403, operator=409),
        body={"reason": "test reversal"},
    ),
    Row("GET", "/v1/accounts/me", _all(200)),
    Row("GET", "/v1/ledger/transactions", _all(403, operator=200, auditor=200)),
    Row("GET", "/v1/ledger/verify", _all(403, operator=200, auditor=200)),
    Row("GET", "/v1/ledger/checkpoint", _all(403, operator=200, auditor=200)),
    # A checkpoint this service never signed: readers get 422, the others 403.
    Row(
        "POST",
        "/v1/ledger/verify",
        _all(403, operator=422, auditor=422),
        body={
            "transactions": 0,
            "head_id": None,
            "head_hash": "0" * 64,
            "created_at": "2026-01-01T00:00:00Z",
            "key_id": "0" * 16,
            "signature": "AAAA",
        },
    ),
    # Auditors and operators must name the label (422 without label_id).
    Row("GET", "/v1/royalties", _all(200, ai_company=403, operator=422, auditor=422)),
    Row("GET", "/v1/uses", _all(200)),
    Row("GET", "/v1/periods", _all(200)),
    # The world closed {month}; closing it again closes nothing and answers 200.
    Row("POST", "/v1/periods/{month}/close", _all(403, operator=200)),
    # Documents of closed months; auditors and operators must name the organisation (422).
    Row(
        "GET",
        "/v1/statements/{month}",
        _all(200, ai_company=403, operator=422, auditor=422),
    ),
    Row(
        "GET",
        "/v1/invoices/{month}",
        _all(403, ai_company=200, operator=422, auditor=422),
    ),
    # The use does not exist: the AI company that may dispute gets 404.
    Row(
        "POST",
        "/v1/disputes",
        _all(403, ai_company=404),
        body={"use_id": str(uuid.uuid4()), "reason": "other", "comment": "not ours"},
    ),
    Row("GET", "/v1/disputes", _all(200)),
    # Disputes are checked with real ones in tests/test_disputes.py; here, an unknown id.
    Row("GET", "/v1/disputes/{dispute_id}", _all(404)),
    Row(
        "POST",
        "/v1/disputes/{dispute_id}/release",
        _all(403, label=404, other_label=404),
        body={"reason": "fine by us"},
    ),
    Row(
        "POST",
        "/v1/disputes/{dispute_id}/uphold",
        _all(403, label=404, other_label=404),
        body={"reason": "it is ours"},
    ),
    Row(
        "POST",
        "/v1/disputes/{dispute_id}/appeal",
        _all(403, ai_company=404),
        body={"reason": "look again"},
    ),
    Row(
        "POST",
        "/v1/disputes/{dispute_id}/appeal/decision",
        _all(403, operator=404),
        body={"outcome": "release", "reason": "appeal granted"},
    ),
    Row("GET", "/v1/conflicts", _all(403, label=200, other_label=200, operator=200, auditor=200)),
    # Conflicts are checked with real ones in tests/test_conflicts.py; here, an unknown id.
    Row("GET", "/v1/conflicts/{conflict_id}", _all(404, ai_company=403)),
    Row(
        "POST",
        "/v1/conflicts/{conflict_id}/withdraw-claim",
        _all(403, label=404, other_label=404),
        body={"reason": "not ours"},
    ),
    Row(
        "POST",
        "/v1/conflicts/{conflict_id}/decision",
        _all(403, operator=404),
        body={"winner_label_id": str(uuid.uuid4()), "reason": "their contract"},
    ),
]


@pytest.fixture
def world(client: TestClient, tenants: Tenants, tmp_path: Path) -> dict[str, Any]:
    """One tenant of each kind, a revoked key, and objects owned by `label`."""
    label = tenants.label()
    callers: dict[str, Tenant | None] = {
        "operator": tenants.operator(),
        "label": label,
        "other_label": tenants.label(),
        "ai_company": tenants.ai_company(),
        "auditor": tenants.auditor(),
        "no_key": None,
    }
    doomed = tenants.label()
    doomed_key = client.get("/v1/keys", headers=doomed.headers).json()[0]
    client.delete(f"/v1/keys/{doomed_key['id']}", headers=doomed.headers)
    callers["revoked"] = doomed

    stranger = tenants.ai_company()
    stranger_key = client.get("/v1/keys", headers=stranger.headers).json()[0]
    catalogue = tenants.catalogue(label)
    track = upload(client, label, catalogue["id"], audio_file(tmp_path, seed=1, seconds=2.5))
    params = {
        "label_id": label.id,
        "catalogue_id": catalogue["id"],
        "version": 1,
        "foreign_key_id": stranger_key["id"],
        "stranger_id": stranger.id,
        "track_id": track.json()["id"],
        "month": "2000-01",
        "dispute_id": str(uuid.uuid4()),
        "conflict_id": str(uuid.uuid4()),
    }
    closed = client.post("/v1/periods/2000-01/close", headers=callers["operator"].headers)
    assert closed.status_code == 200, closed.text
    sample = audio_file(tmp_path, seed=2, seconds=2.5).read_bytes()
    check = submit_check(client, callers["ai_company"], audio_file(tmp_path, seed=3, seconds=3))
    params["check_id"] = check.json()["id"]
    return {"callers": callers, "params": params, "sample": sample}


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: f"{r.method} {r.path}")
def test_access(client: TestClient, world: dict[str, Any], row: Row) -> None:
    path = row.path.format(**world["params"])
    got: dict[str, int] = {}
    for role in ROLES:
        caller: Tenant | None = world["callers"][role]
        headers = (caller.headers if caller else {}) | {"Idempotency-Key": uuid.uuid4().hex}
        if row.upload:
            response = client.request(
                row.method,
                path,
                data=row.form or {},
                files={row.file_field: ("sample.wav", world["sample"])},
                headers=headers,
            )
        else:
            response = client.request(row.method, path, json=row.body, headers=headers)
        got[role] = response.status_code
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, response.text
    assert got == row.expected


def test_matrix_covers_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {
        (method.upper(), _canonical(path))
        for path, operations in spec["paths"].items()
        for method in operations
    }
    covered = {(row.method, _canonical(row.path)) for row in MATRIX}
    assert routes == covered


def _canonical(path: str) -> str:
    """Path with every {param} replaced, so templates match whatever their names."""
    parts = [("{}" if part.startswith("{") else part) for part in path.split("/")]
    return "/".join(parts)


def test_unknown_ids_answer_404_like_foreign_ones(client: TestClient, tenants: Tenants) -> None:
    label = tenants.label()
    response = client.get(f"/v1/catalogues/{uuid.uuid4()}", headers=label.headers)
    assert response.status_code == 404
