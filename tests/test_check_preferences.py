"""Checks respect training preferences: a use of a track whose label refused generative
training is reported and flagged as such, recorded for auditors, and priced at the penalty."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.factories import Tenant, submit_check
from tests.worlds import RATE, SEEDS, Music, excerpt

PENALTY = 5 * RATE
POLICY = "https://label.example/generative-policy"


def _terms(client: TestClient, world: dict[str, Any], **terms: Any) -> None:
    response = client.put(
        f"/v1/catalogues/{world['catalogue']['id']}/license",
        json={"rate_per_use_micros": RATE, "threshold": 0.3, **terms},
        headers=world["label"].headers,
    )
    assert response.status_code == 200, response.text


def _refuse(client: TestClient, world: dict[str, Any], seed: int, **entry: str) -> None:
    response = client.put(
        f"/v1/tracks/{world['tracks'][seed]}/preferences",
        json={"entries": {"cawg.ai_generative_training": entry or {"use": "notAllowed"}}},
        headers=world["label"].headers,
    )
    assert response.status_code == 200, response.text


def _piece(music: Music, seed: int) -> Any:
    return music.write(f"query-pref-{seed}", lambda: excerpt(seed, 2.0, 12.0, timbre=SEEDS[seed]))


def _uses(client: TestClient, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/uses", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_refused_use_is_flagged_recorded_and_charged_the_penalty(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine, tenants: Any
) -> None:
    _terms(client, world, penalty_rate_per_use_micros=PENALTY)
    _refuse(client, world, 12)
    refused = submit_check(client, world["company"], _piece(music, 12)).json()
    top = refused["matches"][0]
    assert top["track_id"] == world["tracks"][12]
    assert top["is_use"] is True
    assert top["preference"] == "notAllowed"
    assert top["preference_policy"] is None
    assert refused["charge_micros"] == top["amount_micros"] == PENALTY

    licensed = submit_check(client, world["company"], _piece(music, 11)).json()
    assert licensed["matches"][0]["preference"] == "allowed"
    assert licensed["charge_micros"] == RATE

    auditor = tenants.auditor()
    flagged = _uses(client, auditor, preference="notAllowed")
    assert [(u["check_id"], u["track_id"]) for u in flagged] == [
        (refused["id"], world["tracks"][12])
    ]
    assert flagged[0]["rate_per_use_micros"] == PENALTY
    assert flagged[0]["amount_micros"] == PENALTY
    assert flagged[0]["preferences_version"] == 1
    assert {u["preference"] for u in _uses(client, auditor)} == {"allowed", "notAllowed"}
    # The label sees its refused uses too, and the CSV export carries the flag.
    assert len(_uses(client, world["label"], preference="notAllowed")) == 1
    exported = client.get(
        "/v1/uses", params={"format": "csv", "preference": "notAllowed"}, headers=auditor.headers
    ).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["track_id"], r["preference"]) for r in rows] == [(world["tracks"][12], "notAllowed")]
    label = client.get("/v1/accounts/me", headers=world["label"].headers).json()
    assert label["balance_micros"] == PENALTY + RATE
    assert client.get("/v1/ledger/verify", headers=auditor.headers).json()["ok"] is True


def test_without_a_penalty_rate_a_refused_use_is_charged_the_rate_and_still_flagged(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    _refuse(client, world, 13)
    result = submit_check(client, world["company"], _piece(music, 13)).json()
    top = result["matches"][0]
    assert top["preference"] == "notAllowed"
    assert result["charge_micros"] == RATE
    assert [u["preference"] for u in _uses(client, world["company"])] == ["notAllowed"]


def test_in_a_mix_only_the_refused_use_is_priced_at_the_penalty(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    _terms(client, world, penalty_rate_per_use_micros=PENALTY)
    _refuse(client, world, 13)
    mix = excerpt(11, 3.0, 15.0, timbre="piano") + excerpt(13, 10.0, 15.0, timbre="flute")
    result = submit_check(
        client, world["company"], music.write("query-pref-mix", lambda: 0.5 * mix)
    )
    body = result.json()
    uses = {m["track_id"]: m for m in body["matches"] if m["is_use"]}
    assert set(uses) == {world["tracks"][11], world["tracks"][13]}
    assert uses[world["tracks"][11]]["preference"] == "allowed"
    assert uses[world["tracks"][13]]["preference"] == "notAllowed"
    # Shares come from resemblance alone; the refused share is priced at the penalty.
    share_11 = uses[world["tracks"][11]]["share"]
    share_13 = uses[world["tracks"][13]]["share"]
    assert body["charge_micros"] == pytest.approx(RATE * share_11 + PENALTY * share_13, abs=2)
    assert sum(m["amount_micros"] for m in uses.values()) == body["charge_micros"]
    rates = {u["track_id"]: u["rate_per_use_micros"] for u in _uses(client, world["company"])}
    assert rates == {world["tracks"][11]: RATE, world["tracks"][13]: PENALTY}


def test_a_constrained_use_is_priced_at_the_rate_and_names_its_policy(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    _terms(client, world, penalty_rate_per_use_micros=PENALTY)
    _refuse(client, world, 12, use="constrained", constraints_info=POLICY)
    result = submit_check(client, world["company"], _piece(music, 12)).json()
    top = result["matches"][0]
    assert (top["preference"], top["preference_policy"]) == ("constrained", POLICY)
    assert result["charge_micros"] == RATE


def test_the_spending_cap_is_checked_at_the_penalty_rate_a_refused_use_is_charged(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    """A penalty above the per-check cap (10 USD by default) is refused before anything is
    written, like any other runaway charge: the cap sees what the check would be charged."""
    _terms(client, world, penalty_rate_per_use_micros=100_000_000)
    _refuse(client, world, 12)
    refused = submit_check(client, world["company"], _piece(music, 12))
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["details"]["charge_micros"] == 100_000_000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM checks").scalar_one() == 0
