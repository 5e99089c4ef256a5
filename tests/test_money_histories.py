"""Random money histories through the API: the books always balance and always reconcile.

Hypothesis generates sequences of checks, reversals, disputes, releases, upholds, appeals,
appeal decisions, expiries, the clock moving on and months closing. The examples continue one
long history (a real ledger cannot be reset between steps; each example adds to it), and a
small model of what each use's money should be predicts every answer's status and every
balance. After every example:

* the postings sum to zero, and each balance is what the model says;
* every month closed in it has a statement and invoices that reconcile: opening + movements
  = closing, the closing balance is the ledger's sum at the month's end and the next month's
  opening, the lines per track sum to the movement, and the royalties report agrees;

and at the end every closed month's documents are exactly what they were when it closed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import make_sessionmaker
from app.disputes.flow import expire_due
from app.ledger import periods
from app.main import create_app
from tests.factories import ManualClock, Tenant, Tenants, scalar, submit_check, uses_of
from tests.worlds import SEEDS, Music, excerpt

START = dt.datetime(2031, 1, 5, 9, 0, tzinfo=dt.UTC)
REVIEW_DAYS = 30
EXAMPLES = 20


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: ManualClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client


@dataclass
class UseModel:
    id: str
    amount: int
    check: int
    dispute: int | None = None


@dataclass
class CheckModel:
    id: str
    company: int
    uses: list[int]
    reversed: bool = False


@dataclass
class DisputeModel:
    id: str
    use: int
    deadline: dt.datetime
    status: str = "open"
    appealed: bool = False


@dataclass
class History:
    """The model, and the API it is checked against."""

    client: TestClient
    engine: Engine
    clock: ManualClock
    label: Tenant
    companies: list[Tenant]
    operator: Tenant
    auditor: Tenant
    pieces: list[Path]
    checks: list[CheckModel] = field(default_factory=list)
    uses: list[UseModel] = field(default_factory=list)
    disputes: list[DisputeModel] = field(default_factory=list)
    # month -> the documents as fetched when it closed
    closed: dict[str, dict[str, Any]] = field(default_factory=dict)

    # Operations ---------------------------------------------------------------------------

    def check(self, company: int, piece: int) -> None:
        tenant = self.companies[company]
        result = submit_check(self.client, tenant, self.pieces[piece])
        assert result.status_code == 201, result.text
        body = result.json()
        found = uses_of(self.client, tenant, body["id"])
        assert found, "every piece here draws on the catalogue"
        first = len(self.uses)
        self.uses += [UseModel(u["id"], u["amount_micros"], len(self.checks)) for u in found]
        self.checks.append(CheckModel(body["id"], company, list(range(first, len(self.uses)))))

    def reverse(self, n: int) -> None:
        if not self.checks:
            return
        check = self.checks[n % len(self.checks)]
        states = [self._dispute_of(u) for u in check.uses]
        blocked = any(d is not None and d.status in ("open", "appealed") for d in states)
        left = any(d is None or d.status != "released" for d in states)
        expected = 201 if not check.reversed and not blocked and left else 409
        answer = self.client.post(
            f"/v1/checks/{check.id}/reversal",
            json={"reason": "property test"},
            headers=self.operator.headers,
        )
        assert answer.status_code == expected, answer.text
        if expected == 201:
            check.reversed = True

    def dispute(self, n: int, reason: str) -> None:
        if not self.uses:
            return
        use = self.uses[n % len(self.uses)]
        check = self.checks[use.check]
        expected = 201 if not check.reversed and use.dispute is None else 409
        answer = self.client.post(
            "/v1/disputes",
            json={"use_id": use.id, "reason": reason, "comment": "generated"},
            headers=self.companies[check.company].headers,
        )
        assert answer.status_code == expected, answer.text
        if expected == 201:
            use.dispute = len(self.disputes)
            deadline = self.clock() + dt.timedelta(days=REVIEW_DAYS)
            self.disputes.append(DisputeModel(answer.json()["id"], self.uses.index(use), deadline))

    def decide(self, n: int, verb: str) -> None:
        if not self.disputes:
            return
        dispute = self.disputes[n % len(self.disputes)]
        ok = dispute.status == "open" and self.clock() < dispute.deadline
        answer = self.client.post(
            f"/v1/disputes/{dispute.id}/{verb}",
            json={"reason": f"{verb} by the label"},
            headers=self.label.headers,
        )
        assert answer.status_code == (200 if ok else 409), answer.text
        if ok:
            dispute.status = "released" if verb == "release" else "upheld"

    def appeal(self, n: int) -> None:
        if not self.disputes:
            return
        dispute = self.disputes[n % len(self.disputes)]
        company = self.checks[self.uses[dispute.use].check].company
        reversed_ = self.checks[self.uses[dispute.use].check].reversed
        ok = dispute.status == "upheld" and not dispute.appealed and not reversed_
        answer = self.client.post(
            f"/v1/disputes/{dispute.id}/appeal",
            json={"reason": "appealed"},
            headers=self.companies[company].headers,
        )
        assert answer.status_code == (200 if ok else 409), answer.text
        if ok:
            dispute.status, dispute.appealed = "appealed", True

    def decide_appeal(self, n: int, grant: bool) -> None:
        if not self.disputes:
            return
        dispute = self.disputes[n % len(self.disputes)]
        ok = dispute.status == "appealed"
        answer = self.client.post(
            f"/v1/disputes/{dispute.id}/appeal/decision",
            json={"outcome": "release" if grant else "uphold", "reason": "decided"},
            headers=self.operator.headers,
        )
        assert answer.status_code == (200 if ok else 409), answer.text
        if ok:
            dispute.status = "released" if grant else "upheld"

    def expire(self) -> None:
        released = expire_due(make_sessionmaker(self.engine), clock=self.clock)
        due = [d for d in self.disputes if d.status == "open" and d.deadline <= self.clock()]
        assert sorted(map(str, released)) == sorted(d.id for d in due)
        for d in due:
            d.status = "released"

    def close(self) -> None:
        month = periods.previous_month(periods.month_of(self.clock()))
        answer = self.client.post(
            f"/v1/periods/{periods.month_name(month)}/close", headers=self.operator.headers
        )
        assert answer.status_code == 200, answer.text
        for period in answer.json()["closed"]:
            self.closed[period["month"]] = self._documents(period["month"])

    # Invariants ---------------------------------------------------------------------------

    def check_books(self) -> None:
        assert (
            scalar(self.engine, "SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings") == 0
        )
        available = held = 0
        owed = [0] * len(self.companies)
        for use in self.uses:
            check = self.checks[use.check]
            state = self._dispute_of(self.uses.index(use))
            status = state.status if state else None
            if check.reversed:
                continue
            if status in ("open", "appealed"):
                held += use.amount
            elif status != "released":
                available += use.amount
            if status != "released":
                owed[check.company] += use.amount
        label = self._account(self.label)
        assert (label["balance_micros"], label["held_micros"]) == (available, held)
        for company, amount in zip(self.companies, owed, strict=True):
            assert self._account(company)["balance_micros"] == -amount

    def check_closed_months(self, months: list[str]) -> None:
        for month in months:
            docs = self.closed[month]
            start, end = (t.isoformat() for t in periods.bounds(periods.parse_month(month)))
            statement = docs["statement"]
            rows = {r["line"]: r for r in statement["summary"]}
            opening, closing = rows.pop("opening_balance"), rows.pop("closing_balance")
            for column, held in (("available_micros", False), ("on_hold_micros", True)):
                moved = sum(r[column] for r in rows.values())
                assert opening[column] + moved == closing[column], (month, column)
                assert closing[column] == self._ledger_sum(self.label, end, held=held)
                assert opening[column] == self._ledger_sum(self.label, start, held=held)
                key = "amount_micros" if column == "available_micros" else column
                assert sum(t[key] for t in statement["tracks"]) == moved
            royalties = self.client.get(
                "/v1/royalties", params={"from": start, "to": end}, headers=self.label.headers
            ).json()
            assert (
                royalties["total_micros"]
                == closing["available_micros"] - (opening["available_micros"])
            )
            for company, invoice in zip(self.companies, docs["invoices"], strict=True):
                lines = {r["line"]: r["amount_micros"] for r in invoice["summary"]}
                first, last = lines.pop("opening_balance"), lines.pop("closing_balance")
                assert first + sum(lines.values()) == last
                assert last == self._ledger_sum(company, end)
                assert first == self._ledger_sum(company, start)
                assert -lines["uses"] == sum(c["amount_micros"] for c in invoice["catalogues"])

    def check_closed_months_unchanged(self) -> None:
        for month, docs in self.closed.items():
            assert self._documents(month) == docs, month

    # Helpers ------------------------------------------------------------------------------

    def _dispute_of(self, use: int) -> DisputeModel | None:
        index = self.uses[use].dispute
        return None if index is None else self.disputes[index]

    def _account(self, tenant: Tenant) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get("/v1/accounts/me", headers=tenant.headers).json()
        return body

    def _documents(self, month: str) -> dict[str, Any]:
        statement = self.client.get(f"/v1/statements/{month}", headers=self.label.headers)
        assert statement.status_code == 200, statement.text
        invoices = [
            self.client.get(f"/v1/invoices/{month}", headers=c.headers).json()
            for c in self.companies
        ]
        return {"statement": statement.json(), "invoices": invoices}

    def _ledger_sum(self, tenant: Tenant, before: str, *, held: bool = False) -> int:
        """The ledger's own sum, straight from the tables."""
        kinds = "('held')" if held else "('label', 'ai_company')"
        return int(
            scalar(
                self.engine,
                "SELECT coalesce(sum(p.amount_micros), 0) FROM ledger_postings p "
                "JOIN ledger_transactions t ON t.id = p.transaction_id "
                "JOIN ledger_accounts a ON a.id = p.account_id "
                f"WHERE a.org_id = :org AND a.kind IN {kinds} AND t.created_at < :before",
                org=tenant.id,
                before=before,
            )
        )


def _index() -> st.SearchStrategy[int]:
    return st.integers(0, 10_000)


OPERATIONS = st.one_of(
    st.tuples(st.just("check"), st.integers(0, 1), st.integers(0, 3)),
    st.tuples(st.just("check"), st.integers(0, 1), st.integers(0, 3)),
    st.tuples(st.just("reverse"), _index()),
    st.tuples(st.just("dispute"), _index(), st.sampled_from(["not_derived", "public_domain"])),
    st.tuples(st.just("dispute"), _index(), st.sampled_from(["licensed_elsewhere", "other"])),
    st.tuples(st.just("release"), _index()),
    st.tuples(st.just("uphold"), _index()),
    st.tuples(st.just("appeal"), _index()),
    st.tuples(st.just("decide_appeal"), _index(), st.booleans()),
    st.tuples(st.just("advance"), st.integers(1, 40)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("close")),
)


def test_random_histories_balance_and_reconcile(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    tenants: Tenants,
    clock: ManualClock,
    engine: Engine,
) -> None:
    mix = excerpt(11, 3.0, 15.0, timbre="piano") + excerpt(13, 10.0, 15.0, timbre="flute")
    pieces = [
        music.write(f"query-history-{s}", lambda s=s: excerpt(s, 2.0, 12.0, timbre=SEEDS[s]))
        for s in (11, 12, 13)
    ] + [music.write("query-history-mix", lambda: 0.5 * mix)]
    history = History(
        client=client,
        engine=engine,
        clock=clock,
        label=world["label"],
        companies=[world["company"], tenants.ai_company()],
        operator=tenants.operator(),
        auditor=tenants.auditor(),
        pieces=pieces,
    )

    # No shrinking: the examples continue one history, so a smaller replay would start from
    # another state. A failure prints the operations that led to it.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(operations=st.lists(OPERATIONS, min_size=3, max_size=15))
    def continue_history(operations: list[tuple[Any, ...]]) -> None:
        before = set(history.closed)
        for name, *args in operations:
            if name == "advance":
                clock.advance(days=args[0])
            elif name in ("release", "uphold"):
                history.decide(args[0], name)
            else:
                getattr(history, name)(*args)
            clock.advance(minutes=7)  # every step at its own time
        history.check_books()
        history.check_closed_months(sorted(set(history.closed) - before))

    continue_history()
    history.check_closed_months_unchanged()
    assert client.get("/v1/ledger/verify", headers=history.auditor.headers).json()["ok"] is True
    # The generated history did what it is for (about 180 steps; each of these is likely).
    assert history.checks
    assert history.disputes
    assert history.closed
