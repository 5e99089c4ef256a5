"""Spending limits: a per-check cap and per-company credit limits; refusals charge nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.factories import scalar, submit_check
from tests.worlds import RATE, Music, excerpt


def _piece(music: Music) -> Any:
    return music.write("query-11", lambda: excerpt(11, 2.0, 12.0))


def test_a_runaway_rate_is_refused_at_the_per_check_cap_and_charges_nothing(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    label, company = world["label"], world["company"]
    catalogue = world["catalogue"]["id"]
    client.put(
        f"/v1/catalogues/{catalogue}/license",
        json={"rate_per_use_micros": 10**12, "threshold": 0.0},
        headers=label.headers,
    ).raise_for_status()
    with caplog.at_level(logging.WARNING):
        refused = submit_check(client, company, _piece(music), key="big")
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "spending_limit"
    assert error["details"]["limit"] == "per_check_cap"
    assert error["details"]["charge_micros"] > error["details"]["limit_micros"] == 10_000_000
    assert "nothing was charged" in error["message"]
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == 0
    assert scalar(engine, "SELECT count(*) FROM checks") == 0
    alerts = [r for r in caplog.records if "spending_limit_refused" in r.getMessage()]
    assert alerts
    assert alerts[0].levelno == logging.WARNING

    # The key was given back: after the label fixes its rate, the same key goes through.
    client.put(
        f"/v1/catalogues/{catalogue}/license",
        json={"rate_per_use_micros": RATE, "threshold": 0.3},
        headers=label.headers,
    ).raise_for_status()
    retried = submit_check(client, company, _piece(music), key="big")
    assert retried.status_code == 201, retried.text
    assert retried.json()["charge_micros"] == RATE


def test_a_company_at_its_credit_limit_is_refused_until_the_operator_raises_it(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Any, engine: Engine
) -> None:
    operator, company = tenants.operator(), world["company"]
    set_limit = client.put(
        f"/v1/orgs/{company.id}/credit-limit",
        json={"credit_limit_micros": RATE + RATE // 2, "reason": "trial account"},
        headers=operator.headers,
    )
    assert set_limit.status_code == 200, set_limit.text
    assert set_limit.json()["credit_limit_micros"] == RATE + RATE // 2
    first = submit_check(client, company, _piece(music), key="one")
    assert first.status_code == 201
    second = submit_check(client, company, _piece(music), key="two")
    assert second.status_code == 402
    details = second.json()["error"]["details"]
    assert details == {
        "limit": "credit_limit",
        "charge_micros": RATE,
        "limit_micros": RATE + RATE // 2,
        "owed_micros": RATE,
    }
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == 1
    client.put(
        f"/v1/orgs/{company.id}/credit-limit",
        json={"credit_limit_micros": None, "reason": "paid up"},
        headers=operator.headers,
    ).raise_for_status()
    assert submit_check(client, company, _piece(music), key="two").status_code == 201


def test_credit_limits_are_for_ai_companies_only(
    client: TestClient, world: dict[str, Any], tenants: Any
) -> None:
    response = client.put(
        f"/v1/orgs/{world['label'].id}/credit-limit",
        json={"credit_limit_micros": 5, "reason": "nonsense"},
        headers=tenants.operator().headers,
    )
    assert response.status_code == 422
