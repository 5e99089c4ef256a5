"""Hostile and malformed input: each answered with a 4xx in the error shape, nothing left behind.

Every value here once made the service answer 500 (PostgreSQL refusing what Python accepted)
or could: NUL and other control characters, lone surrogates, JSON numbers PostgreSQL cannot
store, nesting deep enough to exhaust the parser's stack, integers beyond the columns' range,
instants that leave years 1..9999 once moved to UTC, strings over their limits.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine

from app.config import Settings
from tests.factories import Tenant, Tenants, audio_file, scalar, submit_check, upload

LATE = "9999-12-31T23:59:59-14:00"  # year 10000 in UTC
EARLY = "0001-01-01T00:00:00+14:00"  # year 0 in UTC
BAD_TEXT = ["a\x00b", "a\x07b", "\ud800", "x" * 10_000]


def _refused(response: Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    return body["error"]


def _cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.fixture
def people(tenants: Tenants) -> dict[str, Tenant]:
    return {
        "operator": tenants.operator(),
        "label": tenants.label(),
        "company": tenants.ai_company(),
        "auditor": tenants.auditor(),
    }


@pytest.mark.parametrize("text", BAD_TEXT, ids=["nul", "bell", "surrogate", "long"])
def test_bad_text_in_every_json_text_field_is_422(
    client: TestClient, people: dict[str, Tenant], tenants: Tenants, text: str
) -> None:
    label, operator = people["label"], people["operator"]
    catalogue = tenants.catalogue(label)
    attempts = [
        ("POST", "/v1/orgs", operator, {"kind": "label", "name": text}),
        ("POST", "/v1/keys", label, {"name": text}),
        ("POST", f"/v1/orgs/{label.id}/keys", operator, {"name": text}),
        ("POST", "/v1/catalogues", label, {"name": text, "license": {"rate_per_use_micros": 1}}),
        (
            "POST",
            "/v1/catalogues",
            label,
            {"name": "c", "description": text, "license": {"rate_per_use_micros": 1}},
        ),
        ("POST", f"/v1/checks/{uuid.uuid4()}/reversal", operator, {"reason": text}),
    ]
    for method, path, caller, body in attempts:
        # Sent as raw JSON so lone surrogates travel as \ud800 escapes, as a client would.
        response = client.request(
            method,
            path,
            content=json.dumps(body),
            headers=caller.headers | {"Content-Type": "application/json"},
        )
        error = _refused(response)
        assert error["code"] == "validation_error", (path, error)
    assert scalar(client.app.state.service.engine, "SELECT count(*) FROM catalogues") == 1  # type: ignore[attr-defined]
    assert catalogue["name"]


def test_multiline_text_keeps_tabs_and_newlines(
    client: TestClient, people: dict[str, Tenant]
) -> None:
    response = client.post(
        "/v1/catalogues",
        json={"name": "c", "description": "a\tb\nc\r\n", "license": {"rate_per_use_micros": 1}},
        headers=people["label"].headers,
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("text", [*BAD_TEXT[:2], "x" * 10_000], ids=["nul", "bell", "long"])
def test_bad_text_in_upload_and_check_fields_is_422_and_stores_nothing(
    client: TestClient,
    people: dict[str, Tenant],
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    text: str,
) -> None:
    label, company = people["label"], people["company"]
    catalogue = tenants.catalogue(label)
    path = audio_file(tmp_path, seed=1, seconds=3.0)
    for field in ("title", "artist", "external_id"):
        _refused(upload(client, label, catalogue["id"], path, **{field: text}))
    for field in ("generation_id", "model"):
        _refused(submit_check(client, company, path, **{field: text}))
    assert scalar(engine, "SELECT count(*) FROM tracks") == 0
    assert scalar(engine, "SELECT count(*) FROM checks") == 0
    assert scalar(engine, "SELECT count(*) FROM idempotency_keys") == 0
    assert not list((settings.blob_dir / "staging").glob("*"))


@pytest.mark.parametrize(
    "metadata",
    [
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": -Infinity}',
        '{"x": 1e400}',
        '{"x": "\\ud800"}',
        '{"\\udfff": 1}',
        '{"x": "a\\u0000b"}',
        '{"x": ' + "9" * 5000 + "}",
        '{"x": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"x": ' + '{"y": ' * 40 + "1" + "}" * 40 + "}",
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "overflow",
        "lone-surrogate",
        "surrogate-key",
        "nul",
        "5000-digits",
        "5000-deep",
        "40-deep",
    ],
)
def test_check_metadata_that_jsonb_cannot_store_is_422(
    client: TestClient, people: dict[str, Tenant], engine: Engine, tmp_path: Path, metadata: str
) -> None:
    path = audio_file(tmp_path, seed=1, seconds=3.0)
    error = _refused(submit_check(client, people["company"], path, metadata=metadata))
    assert "body.metadata" in [d["field"] for d in error["details"]]
    assert scalar(engine, "SELECT count(*) FROM idempotency_keys") == 0


def test_nul_in_query_parameters_is_422(
    client: TestClient, people: dict[str, Tenant], tenants: Tenants
) -> None:
    label, company = people["label"], people["company"]
    catalogue = tenants.catalogue(label)
    for path, caller in [
        (f"/v1/catalogues/{catalogue['id']}/tracks?external_id=%00", label),
        ("/v1/checks?generation_id=a%00b", company),
        ("/v1/orgs?cursor=%00", people["operator"]),
    ]:
        _refused(client.get(path, headers=caller.headers))


@pytest.mark.parametrize("version", ["2147483648", "99999999999999999999999", "0", "-1"])
def test_path_integers_beyond_their_range_are_422(
    client: TestClient, people: dict[str, Tenant], tenants: Tenants, version: str
) -> None:
    catalogue = tenants.catalogue(people["label"])
    response = client.get(
        f"/v1/catalogues/{catalogue['id']}/license/versions/{version}",
        headers=people["label"].headers,
    )
    _refused(response)


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/ledger/transactions", _cursor("99999999999999999999999")),
        ("/v1/ledger/transactions", _cursor(9)),
        ("/v1/orgs", _cursor(LATE, "00000000-0000-4000-8000-000000000001")),
        ("/v1/orgs", _cursor(EARLY, "00000000-0000-4000-8000-000000000002")),
        ("/v1/orgs", _cursor("2026-01-01T00:00:00+00:00", "not-a-uuid")),
        ("/v1/orgs", _cursor("2026-01-01T00:00:00+00:00")),
        ("/v1/orgs", "!!!"),
    ],
)
def test_cursors_holding_values_out_of_range_are_422(
    client: TestClient, people: dict[str, Tenant], path: str, cursor: str
) -> None:
    response = client.get(path, params={"cursor": cursor}, headers=people["operator"].headers)
    assert _refused(response)["details"][0]["field"] == "query.cursor"


@pytest.mark.parametrize(
    "terms",
    [
        {"valid_to": LATE},
        {"valid_from": EARLY},
        {"valid_from": "2026-01-01T00:00:00Z", "valid_to": "2025-01-01T00:00:00Z"},
        {"valid_from": "2026-01-01T00:00:00"},  # no zone: ambiguous
        {"rate_per_use_micros": 10**12 + 1},
        {"rate_per_use_micros": -1},
        {"rate_per_use_micros": 1.5},
        {"threshold": 1.0000001},
        {"threshold": -0.1},
    ],
)
def test_license_terms_out_of_range_are_422(
    client: TestClient, people: dict[str, Tenant], tenants: Tenants, terms: dict[str, Any]
) -> None:
    catalogue = tenants.catalogue(people["label"])
    body = {"rate_per_use_micros": 1} | terms
    response = client.put(
        f"/v1/catalogues/{catalogue['id']}/license", json=body, headers=people["label"].headers
    )
    _refused(response)
    created = client.post(
        "/v1/catalogues",
        json={"name": "c", "license": body},
        headers=people["label"].headers,
    )
    _refused(created)


def test_license_terms_at_their_limits_are_accepted(
    client: TestClient, people: dict[str, Tenant], tenants: Tenants
) -> None:
    catalogue = tenants.catalogue(people["label"])
    body = {
        "rate_per_use_micros": 10**12,
        "threshold": 1.0,
        "valid_from": "0001-01-01T00:00:00Z",
        "valid_to": "9999-12-31T23:59:59Z",
    }
    response = client.put(
        f"/v1/catalogues/{catalogue['id']}/license", json=body, headers=people["label"].headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("when", [LATE, EARLY, "not-a-date"])
def test_query_instants_out_of_range_are_422(
    client: TestClient, people: dict[str, Tenant], when: str
) -> None:
    for path, caller in [
        ("/v1/uses", people["auditor"]),
        ("/v1/checks", people["company"]),
        ("/v1/ledger/transactions", people["auditor"]),
        ("/v1/royalties", people["label"]),
    ]:
        for bound in ("from", "to"):
            _refused(client.get(path, params={bound: when}, headers=caller.headers))


def test_reversed_periods_are_422(client: TestClient, people: dict[str, Tenant]) -> None:
    period = {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    for path, caller in [
        ("/v1/uses", people["auditor"]),
        ("/v1/checks", people["company"]),
        ("/v1/ledger/transactions", people["auditor"]),
        ("/v1/royalties", people["label"]),
    ]:
        error = _refused(client.get(path, params=period, headers=caller.headers))
        assert "query.to" in [d["field"] for d in error["details"]]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\nnot multipart"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
        ("multipart/form-data; boundary=x", b"garbage without any boundary"),
        ("application/json", b'{"title": "t"}'),
        ("text/plain", b"hello"),
    ],
)
def test_malformed_multipart_is_a_4xx_and_stores_nothing(
    client: TestClient,
    people: dict[str, Tenant],
    tenants: Tenants,
    engine: Engine,
    content_type: str,
    body: bytes,
) -> None:
    catalogue = tenants.catalogue(people["label"])
    upload_response = client.post(
        f"/v1/catalogues/{catalogue['id']}/tracks",
        content=body,
        headers=people["label"].headers | {"Content-Type": content_type},
    )
    error = _refused(upload_response, upload_response.status_code)
    assert 400 <= upload_response.status_code < 500, error
    check_response = client.post(
        "/v1/checks",
        content=body,
        headers=people["company"].headers
        | {"Content-Type": content_type, "Idempotency-Key": "k-1"},
    )
    assert 400 <= check_response.status_code < 500, check_response.text
    _refused(check_response, check_response.status_code)
    assert scalar(engine, "SELECT count(*) FROM tracks") == 0
    assert scalar(engine, "SELECT count(*) FROM idempotency_keys") == 0


def test_malformed_json_is_422(client: TestClient, people: dict[str, Tenant]) -> None:
    for body in (b"{", b"[]", b'{"kind": "label", "name": "x"' + b" " * 10, b"\xff\xfe"):
        response = client.post(
            "/v1/orgs",
            content=body,
            headers=people["operator"].headers | {"Content-Type": "application/json"},
        )
        _refused(response)


# --- hostile audio, through both endpoints ---------------------------------------------------


def _wav_claiming(path: Path, seconds_claimed: float) -> Path:
    """A 3 s WAV whose header claims `seconds_claimed` of audio."""
    data = bytearray(audio_file(path.parent, seed=4, seconds=3.0, sr=8000, name=path.name)
                     .read_bytes())  # fmt: skip
    claimed = int(seconds_claimed * 8000 * 2)
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", min(claimed, 2**32 - 1))
    data[4:8] = struct.pack("<I", min(claimed + at, 2**32 - 1))
    path.write_bytes(bytes(data))
    return path


def _flac_claiming(path: Path, seconds_claimed: float) -> Path:
    """A 3 s FLAC whose STREAMINFO claims `seconds_claimed` of audio."""
    source = audio_file(path.parent, seed=5, seconds=3.0, sr=8000, fmt="FLAC", name=path.name)
    data = bytearray(source.read_bytes())
    # STREAMINFO: 8 bytes after "fLaC" and the block header, 64 bits hold rate (20), channels
    # (3), bits per sample (5) and the total sample count (36).
    packed = int.from_bytes(data[18:26], "big")
    total = int(seconds_claimed * 8000) & (2**36 - 1)
    data[18:26] = ((packed & ~(2**36 - 1)) | total).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _constant_flac(path: Path, seconds: float) -> Path:
    """A decompression bomb in time: hours of a constant in a few hundred kB of FLAC."""
    block = np.full(60 * 8000, 0.25, dtype=np.float32)
    with sf.SoundFile(str(path), "w", samplerate=8000, channels=1, format="FLAC") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    return path


def _truncated(path: Path, fmt: str) -> Path:
    whole = audio_file(path.parent, seed=6, seconds=12.0, fmt=fmt, name=f"whole.{fmt.lower()}")
    path.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 3])
    return path


HOSTILE_AUDIO = {
    "empty": lambda d: _bytes(d / "empty.wav", b""),
    "random bytes": lambda d: _bytes(d / "noise.mp3", bytes(range(256)) * 200),
    "riff header only": lambda d: _bytes(d / "riff.wav", b"RIFF\xff\xff\xff\xffWAVEfmt "),
    "wav claiming ten hours": lambda d: _wav_claiming(d / "hours.wav", 36_000),
    "flac claiming ten hours": lambda d: _flac_claiming(d / "hours.flac", 36_000),
    "two hours of flac in kilobytes": lambda d: _constant_flac(d / "bomb.flac", 7200),
    "wav cut short": lambda d: _truncated(d / "cut.wav", "WAV"),
    "id3 tag and nothing": lambda d: _bytes(d / "tag.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00"),
}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make", list(HOSTILE_AUDIO.values()), ids=list(HOSTILE_AUDIO))
def test_hostile_audio_is_a_4xx_on_upload_and_check_and_leaves_nothing(
    client: TestClient,
    people: dict[str, Tenant],
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    make: Any,
) -> None:
    path = make(tmp_path)
    catalogue = tenants.catalogue(people["label"])
    uploaded = upload(client, people["label"], catalogue["id"], path)
    error = _refused(uploaded, uploaded.status_code)
    assert uploaded.status_code in (413, 422), error
    checked = submit_check(client, people["company"], path)
    error = _refused(checked, checked.status_code)
    assert checked.status_code in (413, 422), error
    for table in ("tracks", "checks", "idempotency_keys", "ledger_transactions"):
        assert scalar(engine, f"SELECT count(*) FROM {table}") == 0, table
    assert not [p for p in settings.blob_dir.rglob("*") if p.is_file()]
