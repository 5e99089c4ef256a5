"""Royalty reports, usage history and reversals: scoped per tenant, reconciled with the ledger."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.factories import Tenant, Tenants, submit_check
from tests.worlds import RATE, SEEDS, Music, excerpt


@pytest.fixture
def history(client: TestClient, world: dict[str, Any], music: Music) -> dict[str, Any]:
    """Three paid checks: two drawing on track 11, one on track 12."""
    pieces = {
        s: music.write(f"query-report-{s}", lambda s=s: excerpt(s, 2.0, 12.0, timbre=SEEDS[s]))
        for s in (11, 12)
    }
    checks = [submit_check(client, world["company"], pieces[s]).json() for s in (11, 11, 12)]
    assert all(c["charge_micros"] == RATE for c in checks), checks
    return world | {"checks": checks}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_royalties_group_and_reconcile_with_the_ledger(
    client: TestClient, history: dict[str, Any]
) -> None:
    label: Tenant = history["label"]
    balance = client.get("/v1/accounts/me", headers=label.headers).json()["balance_micros"]
    assert balance == 3 * RATE
    by_track = client.get(
        "/v1/royalties", params={"group_by": "track"}, headers=label.headers
    ).json()
    assert by_track["total_micros"] == balance
    assert by_track["uses"] == 3
    amounts = {r["group"]: (r["uses"], r["amount_micros"]) for r in by_track["rows"]}
    assert amounts == {
        history["tracks"][11]: (2, 2 * RATE),
        history["tracks"][12]: (1, RATE),
    }
    assert {r["name"] for r in by_track["rows"]} == {"track-11", "track-12"}
    for group_by in ("day", "month", "ai_company"):
        report = client.get(
            "/v1/royalties", params={"group_by": group_by}, headers=label.headers
        ).json()
        assert report["total_micros"] == balance, group_by
    companies = client.get(
        "/v1/royalties", params={"group_by": "ai_company"}, headers=label.headers
    ).json()
    assert [r["group"] for r in companies["rows"]] == [str(history["company"].id)]


def test_royalties_csv_totals_equal_json_totals(
    client: TestClient, history: dict[str, Any]
) -> None:
    label: Tenant = history["label"]
    params = {"group_by": "track"}
    as_json = client.get("/v1/royalties", params=params, headers=label.headers).json()
    response = client.get("/v1/royalties", params=params | {"format": "csv"}, headers=label.headers)
    assert response.headers["content-type"].startswith("text/csv")
    rows = _csv(response.text)
    assert list(rows[0]) == ["group", "name", "uses", "reversals", "amount_micros"]
    assert sum(int(r["amount_micros"]) for r in rows) == as_json["total_micros"]
    assert len(rows) == len(as_json["rows"])


def test_royalties_period_bounds(client: TestClient, history: dict[str, Any]) -> None:
    label: Tenant = history["label"]
    future = client.get(
        "/v1/royalties", params={"from": "2100-01-01T00:00:00Z"}, headers=label.headers
    ).json()
    assert future["rows"] == []
    assert future["total_micros"] == 0
    past = client.get(
        "/v1/royalties", params={"to": "2000-01-01T00:00:00Z"}, headers=label.headers
    ).json()
    assert past["total_micros"] == 0


def test_a_label_never_sees_another_labels_royalties_or_uses(
    client: TestClient, history: dict[str, Any], tenants: Tenants
) -> None:
    other = tenants.label()
    mine = client.get("/v1/royalties", headers=other.headers).json()
    assert mine["rows"] == []
    assert mine["total_micros"] == 0
    theirs = client.get(
        "/v1/royalties", params={"label_id": str(history["label"].id)}, headers=other.headers
    )
    assert theirs.status_code == 422
    assert client.get("/v1/uses", headers=other.headers).json()["items"] == []
    filtered = client.get(
        "/v1/uses", params={"label_id": str(history["label"].id)}, headers=other.headers
    )
    assert filtered.json()["items"] == []
    assert _csv(client.get("/v1/uses", params={"format": "csv"}, headers=other.headers).text) == []
    company = tenants.ai_company()
    assert client.get("/v1/uses", headers=company.headers).json()["items"] == []
    assert client.get("/v1/royalties", headers=company.headers).status_code == 403


def test_auditors_read_any_labels_royalties(
    client: TestClient, history: dict[str, Any], tenants: Tenants
) -> None:
    auditor = tenants.auditor()
    assert client.get("/v1/royalties", headers=auditor.headers).status_code == 422
    report = client.get(
        "/v1/royalties", params={"label_id": str(history["label"].id)}, headers=auditor.headers
    )
    assert report.json()["total_micros"] == 3 * RATE


def test_usage_history_links_everything_and_exports_csv(
    client: TestClient, history: dict[str, Any], tenants: Tenants
) -> None:
    company: Tenant = history["company"]
    page = client.get("/v1/uses", params={"limit": 2}, headers=company.headers).json()
    assert len(page["items"]) == 2
    rest = client.get(
        "/v1/uses", params={"limit": 2, "cursor": page["next_cursor"]}, headers=company.headers
    ).json()
    uses = page["items"] + rest["items"]
    assert len(uses) == 3
    assert rest["next_cursor"] is None
    newest = uses[0]
    assert newest["check_id"] == history["checks"][2]["id"]
    assert newest["track_id"] == history["tracks"][12]
    assert newest["track_title"] == "track-12"
    assert newest["terms_version"] == 1
    assert newest["share"] == 1.0
    assert newest["amount_micros"] == RATE
    assert newest["ledger_transaction_id"] == history["checks"][2]["ledger_transaction_id"]
    assert newest["reversal_transaction_id"] is None

    for who in (history["label"], tenants.auditor()):
        assert len(client.get("/v1/uses", headers=who.headers).json()["items"]) == 3
    by_track = client.get(
        "/v1/uses", params={"track_id": history["tracks"][11]}, headers=company.headers
    ).json()
    assert len(by_track["items"]) == 2
    by_check = client.get(
        "/v1/uses", params={"check_id": history["checks"][0]["id"]}, headers=company.headers
    ).json()
    assert [u["check_id"] for u in by_check["items"]] == [history["checks"][0]["id"]]

    exported = _csv(client.get("/v1/uses", params={"format": "csv"}, headers=company.headers).text)
    assert [r["id"] for r in exported] == [u["id"] for u in uses]
    assert sum(int(r["amount_micros"]) for r in exported) == 3 * RATE


def test_operator_reverses_a_charge_and_every_report_nets_it_out(
    client: TestClient, history: dict[str, Any], tenants: Tenants
) -> None:
    operator = tenants.operator()
    label: Tenant = history["label"]
    check = history["checks"][0]
    response = client.post(
        f"/v1/checks/{check['id']}/reversal",
        json={"reason": "duplicate generation"},
        headers=operator.headers,
    )
    assert response.status_code == 201, response.text
    reversal = response.json()
    assert reversal["kind"] == "reversal"
    assert reversal["reverses_id"] == check["ledger_transaction_id"]
    assert sorted(p["amount_micros"] for p in reversal["postings"]) == [-RATE, RATE]

    again = client.post(
        f"/v1/checks/{check['id']}/reversal", json={"reason": "again"}, headers=operator.headers
    )
    assert again.status_code == 409
    unknown = client.post(
        f"/v1/checks/{uuid.uuid4()}/reversal", json={"reason": "why"}, headers=operator.headers
    )
    assert unknown.status_code == 404

    assert client.get("/v1/accounts/me", headers=label.headers).json()["balance_micros"] == 2 * RATE
    assert (
        client.get("/v1/accounts/me", headers=history["company"].headers).json()["balance_micros"]
        == -2 * RATE
    )
    report = client.get("/v1/royalties", params={"group_by": "track"}, headers=label.headers).json()
    assert report["total_micros"] == 2 * RATE
    row = next(r for r in report["rows"] if r["group"] == history["tracks"][11])
    assert (row["uses"], row["reversals"], row["amount_micros"]) == (2, 1, RATE)
    uses = client.get("/v1/uses", params={"check_id": check["id"]}, headers=label.headers).json()[
        "items"
    ]
    assert uses[0]["reversal_transaction_id"] == reversal["id"]
    assert client.get("/v1/ledger/verify", headers=tenants.auditor().headers).json()["ok"] is True


def test_a_check_that_charged_nothing_cannot_be_reversed(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Tenants
) -> None:
    from tests.audio_synth import melody_track

    path = music.write(
        "query-unrelated", lambda: melody_track(99, seconds=15.0, sr=22050, timbre="brass")
    )
    check = submit_check(client, world["company"], path).json()
    response = client.post(
        f"/v1/checks/{check['id']}/reversal",
        json={"reason": "nothing"},
        headers=tenants.operator().headers,
    )
    assert response.status_code == 409


FORMULAS = ['=HYPERLINK("http://evil.example/","click")', "+1+1", "-2+3", "@SUM(1,2)"]


@pytest.mark.parametrize("title", [*FORMULAS, "\t=1+1", "\r=1+1"])
def test_csv_exports_neutralise_formulas_in_titles_and_names(
    client: TestClient, history: dict[str, Any], engine: Engine, title: str
) -> None:
    # Tab and CR cannot enter through the API any more; rows stored earlier may hold them.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tracks SET title = :t"), {"t": title})
        conn.execute(
            sa.text("UPDATE organisations SET name = :t WHERE id = :id"),
            {"t": title, "id": history["company"].id},
        )
    label: Tenant = history["label"]
    uses = client.get("/v1/uses", params={"format": "csv"}, headers=label.headers).text
    by_track = client.get(
        "/v1/royalties", params={"group_by": "track", "format": "csv"}, headers=label.headers
    ).text
    by_company = client.get(
        "/v1/royalties", params={"group_by": "ai_company", "format": "csv"}, headers=label.headers
    ).text
    cells = [c for text in (uses, by_track, by_company) for row in _rows(text) for c in row]
    assert "'" + title in cells
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))]
    # Negative amounts stay numbers; only text is quoted.
    assert all(not c.startswith("-") or c.lstrip("-").isdigit() for c in cells)


def test_csv_cell_quotes_only_text_that_starts_a_formula() -> None:
    from app.csv_export import safe_cell as csv_cell

    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("\t=1") == "'\t=1"
    assert csv_cell("a=1") == "a=1"
    assert csv_cell(-5) == -5
    assert csv_cell(None) == ""


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))
