"""Training preferences: versioned defaults and overrides, the most restrictive wins; the
lookup and export AI companies read before training; the public TDMRep files."""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.pagination import Page
from app.rights.schemas import LookupResult, RecordingRead
from tests.factories import Tenant, Tenants, audio_file, upload

POLICY = "https://label.example/ai-policy"
OTHER_POLICY = "https://label.example/track-policy"
ASSERTIONS = (
    "cawg.data_mining",
    "cawg.ai_training",
    "cawg.ai_generative_training",
    "cawg.ai_inference",
)


_serial = itertools.count(1)


def _tracks(
    client: TestClient, label: Tenant, catalogue_id: str, tmp_path: Path, n: int, **fields: str
) -> list[dict[str, Any]]:
    """`n` tracks of 2.5 s, each with audio and an ISRC of its own."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    made = []
    for _ in range(n):
        serial = next(_serial)
        path = audio_file(tmp_path, seed=1000 + serial, seconds=2.5)
        response = upload(client, label, catalogue_id, path, isrc=f"NOA1B24{serial:05d}", **fields)
        assert response.status_code == 202, response.text
        made.append(response.json())
    return made


def _put(client: TestClient, tenant: Tenant, path: str, entries: dict[str, Any]) -> Any:
    return client.put(path, json={"entries": entries}, headers=tenant.headers)


def _uses(body: dict[str, Any]) -> dict[str, str]:
    return {a: e["use"] for a, e in body["entries"].items()}


@pytest.fixture
def shelf(client: TestClient, tenants: Tenants, tmp_path: Path) -> dict[str, Any]:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    tracks = _tracks(client, label, catalogue["id"], tmp_path, 3)
    return {
        "label": label,
        "catalogue": catalogue,
        "tracks": tracks,
        "company": tenants.ai_company(),
        "auditor": tenants.auditor(),
    }


def test_without_preferences_every_use_is_allowed_and_unversioned(
    client: TestClient, shelf: dict[str, Any]
) -> None:
    track = shelf["tracks"][0]
    body = client.get(
        f"/v1/tracks/{track['id']}/preferences", headers=shelf["company"].headers
    ).json()
    assert body["preferences_version"] is None
    assert _uses(body) == dict.fromkeys(ASSERTIONS, "allowed")
    assert {e["source"] for e in body["entries"].values()} == {"unset"}


def test_the_most_restrictive_of_default_and_override_wins_use_by_use(
    client: TestClient, shelf: dict[str, Any]
) -> None:
    label, catalogue = shelf["label"], shelf["catalogue"]
    first, second, _ = shelf["tracks"]
    default = _put(
        client,
        label,
        f"/v1/catalogues/{catalogue['id']}/preferences",
        {
            "cawg.ai_training": {"use": "constrained", "constraints_info": POLICY},
            "cawg.ai_inference": {"use": "notAllowed"},
        },
    )
    assert default.status_code == 200, default.text
    assert default.json()["version"] == 1
    assert _uses(default.json()) == {
        "cawg.data_mining": "allowed",  # left out of a default: allowed
        "cawg.ai_training": "constrained",
        "cawg.ai_generative_training": "allowed",
        "cawg.ai_inference": "notAllowed",
    }
    # The override tightens generative training and tries to open inference: it cannot.
    override = _put(
        client,
        label,
        f"/v1/tracks/{first['id']}/preferences",
        {
            "cawg.ai_generative_training": {"use": "notAllowed"},
            "cawg.ai_inference": {"use": "allowed"},
            "cawg.ai_training": {"use": "constrained", "constraints_info": OTHER_POLICY},
        },
    )
    assert override.status_code == 200, override.text
    assert override.json()["version"] == 2
    assert override.json()["track_id"] == first["id"]

    effective = client.get(
        f"/v1/tracks/{first['id']}/preferences", headers=shelf["company"].headers
    ).json()
    assert effective["preferences_version"] == 2
    entries = effective["entries"]
    assert entries["cawg.data_mining"] == {
        "use": "allowed",
        "constraints_info": None,
        "source": "catalogue",
    }
    assert entries["cawg.ai_generative_training"]["use"] == "notAllowed"
    assert entries["cawg.ai_generative_training"]["source"] == "track"
    assert entries["cawg.ai_inference"]["use"] == "notAllowed"
    assert entries["cawg.ai_inference"]["source"] == "catalogue"
    # Both constrained: the track's own, more specific policy is the one reported.
    assert entries["cawg.ai_training"]["constraints_info"] == OTHER_POLICY

    untouched = client.get(
        f"/v1/tracks/{second['id']}/preferences", headers=shelf["label"].headers
    ).json()
    assert _uses(untouched) == _uses(default.json())
    assert untouched["preferences_version"] == 1


def test_changes_append_versions_and_history_stays_readable(
    client: TestClient, shelf: dict[str, Any]
) -> None:
    label, catalogue = shelf["label"], shelf["catalogue"]
    path = f"/v1/catalogues/{catalogue['id']}/preferences"
    _put(client, label, path, {"cawg.ai_generative_training": {"use": "notAllowed"}})
    _put(client, label, f"/v1/tracks/{shelf['tracks'][0]['id']}/preferences", {})
    _put(client, label, path, {"cawg.ai_generative_training": {"use": "allowed"}})

    current = client.get(path, headers=label.headers).json()
    assert current["preferences_version"] == 3
    assert current["entries"]["cawg.ai_generative_training"]["use"] == "allowed"

    history = client.get(f"{path}/versions", headers=shelf["auditor"].headers).json()
    assert [v["version"] for v in history["items"]] == [1, 2, 3]
    assert history["items"][0]["entries"]["cawg.ai_generative_training"]["use"] == "notAllowed"
    assert history["items"][1]["track_id"] == shelf["tracks"][0]["id"]
    assert history["items"][1]["entries"] == {}
    defaults = client.get(
        f"{path}/versions", params={"defaults_only": True, "limit": 1}, headers=label.headers
    ).json()
    assert [v["version"] for v in defaults["items"]] == [1]
    rest = client.get(
        f"{path}/versions",
        params={"defaults_only": True, "cursor": defaults["next_cursor"]},
        headers=label.headers,
    ).json()
    assert [v["version"] for v in rest["items"]] == [3]


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ({"cawg.ai_training": {"use": "constrained"}}, "body.entries.cawg.ai_training"),
        (
            {"cawg.ai_training": {"use": "allowed", "constraints_info": POLICY}},
            "body.entries.cawg.ai_training",
        ),
        (
            {"cawg.ai_training": {"use": "constrained", "constraints_info": "see our site"}},
            "body.entries.cawg.ai_training",
        ),
        ({"cawg.ai_training": {"use": "maybe"}}, "body.entries.cawg.ai_training.use"),
        ({"cawg.sing_along": {"use": "allowed"}}, "body.entries.cawg.sing_along"),
    ],
)
def test_bad_preferences_are_422_naming_the_field(
    client: TestClient, shelf: dict[str, Any], entries: dict[str, Any], field: str
) -> None:
    response = _put(
        client, shelf["label"], f"/v1/catalogues/{shelf['catalogue']['id']}/preferences", entries
    )
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(f.startswith(field) for f in fields), fields


def test_only_the_owning_label_sets_preferences(
    client: TestClient, shelf: dict[str, Any], tenants: Tenants
) -> None:
    stranger = tenants.label()
    body = {"cawg.ai_training": {"use": "notAllowed"}}
    catalogue_path = f"/v1/catalogues/{shelf['catalogue']['id']}/preferences"
    track_path = f"/v1/tracks/{shelf['tracks'][0]['id']}/preferences"
    assert _put(client, stranger, catalogue_path, body).status_code == 404
    assert _put(client, stranger, track_path, body).status_code == 404
    assert client.get(track_path, headers=stranger.headers).status_code == 404
    assert _put(client, shelf["company"], track_path, body).status_code == 403
    assert client.get(track_path, headers=shelf["company"].headers).status_code == 200


def test_lookup_answers_isrcs_and_ids_and_lists_what_it_cannot_find(
    client: TestClient, shelf: dict[str, Any], tenants: Tenants, tmp_path: Path
) -> None:
    label, company = shelf["label"], shelf["company"]
    first, second, third = shelf["tracks"]
    _put(
        client,
        label,
        f"/v1/tracks/{second['id']}/preferences",
        {"cawg.ai_generative_training": {"use": "notAllowed"}},
    )
    client.put(
        f"/v1/catalogues/{shelf['catalogue']['id']}/license",
        json={"rate_per_use_micros": 7},
        headers=label.headers,
    )
    client.delete(f"/v1/tracks/{third['id']}", headers=label.headers)
    unknown_id = str(uuid.uuid4())
    response = client.post(
        "/v1/preferences/lookup",
        json={
            "isrcs": [first["isrc"], "no-a1b-99-99999", second["isrc"].lower(), third["isrc"]],
            "track_ids": [second["id"], unknown_id],
        },
        headers=company.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Built without the model for speed; it must still be exactly the documented shape.
    assert LookupResult.model_validate(body).model_dump(mode="json") == body
    assert [(i["query"], i["track_id"]) for i in body["items"]] == [
        (first["isrc"], first["id"]),
        (second["isrc"], second["id"]),
        (second["id"], second["id"]),
    ]
    assert body["not_found"] == ["NOA1B9999999", third["isrc"], unknown_id]
    by_query = {i["query"]: i for i in body["items"]}
    assert by_query[first["isrc"]]["terms_version"] == 2
    assert by_query[first["isrc"]]["licensed"] is True
    assert by_query[first["isrc"]]["entries"]["cawg.ai_generative_training"]["use"] == "allowed"
    assert by_query[second["id"]]["entries"]["cawg.ai_generative_training"]["use"] == "notAllowed"
    assert by_query[second["id"]]["preferences_version"] == 1
    assert by_query[second["id"]]["label_id"] == str(label.id)


def test_lookup_limits_and_bad_isrcs_are_422(client: TestClient, shelf: dict[str, Any]) -> None:
    company = shelf["company"]
    too_many = [f"NOA1B{i:07d}" for i in range(10_001)]
    response = client.post(
        "/v1/preferences/lookup", json={"isrcs": too_many}, headers=company.headers
    )
    assert response.status_code == 422
    assert (
        client.post("/v1/preferences/lookup", json={}, headers=company.headers).status_code == 422
    )
    bad = client.post(
        "/v1/preferences/lookup",
        json={"isrcs": [shelf["tracks"][0]["isrc"], "not-an-isrc"]},
        headers=company.headers,
    )
    assert bad.status_code == 422
    assert [d["field"] for d in bad.json()["error"]["details"]] == ["body.isrcs.1"]
    allowed = client.post(
        "/v1/preferences/lookup",
        json={"isrcs": [f"NOA1B{i:07d}" for i in range(10_000)]},
        headers=company.headers,
    )
    assert allowed.status_code == 200
    assert len(allowed.json()["not_found"]) == 10_000


def _export(client: TestClient, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(
            "/v1/preferences/export",
            params=params | ({"cursor": cursor} if cursor else {}),
            headers=tenant.headers,
        )
        assert page.status_code == 200, page.text
        assert (
            Page[RecordingRead].model_validate(page.json()).model_dump(mode="json") == page.json()
        )
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def test_export_lists_what_a_use_is_permitted_on_in_pages_csv_and_jsonl(
    client: TestClient, shelf: dict[str, Any], tenants: Tenants, tmp_path: Path
) -> None:
    label, company = shelf["label"], shelf["company"]
    first, second, third = shelf["tracks"]
    catalogue_id = shelf["catalogue"]["id"]
    _put(
        client,
        label,
        f"/v1/catalogues/{catalogue_id}/preferences",
        {"cawg.ai_generative_training": {"use": "constrained", "constraints_info": POLICY}},
    )
    _put(
        client,
        label,
        f"/v1/tracks/{second['id']}/preferences",
        {"cawg.ai_generative_training": {"use": "notAllowed"}},
    )
    # A suspended catalogue's recordings are not licensed, whatever their preferences.
    other = tenants.label()
    closed = tenants.catalogue(other)
    _tracks(client, other, closed["id"], tmp_path / "closed", 1)
    client.put(
        f"/v1/catalogues/{closed['id']}/license",
        json={"rate_per_use_micros": 1, "status": "suspended"},
        headers=other.headers,
    )
    # An open catalogue: everything permitted.
    open_label = tenants.label()
    open_catalogue = tenants.catalogue(open_label)
    opened = _tracks(
        client, open_label, open_catalogue["id"], tmp_path / "open", 2, title="=HYPERLINK(1)"
    )

    generative = _export(client, company, limit=1)
    assert [i["track_id"] for i in generative] == [t["id"] for t in opened]
    with_constrained = _export(client, company, include_constrained=True, limit=2)
    assert [i["track_id"] for i in with_constrained] == [
        first["id"],
        third["id"],
        *(t["id"] for t in opened),
    ]
    assert with_constrained[0]["entries"]["cawg.ai_generative_training"] == {
        "use": "constrained",
        "constraints_info": POLICY,
        "source": "catalogue",
    }
    # Another use is decided by its own preference.
    inference = _export(client, shelf["auditor"], use="cawg.ai_inference")
    assert len(inference) == 5

    # The export agrees with the lookup, row by row.
    looked_up = client.post(
        "/v1/preferences/lookup",
        json={"track_ids": [i["track_id"] for i in with_constrained]},
        headers=company.headers,
    ).json()["items"]
    assert [{k: v for k, v in i.items() if k != "query"} for i in looked_up] == with_constrained

    lines = client.get(
        "/v1/preferences/export",
        params={"format": "jsonl", "include_constrained": True},
        headers=company.headers,
    ).text.splitlines()
    assert [json.loads(line) for line in lines] == with_constrained

    response = client.get(
        "/v1/preferences/export",
        params={"format": "csv", "include_constrained": True},
        headers=company.headers,
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["track_id"] for r in rows] == [i["track_id"] for i in with_constrained]
    assert rows[0]["cawg.ai_generative_training"] == "constrained"
    assert rows[0]["cawg.ai_generative_training.constraints_info"] == POLICY
    # A title that a spreadsheet would run as a formula is written as text.
    assert rows[-1]["title"] == "'=HYPERLINK(1)"


def test_labels_cannot_look_up_or_export(client: TestClient, shelf: dict[str, Any]) -> None:
    label = shelf["label"]
    response = client.post(
        "/v1/preferences/lookup", json={"isrcs": ["NOA1B2400001"]}, headers=label.headers
    )
    assert response.status_code == 403
    assert client.get("/v1/preferences/export", headers=label.headers).status_code == 403


def _valid_tdmrep(rules: Any) -> None:
    """The shape of the W3C TDMRep examples: an array of rules, each a `location` path
    pattern, `tdm-reservation` 0 or 1, and a `tdm-policy` URL only with a reservation."""
    assert isinstance(rules, list)
    for rule in rules:
        assert set(rule) <= {"location", "tdm-reservation", "tdm-policy"}, rule
        assert {"location", "tdm-reservation"} <= set(rule), rule
        assert isinstance(rule["location"], str)
        assert rule["location"].startswith("/")
        assert rule["tdm-reservation"] in (0, 1)
        assert type(rule["tdm-reservation"]) is int
        if "tdm-policy" in rule:
            assert rule["tdm-reservation"] == 1
            assert rule["tdm-policy"].startswith(("https://", "http://"))


def test_the_w3c_examples_pass_the_shape_check() -> None:
    """The validator accepts the specification's own example and rejects near misses."""
    _valid_tdmrep(
        [
            {"location": "/", "tdm-reservation": 1, "tdm-policy": "https://provider.com/p.json"},
            {"location": "/images/*", "tdm-reservation": 1},
            {"location": "/news/*", "tdm-reservation": 0},
        ]
    )
    for bad in (
        {"location": "/", "tdm-reservation": "1"},
        {"location": "/", "tdm-reservation": 2},
        {"location": "/", "tdm-reservation": 0, "tdm-policy": "https://p"},
        {"location": "/", "tdm-reservation": 1, "tdm_policy": "https://p"},
        {"tdm-reservation": 1},
    ):
        with pytest.raises(AssertionError):
            _valid_tdmrep([bad])


def test_tdmrep_files_are_public_and_state_reservations(
    client: TestClient, shelf: dict[str, Any], tenants: Tenants
) -> None:
    label, catalogue = shelf["label"], shelf["catalogue"]
    first, second, _ = shelf["tracks"]
    constrained = tenants.catalogue(label)
    unset = tenants.catalogue(label)
    _put(
        client,
        label,
        f"/v1/catalogues/{catalogue['id']}/preferences",
        {"cawg.ai_inference": {"use": "notAllowed"}},  # not mining: no reservation
    )
    _put(
        client,
        label,
        f"/v1/tracks/{first['id']}/preferences",
        {"cawg.ai_generative_training": {"use": "notAllowed"}},
    )
    _put(
        client,
        label,
        f"/v1/tracks/{second['id']}/preferences",
        {"cawg.ai_inference": {"use": "notAllowed"}},  # same declaration: no rule of its own
    )
    _put(
        client,
        label,
        f"/v1/catalogues/{constrained['id']}/preferences",
        {"cawg.data_mining": {"use": "constrained", "constraints_info": POLICY}},
    )

    response = client.get("/.well-known/tdmrep.json")  # no key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    rules = response.json()
    _valid_tdmrep(rules)
    assert rules == [
        {"location": f"/v1/tracks/{first['id']}", "tdm-reservation": 1},
        {"location": f"/v1/catalogues/{catalogue['id']}", "tdm-reservation": 0},
        {
            "location": f"/v1/catalogues/{constrained['id']}",
            "tdm-reservation": 1,
            "tdm-policy": POLICY,
        },
        {"location": f"/v1/catalogues/{unset['id']}", "tdm-reservation": 0},
    ]
    one = client.get(f"/v1/catalogues/{catalogue['id']}/tdmrep.json")
    assert one.status_code == 200
    _valid_tdmrep(one.json())
    assert one.json() == rules[:2]
    missing = client.get(f"/v1/catalogues/{uuid.uuid4()}/tdmrep.json")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error"}

    # Withdrawn tracks drop out of the reservations.
    client.delete(f"/v1/tracks/{first['id']}", headers=label.headers)
    after = client.get(f"/v1/catalogues/{catalogue['id']}/tdmrep.json").json()
    assert after == rules[1:2]


def test_the_lookup_decides_as_the_track_endpoint_does_in_every_combination(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path
) -> None:
    """The lookup applies the rule in SQL, the track endpoint in Python: they must agree."""
    label = shelf["label"]
    tracks = shelf["tracks"] + _tracks(
        client, label, shelf["catalogue"]["id"], tmp_path / "more", 3
    )
    values = [
        {"use": "allowed"},
        {"use": "constrained", "constraints_info": POLICY},
        {"use": "notAllowed"},
    ]
    _put(
        client,
        label,
        f"/v1/catalogues/{shelf['catalogue']['id']}/preferences",
        {
            "cawg.data_mining": values[0],
            "cawg.ai_training": values[1],
            "cawg.ai_inference": values[2],
        },
    )
    # Each track overrides the uses with a different value (one leaves them all unset).
    for i, track in enumerate(tracks[1:]):
        entries = {a: values[(i + j) % 3] for j, a in enumerate(ASSERTIONS) if (i + j) % 4}
        if i == 1:
            entries["cawg.ai_training"] = {"use": "constrained", "constraints_info": OTHER_POLICY}
        _put(client, label, f"/v1/tracks/{track['id']}/preferences", entries)
    found = client.post(
        "/v1/preferences/lookup",
        json={"track_ids": [t["id"] for t in tracks]},
        headers=shelf["company"].headers,
    ).json()["items"]
    assert len(found) == len(tracks)
    for item in found:
        single = client.get(
            f"/v1/tracks/{item['track_id']}/preferences", headers=shelf["company"].headers
        ).json()
        assert item["entries"] == single["entries"], item["track_id"]
        assert item["preferences_version"] == single["preferences_version"]
    sources = {e["source"] for item in found for e in item["entries"].values()}
    assert sources == {"catalogue", "track"}
