"""Closed periods, statements and invoices through the API, on a clock the test moves."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app import cli
from app.config import Settings, get_settings
from app.ledger.tasks import CLOSE_DUE_PERIODS
from app.main import create_app
from tests.factories import (
    ManualClock,
    Tenant,
    Tenants,
    run_scheduled,
    scalar,
    submit_check,
    uses_of,
)
from tests.worlds import RATE, SEEDS, Music, excerpt

JAN = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(JAN)


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: ManualClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client


def _at(month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2030, month, day, hour, tzinfo=dt.UTC)


def _check(client: TestClient, world: dict[str, Any], music: Music, seed: int) -> dict[str, Any]:
    piece = music.write(
        f"query-period-{seed}", lambda: excerpt(seed, 2.0, 12.0, timbre=SEEDS[seed])
    )
    check = submit_check(client, world["company"], piece).json()
    assert check["charge_micros"] == RATE, check
    [use] = uses_of(client, world["company"], check["id"])
    return check | {"use": use}


def _close(client: TestClient, tenants: Tenants, month: str) -> Any:
    return client.post(f"/v1/periods/{month}/close", headers=tenants.operator().headers)


def _summary(doc: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {r["line"]: (r["available_micros"], r["on_hold_micros"]) for r in doc["summary"]}


def _reconciles(doc: dict[str, Any]) -> None:
    """Opening + every movement row = closing, per column."""
    rows = _summary(doc)
    moved = [v for k, v in rows.items() if k not in ("opening_balance", "closing_balance")]
    for column in (0, 1):
        assert (
            rows["opening_balance"][column] + sum(v[column] for v in moved)
            == (rows["closing_balance"][column])
        )


def test_a_month_closes_once_it_has_ended_and_is_never_written_again(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    tenants: Tenants,
    clock: ManualClock,
    engine: Engine,
) -> None:
    check = _check(client, world, music, 11)
    early = _close(client, tenants, "2030-01")
    assert early.status_code == 409
    assert early.json()["error"]["details"]["ends_at"] == "2030-02-01T00:00:00+00:00"
    assert _close(client, tenants, "2030-13").status_code == 422

    clock.set(_at(2, 1, 0))
    closed = _close(client, tenants, "2030-01")
    assert closed.status_code == 200, closed.text
    assert [p["month"] for p in closed.json()["closed"]] == ["2030-01"]
    assert _close(client, tenants, "2030-01").json() == {"closed": [], "closed_through": "2030-01"}
    listed = client.get("/v1/periods", headers=world["label"].headers).json()
    assert [(p["month"], p["closed_by"]) for p in listed] == [
        ("2030-01", str(tenants.operator().id))
    ]

    # Even a direct write is refused: the database guards the closed month.
    with engine.connect() as conn:
        a, b = conn.scalars(sa.text("SELECT id FROM ledger_accounts LIMIT 2")).all()
    late_transaction = sa.text(
        "INSERT INTO ledger_transactions (id, kind, currency, created_at, prev_hash, hash) "
        "VALUES (999999, 'charge', 'USD', '2030-01-31T23:59:59Z', repeat('0', 64), "
        "repeat('9', 64))"
    )
    late_postings = sa.text(
        "INSERT INTO ledger_postings (transaction_id, account_id, amount_micros) "
        "VALUES (:t, :a, 5), (:t, :b, -5)"
    )
    for statement, params in [
        (late_transaction, {}),
        (late_postings, {"t": check["ledger_transaction_id"], "a": a, "b": b}),
    ]:
        with (
            pytest.raises(sqlalchemy.exc.DBAPIError, match="closed through 2030-01"),
            engine.begin() as conn,
        ):
            conn.execute(statement, params)
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_periods"))


def test_months_close_by_themselves_some_days_after_they_end(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    settings: Settings,
    engine: Engine,
    clock: ManualClock,
) -> None:
    _check(client, world, music, 11)
    clock.set(_at(2, 5, 23))  # 4 days and 23 hours after January ended (the default grace is 5)
    run_scheduled(settings, engine, CLOSE_DUE_PERIODS, clock=clock)
    assert client.get("/v1/periods", headers=world["label"].headers).json() == []
    clock.set(_at(2, 6, 0))
    run_scheduled(settings, engine, CLOSE_DUE_PERIODS, clock=clock)
    run_scheduled(settings, engine, CLOSE_DUE_PERIODS, clock=clock)  # idempotent
    [period] = client.get("/v1/periods", headers=world["label"].headers).json()
    assert (period["month"], period["closed_by"]) == ("2030-01", None)
    assert scalar(engine, "SELECT count(*) FROM ledger_periods") == 1


def test_close_period_command(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert cli.main(["close-period", "2001-05"]) == 0
        assert "closed 2001-05; the ledger is closed through 2001-05" in capsys.readouterr().out
        assert cli.main(["close-period", "2001-04"]) == 0
        assert "nothing (already closed)" in capsys.readouterr().out
        assert cli.main(["close-period", "2999-01"]) == 1
        assert "has not ended yet" in capsys.readouterr().err
        assert cli.main(["close-period", "May 2001"]) == 2
    finally:
        get_settings.cache_clear()
    assert scalar(engine, "SELECT count(*) FROM ledger_periods") == 1


def test_a_dispute_from_open_to_appeal_in_the_statements_it_produces(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    tenants: Tenants,
    clock: ManualClock,
    engine: Engine,
) -> None:
    """The README's worked example."""
    label, company, operator = world["label"], world["company"], tenants.operator()
    fugue = _check(client, world, music, 11)  # January: three uses, 2000 each
    chorale = _check(client, world, music, 12)
    _check(client, world, music, 13)
    clock.set(_at(1, 20))
    dispute = client.post(
        "/v1/disputes",
        json={"use_id": fugue["use"]["id"], "reason": "not_derived", "comment": "our own theme"},
        headers=company.headers,
    ).json()
    clock.set(_at(2, 2))
    assert _close(client, tenants, "2030-01").status_code == 200
    january = _statement(client, label, "2030-01")

    url = f"/v1/disputes/{dispute['id']}"
    clock.set(_at(2, 5))
    client.post(f"{url}/uphold", json={"reason": "bars 1-8 are ours"}, headers=label.headers)
    clock.set(_at(2, 6))
    client.post(f"{url}/appeal", json={"reason": "a common cadence"}, headers=company.headers)
    clock.set(_at(2, 10))
    decided = client.post(
        f"{url}/appeal/decision",
        json={"outcome": "release", "reason": "the cadence is in the public domain"},
        headers=operator.headers,
    )
    assert decided.json()["status"] == "released"
    clock.set(_at(2, 12))
    reversal = client.post(
        f"/v1/checks/{chorale['id']}/reversal",
        json={"reason": "submitted twice"},
        headers=operator.headers,
    ).json()
    assert reversal["adjusts_period"] == "2030-01"
    clock.set(_at(2, 15))
    _check(client, world, music, 11)  # February: one use
    clock.set(_at(3, 1, 0))
    assert _close(client, tenants, "2030-02").status_code == 200
    february = _statement(client, label, "2030-02")

    assert _summary(january) == {
        "opening_balance": (0, 0),
        "earned": (3 * RATE, 0),
        "held": (-RATE, RATE),
        "released": (0, 0),
        "upheld": (0, 0),
        "reversed": (0, 0),
        "adjustments": (0, 0),
        "fees": (0, 0),
        "closing_balance": (2 * RATE, RATE),
    }
    assert _summary(february) == {
        "opening_balance": (2 * RATE, RATE),
        "earned": (RATE, 0),
        "held": (-RATE, RATE),  # the appeal held it again
        "released": (0, 0),
        "upheld": (0, 0),
        # upheld +2000 (from hold), released -2000 (from hold), chorale reversed -2000
        "adjustments": (0, -2 * RATE),
        "reversed": (0, 0),
        "fees": (0, 0),
        "closing_balance": (2 * RATE, 0),
    }
    for doc in (january, february):
        _reconciles(doc)
    adjustments = [
        (a["kind"], a["adjusts_period"], a["original_transaction_id"], a["amount_micros"],
         a["on_hold_micros"])
        for a in february["adjustments"]
    ]  # fmt: skip
    assert adjustments == [
        ("uphold", "2030-01", fugue["ledger_transaction_id"], RATE, -RATE),
        ("release", "2030-01", fugue["ledger_transaction_id"], 0, -RATE),
        ("reversal", "2030-01", chorale["ledger_transaction_id"], -RATE, 0),
    ]
    [row] = [d for d in february["disputes"] if d["dispute_id"] == dispute["id"]]
    assert (row["status"], row["last_step"]) == ("released", "appeal_granted")
    assert [(d["status"], d["last_step"]) for d in january["disputes"]] == [("open", "opened")]

    # Lines per track sum to the movements; closing balances are the ledger's.
    for doc in (january, february):
        rows = _summary(doc)
        assert sum(t["amount_micros"] for t in doc["tracks"]) == (
            rows["closing_balance"][0] - rows["opening_balance"][0]
        )
        assert sum(t["on_hold_micros"] for t in doc["tracks"]) == (
            rows["closing_balance"][1] - rows["opening_balance"][1]
        )
    assert _summary(february)["closing_balance"] == tuple(
        client.get("/v1/accounts/me", headers=label.headers).json()[k]
        for k in ("balance_micros", "held_micros")
    )
    fugue_lines = [t for t in january["tracks"] if t["title"] == "track-11"]
    assert [(t["uses"], t["earned_micros"], t["amount_micros"], t["on_hold_micros"])
            for t in fugue_lines] == [(1, RATE, 0, RATE)]  # fmt: skip
    assert fugue_lines[0]["ai_company_id"] == str(company.id)

    # The royalties report reads the same postings.
    royalties = client.get(
        "/v1/royalties",
        params={"from": "2030-02-01T00:00:00Z", "to": "2030-03-01T00:00:00Z"},
        headers=label.headers,
    ).json()
    rows = _summary(february)
    assert royalties["total_micros"] == rows["closing_balance"][0] - rows["opening_balance"][0]
    assert royalties["uses"] == 1  # counted by kind: the hold and the uphold are not uses
    assert [r["reversals"] for r in royalties["rows"]] == [1]

    # January is as it was when it closed.
    assert _statement(client, label, "2030-01") == january

    invoice = client.get("/v1/invoices/2030-02", headers=company.headers).json()
    lines = {r["line"]: r["amount_micros"] for r in invoice["summary"]}
    assert lines == {
        "opening_balance": -3 * RATE,
        "uses": -RATE,
        "fees": 0,
        "released": 0,
        "reversed": 0,
        "adjustments": 2 * RATE,  # the appeal's release and the reversal, both about January
        "closing_balance": -2 * RATE,
    }
    assert invoice["due_micros"] == -RATE
    assert invoice["uses"] == 1
    [catalogue] = invoice["catalogues"]
    assert (catalogue["catalogue_id"], catalogue["uses"], catalogue["amount_micros"]) == (
        world["catalogue"]["id"], 1, RATE,
    )  # fmt: skip
    assert (
        client.get("/v1/accounts/me", headers=company.headers).json()["balance_micros"]
        == (lines["closing_balance"])
    )


def _statement(client: TestClient, label: Tenant, month: str) -> dict[str, Any]:
    response = client.get(f"/v1/statements/{month}", headers=label.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_statements_and_invoices_come_as_csv_and_printable_pages(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    tenants: Tenants,
    clock: ManualClock,
) -> None:
    label, company = world["label"], world["company"]
    _check(client, world, music, 11)
    clock.set(_at(2, 1))
    _close(client, tenants, "2030-01")
    as_json = _statement(client, label, "2030-01")

    response = client.get("/v1/statements/2030-01", params={"format": "csv"}, headers=label.headers)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert (rows[0]["section"], rows[0]["line"], rows[0]["currency"]) == (
        "document", "2030-01", "USD",
    )  # fmt: skip
    summary = {r["line"]: int(r["available_micros"]) for r in rows if r["section"] == "summary"}
    assert summary == {line: a for line, (a, _) in _summary(as_json).items()}
    [track] = [r for r in rows if r["section"] == "track"]
    assert (track["title"], track["uses"], track["amount_micros"]) == ("track-11", "1", str(RATE))

    page = client.get("/v1/statements/2030-01", params={"format": "html"}, headers=label.headers)
    assert page.headers["content-type"].startswith("text/html")
    assert "@page" in page.text
    assert "Royalty statement · 2030-01" in page.text
    assert "0.002000" in page.text  # 2000 micro-units, printed exactly

    invoice = client.get("/v1/invoices/2030-01", params={"format": "csv"}, headers=company.headers)
    sections = [r["section"] for r in csv.DictReader(io.StringIO(invoice.text))]
    assert sections[0] == "document"
    assert "catalogue" in sections
    html = client.get("/v1/invoices/2030-01", params={"format": "html"}, headers=company.headers)
    assert "Invoice · 2030-01" in html.text


def test_documents_are_for_closed_months_and_their_own_organisation(
    client: TestClient, world: dict[str, Any], tenants: Tenants, clock: ManualClock
) -> None:
    label, company = world["label"], world["company"]
    still_open = client.get("/v1/statements/2030-01", headers=label.headers)
    assert still_open.status_code == 409
    assert client.get("/v1/statements/2030-1", headers=label.headers).status_code == 422
    clock.set(_at(2, 1))
    _close(client, tenants, "2030-01")
    other = tenants.label()
    named = client.get(
        "/v1/statements/2030-01", params={"label_id": str(label.id)}, headers=other.headers
    )
    assert named.status_code == 422
    auditor = tenants.auditor()
    assert client.get("/v1/statements/2030-01", headers=auditor.headers).status_code == 422
    by_auditor = client.get(
        "/v1/statements/2030-01", params={"label_id": str(label.id)}, headers=auditor.headers
    )
    assert by_auditor.status_code == 200
    wrong_kind = client.get(
        "/v1/statements/2030-01", params={"label_id": str(company.id)}, headers=auditor.headers
    )
    assert wrong_kind.status_code == 404
    empty = client.get("/v1/invoices/2030-01", headers=company.headers).json()
    assert empty["due_micros"] == 0
    assert [r["amount_micros"] for r in empty["summary"]] == [0] * 7
