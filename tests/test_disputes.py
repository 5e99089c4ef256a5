"""Disputes through the API: held money, decisions, appeals, the review timer, concurrency."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import make_sessionmaker
from app.disputes import service as disputes
from app.disputes.models import ActorRole
from app.disputes.service import Actor
from app.disputes.tasks import EXPIRE_DISPUTES
from app.errors import Conflict
from app.ledger.appender import LedgerAppender
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

START = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: ManualClock) -> Iterator[TestClient]:
    """The service with a clock the test moves."""
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client


def _piece(music: Music, seed: int, start: float = 2.0) -> Any:
    return music.write(
        f"query-dispute-{seed}-{start:g}", lambda: excerpt(seed, start, 12.0, timbre=SEEDS[seed])
    )


def _paid_use(
    client: TestClient, world: dict[str, Any], music: Music, seed: int = 11
) -> dict[str, Any]:
    """A check drawing on one track, and its use (as the AI company sees it)."""
    check = submit_check(client, world["company"], _piece(music, seed)).json()
    assert check["charge_micros"] == RATE, check
    [use] = uses_of(client, world["company"], check["id"])
    return {"check": check, "use": use}


def _open(client: TestClient, company: Tenant, use_id: str, **body: Any) -> Any:
    payload = {"use_id": use_id, "reason": "not_derived", "comment": "written from scratch"}
    return client.post("/v1/disputes", json=payload | body, headers=company.headers)


def _balance(client: TestClient, tenant: Tenant) -> tuple[int, int]:
    body = client.get("/v1/accounts/me", headers=tenant.headers).json()
    return body["balance_micros"], body["held_micros"]


def _ledger_sum(engine: Engine) -> int:
    return int(scalar(engine, "SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings"))


def test_opening_holds_the_credit_and_releasing_refunds_the_ai_company(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine, tenants: Tenants
) -> None:
    label, company = world["label"], world["company"]
    paid = _paid_use(client, world, music)
    assert _balance(client, label) == (RATE, 0)

    opened = _open(client, company, paid["use"]["id"])
    assert opened.status_code == 201, opened.text
    dispute = opened.json()
    assert dispute["status"] == "open"
    assert dispute["amount_micros"] == RATE
    deadline = dt.datetime.fromisoformat(dispute["review_deadline"])
    assert deadline == START + dt.timedelta(days=30)
    assert _balance(client, label) == (0, RATE)  # moved aside, not taken away
    assert _balance(client, company) == (-RATE, 0)

    released = client.post(
        f"/v1/disputes/{dispute['id']}/release",
        json={"reason": "the melody is a folk tune"},
        headers=label.headers,
    )
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    assert _balance(client, label) == (0, 0)
    assert _balance(client, company) == (0, 0)
    assert _ledger_sum(engine) == 0

    auditor = tenants.auditor()
    history = client.get(f"/v1/disputes/{dispute['id']}", headers=auditor.headers).json()
    steps = [(e["step"], e["actor_role"], e["actor_id"]) for e in history["events"]]
    assert steps == [
        ("opened", "ai_company", str(company.id)),
        ("released", "label", str(label.id)),
    ]
    transactions = client.get(
        "/v1/ledger/transactions", params={"dispute_id": dispute["id"]}, headers=auditor.headers
    ).json()["items"]
    hold, release = sorted(transactions, key=lambda t: t["id"])
    assert (hold["kind"], release["kind"]) == ("hold", "release")
    assert hold["answers_id"] == paid["check"]["ledger_transaction_id"]
    assert release["answers_id"] == hold["id"]
    assert release["actor_id"] == str(label.id)
    assert client.get("/v1/ledger/verify", headers=auditor.headers).json()["ok"] is True


def test_upheld_dispute_is_appealed_once_and_an_operator_decides(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine, tenants: Tenants
) -> None:
    label, company, operator = world["label"], world["company"], tenants.operator()
    paid = _paid_use(client, world, music)
    dispute = _open(client, company, paid["use"]["id"]).json()
    url = f"/v1/disputes/{dispute['id']}"

    upheld = client.post(f"{url}/uphold", json={"reason": "bar 3 is ours"}, headers=label.headers)
    assert upheld.json()["status"] == "upheld"
    assert upheld.json()["appealable"] is True
    assert _balance(client, label) == (RATE, 0)

    appealed = client.post(
        f"{url}/appeal", json={"reason": "listen again"}, headers=company.headers
    )
    assert appealed.status_code == 200, appealed.text
    assert appealed.json()["status"] == "appealed"
    assert _balance(client, label) == (0, RATE)  # held again while the operator decides
    again = client.post(f"{url}/appeal", json={"reason": "and again"}, headers=company.headers)
    assert again.status_code == 409
    assert (
        client.post(f"{url}/uphold", json={"reason": "ours"}, headers=label.headers).status_code
        == 409
    )

    decided = client.post(
        f"{url}/appeal/decision",
        json={"outcome": "release", "reason": "the passage is a common cadence"},
        headers=operator.headers,
    )
    assert decided.status_code == 200, decided.text
    final = decided.json()
    assert final["status"] == "released"
    assert final["appealable"] is False
    assert [e["step"] for e in final["events"]] == [
        "opened", "upheld", "appealed", "appeal_granted"
    ]  # fmt: skip
    assert [e["actor_role"] for e in final["events"]] == [
        "ai_company", "label", "ai_company", "operator"
    ]  # fmt: skip
    assert all(e["ledger_transaction_id"] for e in final["events"])
    assert _balance(client, label) == (0, 0)
    assert _balance(client, company) == (0, 0)
    assert _ledger_sum(engine) == 0
    late = client.post(
        f"{url}/appeal/decision",
        json={"outcome": "uphold", "reason": "second thoughts"},
        headers=operator.headers,
    )
    assert late.status_code == 409


def test_an_untouched_dispute_is_released_when_its_review_window_passes(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    engine: Engine,
    settings: Settings,
    clock: ManualClock,
) -> None:
    label, company = world["label"], world["company"]
    dispute = _open(client, company, _paid_use(client, world, music)["use"]["id"]).json()
    url = f"/v1/disputes/{dispute['id']}"

    clock.advance(days=29, hours=23)
    run_scheduled(settings, engine, EXPIRE_DISPUTES, clock=clock)
    assert client.get(url, headers=label.headers).json()["status"] == "open"

    clock.advance(hours=1)  # exactly 30 days: the window has closed
    late = client.post(f"{url}/uphold", json={"reason": "too late"}, headers=label.headers)
    assert late.status_code == 409
    assert "review window closed" in late.json()["error"]["message"]
    run_scheduled(settings, engine, EXPIRE_DISPUTES, clock=clock)
    expired = client.get(url, headers=label.headers).json()
    assert expired["status"] == "released"
    assert expired["events"][-1]["step"] == "expired"
    assert expired["events"][-1]["actor_role"] == "system"
    assert expired["events"][-1]["actor_id"] is None
    assert _balance(client, company) == (0, 0)

    transactions = scalar(engine, "SELECT count(*) FROM ledger_transactions")
    run_scheduled(settings, engine, EXPIRE_DISPUTES, clock=clock)  # idempotent
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == transactions
    assert len(client.get(url, headers=label.headers).json()["events"]) == 2


def test_two_decisions_at_once_exactly_one_wins(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    label, company = world["label"], world["company"]
    ids = [
        _open(client, company, _paid_use(client, world, music)["use"]["id"]).json()["id"]
        for _ in range(3)
    ]

    def decide(job: tuple[str, str]) -> int:
        dispute_id, verb = job
        return client.post(
            f"/v1/disputes/{dispute_id}/{verb}",
            json={"reason": f"{verb} it"},
            headers=label.headers,
        ).status_code

    jobs = [(d, verb) for d in ids for verb in ("release", "uphold", "release", "uphold")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(decide, jobs))
    for n, dispute_id in enumerate(ids):
        mine = codes[4 * n : 4 * n + 4]
        assert sorted(mine) == [200, 409, 409, 409], (dispute_id, mine)
    resolutions = scalar(
        engine, "SELECT count(*) FROM ledger_transactions WHERE kind IN ('release', 'uphold')"
    )
    assert resolutions == len(ids)
    assert _ledger_sum(engine) == 0


def test_two_appenders_deciding_one_dispute_commit_one_decision(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    """As two API processes would: each has its own appender and its own chain-lock turn."""
    label, company = world["label"], world["company"]
    dispute_id = uuid.UUID(
        _open(client, company, _paid_use(client, world, music)["use"]["id"]).json()["id"]
    )
    sessions = make_sessionmaker(engine)
    first, second = LedgerAppender(sessions), LedgerAppender(sessions)
    actor = Actor(label.id, ActorRole.LABEL)

    def release(appender: LedgerAppender) -> str:
        try:
            appender.run(
                lambda s, h: disputes.release(s, h, dispute_id=dispute_id, actor=actor, reason="no")
            )
        except Conflict:
            return "conflict"
        return "released"

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = sorted(pool.map(release, [first, second]))
    finally:
        first.close()
        second.close()
    assert outcomes == ["conflict", "released"]
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions WHERE kind = 'release'") == 1


def test_disputes_are_seen_by_their_parties_and_auditors_only(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Tenants
) -> None:
    label, company = world["label"], world["company"]
    dispute = _open(client, company, _paid_use(client, world, music)["use"]["id"]).json()
    url = f"/v1/disputes/{dispute['id']}"
    other_label, other_company = tenants.label(), tenants.ai_company()
    for tenant in (label, company, tenants.auditor(), tenants.operator()):
        assert client.get(url, headers=tenant.headers).status_code == 200
        listed = client.get("/v1/disputes", headers=tenant.headers).json()["items"]
        assert [d["id"] for d in listed] == [dispute["id"]]
    for tenant in (other_label, other_company):
        assert client.get(url, headers=tenant.headers).status_code == 404
        assert client.get("/v1/disputes", headers=tenant.headers).json()["items"] == []
    stranger = client.post(
        f"{url}/release", json={"reason": "not mine"}, headers=other_label.headers
    )
    assert stranger.status_code == 404
    foreign = _open(client, other_company, dispute["use_id"])
    assert foreign.status_code == 404


def test_refusals_are_409_or_422_with_a_reason(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Tenants
) -> None:
    label, company = world["label"], world["company"]
    paid = _paid_use(client, world, music)
    assert _open(client, company, paid["use"]["id"], reason="because").status_code == 422
    assert _open(client, company, paid["use"]["id"], comment="").status_code == 422
    first = _open(client, company, paid["use"]["id"])
    assert first.status_code == 201
    twice = _open(client, company, paid["use"]["id"])
    assert twice.status_code == 409
    assert twice.json()["error"]["details"]["dispute_id"] == first.json()["id"]
    appeal = client.post(
        f"/v1/disputes/{first.json()['id']}/appeal",
        json={"reason": "too early"},
        headers=company.headers,
    )
    assert appeal.status_code == 409  # nothing upheld to appeal

    reversed_ = _paid_use(client, world, music)
    reversal = client.post(
        f"/v1/checks/{reversed_['check']['id']}/reversal",
        json={"reason": "duplicate submission"},
        headers=tenants.operator().headers,
    )
    assert reversal.status_code == 201
    refused = _open(client, company, reversed_["use"]["id"])
    assert refused.status_code == 409
    assert "reversed" in refused.json()["error"]["message"]
    bad_span = client.post(
        f"/v1/disputes/{first.json()['id']}/release",
        json={"reason": "fine", "do_not_match": [{"start_s": 5, "end_s": 2}]},
        headers=label.headers,
    )
    assert bad_span.status_code == 422


def test_reversal_waits_for_a_held_use_and_then_reverses_what_is_left(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine, tenants: Tenants
) -> None:
    label, company, operator = world["label"], world["company"], tenants.operator()
    mix = excerpt(11, 3.0, 15.0, timbre="piano") + excerpt(13, 10.0, 15.0, timbre="flute")
    check = submit_check(
        client, company, music.write("query-dispute-mix", lambda: 0.5 * mix)
    ).json()
    uses = uses_of(client, company, check["id"])
    assert len(uses) == 2
    disputed, kept = uses
    dispute = _open(client, company, disputed["id"]).json()

    reverse = lambda: client.post(  # noqa: E731
        f"/v1/checks/{check['id']}/reversal", json={"reason": "test run"}, headers=operator.headers
    )
    held = reverse()
    assert held.status_code == 409
    assert held.json()["error"]["details"]["held_use_ids"] == [disputed["id"]]

    client.post(
        f"/v1/disputes/{dispute['id']}/release", json={"reason": "agreed"}, headers=label.headers
    )
    assert _balance(client, company) == (-kept["amount_micros"], 0)
    reversal = reverse()
    assert reversal.status_code == 201, reversal.text
    amounts = {(p["use_id"], p["amount_micros"]) for p in reversal.json()["postings"]}
    assert (kept["id"], -kept["amount_micros"]) in amounts
    assert all(use != disputed["id"] for use, _ in amounts)  # its money already went back
    assert reversal.json()["actor_id"] == str(operator.id)
    assert _balance(client, company) == (0, 0)
    assert _balance(client, label) == (0, 0)
    assert _ledger_sum(engine) == 0


def test_a_span_released_as_do_not_match_never_matches_again(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    label, company = world["label"], world["company"]
    piece = _piece(music, 11, start=2.0)
    paid = _paid_use(client, world, music, seed=11)
    [match] = [m for m in paid["check"]["matches"] if m["is_use"]]
    spans = [
        {"start_s": e["reference_start"], "end_s": e["reference_end"]} for e in match["evidence"]
    ]
    dispute = _open(client, company, paid["use"]["id"]).json()
    released = client.post(
        f"/v1/disputes/{dispute['id']}/release",
        json={"reason": "a public-domain figure", "do_not_match": spans},
        headers=label.headers,
    ).json()
    assert released["exclusions"] == [{"track_id": match["track_id"], **s} for s in spans]

    again = submit_check(client, company, piece).json()
    assert all(m["track_id"] != match["track_id"] for m in again["matches"])
    assert again["charge_micros"] == 0
    elsewhere = submit_check(client, company, _piece(music, 11, start=17.0)).json()
    assert [m["track_id"] for m in elsewhere["matches"] if m["is_use"]] == [match["track_id"]]


def test_an_upheld_dispute_of_a_reversed_charge_cannot_be_appealed(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Tenants
) -> None:
    label, company = world["label"], world["company"]
    paid = _paid_use(client, world, music)
    dispute = _open(client, company, paid["use"]["id"]).json()
    url = f"/v1/disputes/{dispute['id']}"
    client.post(f"{url}/uphold", json={"reason": "ours"}, headers=label.headers)
    reversal = client.post(
        f"/v1/checks/{paid['check']['id']}/reversal",
        json={"reason": "test submission"},
        headers=tenants.operator().headers,
    )
    assert reversal.status_code == 201
    appeal = client.post(f"{url}/appeal", json={"reason": "listen again"}, headers=company.headers)
    assert appeal.status_code == 409
    assert "reversed" in appeal.json()["error"]["message"]
    assert _balance(client, label) == (0, 0)
    assert _balance(client, company) == (0, 0)
