"""Tenant isolation, generated from the route table: another tenant's ids are always 404.

Two tenants of each kind (label, AI company) own one of everything: organisation, keys,
catalogue, track, check. For every route with an id in its path, each tenant calls it with the
other tenant's ids (and a body generated from the route's documented schema, so validation
never answers first): the answer is 404, or 403 when the caller's role may not use the route
at all. For every listing that filters by an id, the other tenant's objects never appear. A
route whose path parameter this test cannot fill fails `test_every_path_parameter_is_known`,
so a new route cannot ship uncovered.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from app.orgs.models import OrgKind
from tests.audio_synth import melody_track
from tests.factories import Tenant, Tenants, audio_file, run_jobs, submit_check, upload
from tests.worlds import RATE, SEEDS, SR, Music, excerpt

PARAM = re.compile(r"\{(\w+)\}")
TENANT_KINDS = (OrgKind.LABEL, OrgKind.AI_COMPANY)


@dataclass(frozen=True)
class Side:
    """One tenant of each kind and the objects they own."""

    label: Tenant
    company: Tenant
    ids: dict[str, dict[OrgKind, str]]  # parameter -> the id as seen by a caller of a kind

    def caller(self, kind: OrgKind) -> Tenant:
        return self.label if kind is OrgKind.LABEL else self.company

    def every_id(self) -> set[str]:
        return {i for by_kind in self.ids.values() for i in by_kind.values()}


def _side(
    client: TestClient, tenants: Tenants, music: Music, run: Callable[[], None], seed: int
) -> Side:
    label, company = tenants.label(), tenants.ai_company()
    catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
    track = upload(client, label, catalogue["id"], music.track(seed))
    assert track.status_code == 202
    run()  # index the track, so the check below pays a use the company can dispute
    piece = music.write(f"isolation-{seed}", lambda: excerpt(seed, 4.0, 12.0))
    check = submit_check(client, company, piece)
    assert check.status_code == 201
    [use] = [m for m in check.json()["matches"] if m["is_use"]]
    uses = client.get(
        "/v1/uses", params={"check_id": check.json()["id"]}, headers=company.headers
    ).json()["items"]
    dispute = client.post(
        "/v1/disputes",
        json={"use_id": uses[0]["id"], "reason": "other", "comment": "isolation"},
        headers=company.headers,
    )
    assert dispute.status_code == 201, dispute.text
    assert use["track_id"] == track.json()["id"]
    # The label registers the recording again (quieter): a duplicate it is a party to.
    again = music.write(f"isolation-again-{seed}", lambda: 0.9 * melody_track(
        seed, seconds=30.0, sr=SR, timbre=SEEDS[seed]))  # fmt: skip
    assert upload(client, label, catalogue["id"], again).status_code == 202
    run()
    [duplicate] = client.get("/v1/conflicts", headers=label.headers).json()["items"]
    keys = {
        t.kind: client.post("/v1/keys", json={"name": "spare"}, headers=t.headers).json()["id"]
        for t in (label, company)
    }
    objects = {"catalogue_id": catalogue["id"], "track_id": track.json()["id"]}
    objects["check_id"] = check.json()["id"]
    objects["dispute_id"] = dispute.json()["id"]
    objects["conflict_id"] = duplicate["id"]
    ids: dict[str, dict[OrgKind, str]] = {
        "org_id": {OrgKind.LABEL: str(label.id), OrgKind.AI_COMPANY: str(company.id)},
        "key_id": keys,
    }
    # Objects a caller of either kind might name: the same id whichever kind asks.
    for name, value in objects.items():
        ids[name] = dict.fromkeys(TENANT_KINDS, value)
    return Side(label, company, ids)


# Training preferences are public to AI companies (they must be able to honour any label's
# reservations before training): these routes answer an AI company for any catalogue or track,
# and stay closed to other labels.
PUBLIC_TO_AI_COMPANIES = {
    ("GET", "/v1/catalogues/{catalogue_id}/preferences"),
    ("GET", "/v1/catalogues/{catalogue_id}/preferences/versions"),
    ("GET", "/v1/tracks/{track_id}/preferences"),
}

# Public by law and by W3C TDMRep: a catalogue's reservations are read without an account.
PUBLIC = {("GET", "/v1/catalogues/{catalogue_id}/tdmrep.json")}

# Path parameters that are not tenant ids, with a value that exists for every tenant.
NOT_IDS = {"version": "1", "month": "2026-01"}


def _routes() -> list[tuple[str, str]]:
    """Every (method, path) the application routes (its OpenAPI document is built from the
    route table; the only routes left out of it are the docs pages and their assets)."""
    spec = create_app().openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    )


ROUTES = _routes()
# Routes that name a tenant's object (a month alone names the caller's own statement).
WITH_IDS = [(m, p) for m, p in ROUTES if set(PARAM.findall(p)) - set(NOT_IDS)]


def test_every_path_parameter_is_known() -> None:
    """A new route with a new kind of id fails here until this test can fill it."""
    names = {name for _, path in ROUTES for name in PARAM.findall(path)}
    known = {"org_id", "key_id", "catalogue_id", "track_id", "check_id", "dispute_id"}
    known |= {"conflict_id"}
    known |= set(NOT_IDS)
    assert names <= known, f"teach tests/test_tenant_isolation.py these ids: {names - known}"
    assert len(WITH_IDS) >= 15  # the route table was read


@pytest.fixture
def sides(
    client: TestClient, tenants: Tenants, music: Music, settings: Settings, engine: Engine
) -> tuple[Side, Side]:
    def run() -> None:
        run_jobs(settings, engine)
        client.app.state.service.index.sync()  # type: ignore[attr-defined]

    return _side(client, tenants, music, run, 11), _side(client, tenants, music, run, 12)


def _example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A small value that satisfies a JSON schema (enough for the routes' bodies)."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            options = [s for s in schema[combined] if s.get("type") != "null"]
            return _example(options[0], components) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        required = set(schema.get("required", ()))
        return {
            name: _example(prop, components)
            for name, prop in schema.get("properties", {}).items()
            if name in required
        }
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    return "x" * max(3, schema.get("minLength", 3))


def _request(
    client: TestClient,
    method: str,
    template: str,
    url: str,
    caller: Tenant,
    spec: dict[str, Any],
    sample: bytes,
) -> Any:
    content = spec["paths"][template][method.lower()].get("requestBody", {}).get("content", {})
    components = spec["components"]["schemas"]
    headers = caller.headers | {"Idempotency-Key": uuid.uuid4().hex}
    if "application/json" in content:
        body = _example(content["application/json"]["schema"], components)
        return client.request(method, url, json=body, headers=headers)
    if "multipart/form-data" in content:
        schema = content["multipart/form-data"]["schema"]
        form = _example(schema, components)
        properties = components[schema["$ref"].rsplit("/", 1)[-1]]["properties"]
        # Every file field gets the sample (a route that wants a zip refuses it after the
        # ownership check, which is what this test is about).
        binary = [n for n, p in properties.items() if _is_file(p)]
        assert binary, f"{template}: a multipart body without a file field"
        for name in binary:
            form.pop(name, None)
        files = dict.fromkeys(binary, ("sample.wav", sample))
        return client.request(method, url, data=form, files=files, headers=headers)
    return client.request(method, url, headers=headers)


def _is_file(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "binary" or "contentMediaType" in schema


def _fill(template: str, ids: dict[str, dict[OrgKind, str]], kind: OrgKind) -> str:
    return PARAM.sub(lambda m: NOT_IDS.get(m.group(1)) or ids[m.group(1)][kind], template)


def test_another_tenants_ids_are_404_on_every_route(
    client: TestClient, sides: tuple[Side, Side], tmp_path: Path
) -> None:
    """Every route with an id, in one test (the tenants are built once; no call here changes
    anything, as every one is refused). Failures are collected and reported by route."""
    spec = client.get("/openapi.json").json()
    sample = audio_file(tmp_path, seed=9, seconds=2.5).read_bytes()
    failures: list[str] = []
    for method, template in WITH_IDS:
        try:
            _foreign_ids_refused(client, spec, sample, sides, method, template)
        except AssertionError as exc:
            failures.append(f"{method} {template}: {exc}")
    assert not failures, "\n".join(failures)


def _foreign_ids_refused(
    client: TestClient,
    spec: dict[str, Any],
    sample: bytes,
    sides: tuple[Side, Side],
    method: str,
    template: str,
) -> None:
    for owner, intruder in (sides, sides[::-1]):
        for kind in TENANT_KINDS:
            caller = intruder.caller(kind)
            foreign = _request(
                client, method, template, _fill(template, owner.ids, kind), caller, spec, sample
            )
            public = (method, template) in PUBLIC
            if public or (
                kind is OrgKind.AI_COMPANY and (method, template) in PUBLIC_TO_AI_COMPANIES
            ):
                assert foreign.status_code == 200, (kind.value, foreign.text)
                continue
            assert foreign.status_code in (403, 404), (kind.value, foreign.text)
            assert set(foreign.json()) == {"error"}
            if foreign.status_code == 403:
                # Only a role refusal, never a hint that the object exists: the caller's own
                # ids are refused the same way.
                assert foreign.json()["error"]["code"] == "forbidden", foreign.text
                own = client.request(
                    method, _fill(template, intruder.ids, kind), headers=caller.headers
                )
                assert own.status_code in (403, 422), (kind.value, own.text)
            for leaked in owner.every_id() - set(NOT_IDS.values()):
                assert leaked not in foreign.text or leaked in foreign.request.url.path


# Query parameters that name a tenant's object (external_id is the label's own text).
ID_FILTERS = {"label_id", "ai_company_id", "catalogue_id", "track_id", "check_id"}


def _filters(spec: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for path, operations in spec["paths"].items():
        for parameter in operations.get("get", {}).get("parameters", []):
            name = parameter["name"]
            if parameter["in"] == "query" and name in ID_FILTERS:
                found.append((path, parameter["name"]))
    return found


def test_filters_by_another_tenants_ids_show_none_of_its_objects(
    client: TestClient, sides: tuple[Side, Side]
) -> None:
    spec = client.get("/openapi.json").json()
    filters = _filters(spec)
    assert len(filters) >= 8
    for owner, intruder in (sides, sides[::-1]):
        for kind in TENANT_KINDS:
            caller = intruder.caller(kind)
            for path, name in filters:
                kind_of_id = OrgKind.LABEL if name == "label_id" else OrgKind.AI_COMPANY
                value = (
                    owner.ids["org_id"][kind_of_id]
                    if name in ("label_id", "ai_company_id")
                    else owner.ids[name][kind]
                )
                for fmt in ("json", "csv"):
                    response = client.get(
                        path, params={name: value, "format": fmt}, headers=caller.headers
                    )
                    assert response.status_code in (200, 403, 422), (path, response.text)
                    if response.status_code == 200:
                        shown = response.text.replace(value, "")
                        leaked = [i for i in owner.every_id() if i in shown]
                        assert not leaked, (kind, path, name, leaked)
