"""Ownership conflicts: the same recording registered twice is noticed (a duplicate within a
label, a conflict between two), a passage is paid once, and a conflict's money is held until
one label withdraws its claim or an operator decides. Through the API, on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app import cli
from app.config import Settings, get_settings
from app.main import create_app
from tests.audio_synth import melody_track, write_audio
from tests.factories import (
    ManualClock,
    Tenant,
    Tenants,
    run_jobs,
    scalar,
    submit_check,
    upload,
    uses_of,
)
from tests.worlds import RATE, SEEDS, SR, Music, excerpt

JAN = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(JAN)


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: ManualClock) -> Iterator[TestClient]:
    """The service with a clock the test moves."""
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client


def _quieter(music: Music, seed: int, gain: float = 0.9) -> Path:
    """Track `seed` again at another gain: the same recording, a different file hash."""
    return music.write(
        f"track-{seed}-gain-{gain}",
        lambda: gain * melody_track(seed, seconds=30.0, sr=SR, timbre=SEEDS[seed]),
    )


def _ingest(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    label: Tenant,
    catalogue: str,
    path: Path,
) -> str:
    response = upload(client, label, catalogue, path)
    assert response.status_code == 202, response.text
    run_jobs(settings, engine)
    client.app.state.service.index.sync()  # type: ignore[attr-defined]
    return str(response.json()["id"])


def _conflicts(client: TestClient, tenant: Tenant, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/conflicts", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_reupload_at_another_gain_is_a_duplicate_of_the_original(
    client: TestClient, settings: Settings, engine: Engine, music: Music, world: dict[str, Any]
) -> None:
    label, catalogue = world["label"], world["catalogue"]["id"]
    again = _ingest(client, settings, engine, label, catalogue, _quieter(music, 11))
    track = client.get(f"/v1/tracks/{again}", headers=label.headers).json()
    assert track["status"] == "indexed"  # it still indexes: the label decides
    assert track["duplicate_of"] == world["tracks"][11]
    row = scalar(
        engine,
        "SELECT kind || ' ' || status || ' ' || coverage::text FROM ownership_conflicts "
        "WHERE track_id = :t",
        t=again,
    )
    kind, status, coverage = row.split()
    assert (kind, status) == ("duplicate", "noted")
    assert float(coverage) >= 0.8


def test_an_unrelated_track_is_neither_duplicate_nor_conflict(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    other_label = tenants.label()
    other = tenants.catalogue(other_label, rate_per_use_micros=2000, threshold=0.3)
    path = tmp_path / "unrelated.wav"
    write_audio(path, melody_track(77, seconds=30.0, sr=SR, timbre="piano"), SR, "WAV")
    track = _ingest(client, settings, engine, other_label, other["id"], path)
    assert (
        client.get(f"/v1/tracks/{track}", headers=other_label.headers).json()["duplicate_of"]
        is None
    )
    assert scalar(engine, "SELECT count(*) FROM ownership_conflicts") == 0


def test_scan_conflicts_finds_what_ingestion_did_not_record(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    other_label = tenants.label()
    other = tenants.catalogue(other_label, rate_per_use_micros=3000, threshold=0.3)
    claimed = _ingest(client, settings, engine, other_label, other["id"], _quieter(music, 12))
    assert scalar(engine, "SELECT count(*) FROM ownership_conflicts") == 1
    with engine.begin() as conn:  # as if the worker had died before detecting it
        conn.exec_driver_sql("DELETE FROM ownership_conflicts")
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert cli.main(["scan-conflicts", "--catalogue", other["id"]]) == 0
        assert "1 new duplicates or conflicts found" in capsys.readouterr().out
        assert cli.main(["scan-conflicts"]) == 0  # nothing found twice
        assert "0 new duplicates or conflicts found" in capsys.readouterr().out
        assert cli.main(["scan-conflicts", "--catalogue", "nope"]) == 2
    finally:
        get_settings.cache_clear()
    row = scalar(
        engine,
        "SELECT kind || ' ' || status || ' ' || original_track_id::text FROM ownership_conflicts "
        "WHERE track_id = :t",
        t=claimed,
    )
    assert row == f"conflict open {world['tracks'][12]}"


def test_compare_refuses_another_tempo_and_finds_a_shifted_copy() -> None:
    from app.catalogues.overlaps import compare

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    starts = np.arange(30, dtype=np.float64)
    # The original holds the track 5 s in: the same windows at starts + 5.
    found = compare(starts[:25], vectors[:25], starts + 5, vectors, window_s=8.0)
    assert found is not None
    assert found.coverage == 1.0
    assert found.offset_s == pytest.approx(5.0)
    assert found.tempo_ratio == pytest.approx(1.0)
    # 5 % faster: the same windows, but their times drift away from one alignment.
    assert compare(starts[:25], vectors[:25], starts * 1.05, vectors, window_s=8.0) is None
    # Unrelated windows.
    other = rng.normal(size=(30, 16)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    assert compare(starts, other, starts, vectors, window_s=8.0) is None


def _piece(music: Music, seed: int, start: float = 2.0) -> Path:
    return music.write(
        f"query-conflict-{seed}-{start:g}", lambda: excerpt(seed, start, 12.0, timbre=SEEDS[seed])
    )


def _ledger_sum(engine: Engine) -> int:
    return int(scalar(engine, "SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings"))


def _balance(client: TestClient, tenant: Tenant) -> int:
    return int(client.get("/v1/accounts/me", headers=tenant.headers).json()["balance_micros"])


def _claimed_elsewhere(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    seed: int = 11,
) -> tuple[Tenant, str]:
    """A second label registers track `seed` (at another gain): an open conflict."""
    rival = tenants.label()
    catalogue = tenants.catalogue(rival, rate_per_use_micros=RATE, threshold=0.3)
    track = _ingest(client, settings, engine, rival, catalogue["id"], _quieter(music, seed))
    return rival, track


def test_a_check_pays_a_duplicated_recording_once_to_the_original(
    client: TestClient, settings: Settings, engine: Engine, music: Music, world: dict[str, Any]
) -> None:
    label, company = world["label"], world["company"]
    original = world["tracks"][11]
    again = _ingest(client, settings, engine, label, world["catalogue"]["id"], _quieter(music, 11))

    check = submit_check(client, company, _piece(music, 11)).json()
    assert check["charge_micros"] == RATE  # not halved, not doubled
    matches = {m["track_id"]: m for m in check["matches"]}
    assert matches[original]["is_use"] is True
    assert matches[original]["amount_micros"] == RATE
    assert matches[again]["is_use"] is False
    assert matches[again]["counted_with"] == original
    assert matches[again]["amount_micros"] == 0
    [use] = uses_of(client, company, check["id"])
    assert use["track_id"] == original
    assert _balance(client, label) == RATE
    assert _ledger_sum(engine) == 0


def test_a_check_on_both_sides_of_an_open_conflict_charges_once_and_holds_the_credit(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    label, company = world["label"], world["company"]
    rival, claimed = _claimed_elsewhere(client, settings, engine, music, tenants)
    [conflict] = _conflicts(client, label, status="open")
    assert conflict["kind"] == "conflict"
    assert conflict["original_track_id"] == world["tracks"][11]
    assert conflict["track_id"] == claimed
    assert _conflicts(client, rival) == [conflict]  # both labels see it

    check = submit_check(client, company, _piece(music, 11)).json()
    assert check["charge_micros"] == RATE
    matches = {m["track_id"]: m for m in check["matches"]}
    assert matches[world["tracks"][11]]["conflict_id"] == conflict["id"]
    assert matches[claimed]["counted_with"] == world["tracks"][11]
    assert _balance(client, company) == -RATE
    assert _balance(client, label) == 0  # held, not paid
    assert _balance(client, rival) == 0
    assert _ledger_sum(engine) == 0

    detail = client.get(f"/v1/conflicts/{conflict['id']}", headers=rival.headers).json()
    assert detail["amounts"] == [{"currency": "USD", "held_micros": RATE, "paid_micros": 0}]
    [hold] = detail["holds"]
    assert (hold["check_id"], hold["state"]) == (check["id"], "held")
    assert detail["evidence"]
    assert detail["evidence"][0]["similarity"] > 0.95
    [use] = client.get("/v1/uses", headers=label.headers).json()["items"]
    assert (use["conflict_id"], use["conflict_state"]) == (conflict["id"], "held")
    # Nothing else moves the held money while the conflict is open.
    operator = tenants.operator()
    reversal = client.post(
        f"/v1/checks/{check['id']}/reversal", json={"reason": "test"}, headers=operator.headers
    )
    assert reversal.status_code == 409, reversal.text
    dispute = client.post(
        "/v1/disputes",
        json={"use_id": use["id"], "reason": "other", "comment": "not this"},
        headers=company.headers,
    )
    assert dispute.status_code == 409, dispute.text
    assert _ledger_sum(engine) == 0


def _held_check(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> tuple[Tenant, dict[str, Any], dict[str, Any]]:
    """A rival label claims track 11 and a check draws on it: RATE held in escrow."""
    rival, _ = _claimed_elsewhere(client, settings, engine, music, tenants)
    [conflict] = _conflicts(client, rival, status="open")
    check = submit_check(client, world["company"], _piece(music, 11)).json()
    assert check["charge_micros"] == RATE
    return rival, conflict, check


def test_withdrawing_a_claim_pays_the_other_label_what_was_held(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    label = world["label"]
    rival, conflict, _ = _held_check(client, settings, engine, music, tenants, world)

    # The first registrant gives the recording up: the rival wins and is paid.
    response = client.post(
        f"/v1/conflicts/{conflict['id']}/withdraw-claim",
        json={"reason": "the licence moved to them in 2029"},
        headers=label.headers,
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["resolution"]) == ("resolved", "claim_withdrawn")
    assert done["winner_label_id"] == str(rival.id)
    assert done["amounts"] == [{"currency": "USD", "held_micros": 0, "paid_micros": RATE}]
    assert done["holds"][0]["state"] == "upheld"
    assert (_balance(client, label), _balance(client, rival)) == (0, RATE)
    assert _ledger_sum(engine) == 0
    own = client.get(f"/v1/tracks/{world['tracks'][11]}", headers=label.headers).json()
    assert own["withdrawn_at"] is not None  # it matches no more

    # From now on the rival's track alone is paid, directly.
    check = submit_check(client, world["company"], _piece(music, 11, start=4.0)).json()
    assert [m["label_id"] for m in check["matches"] if m["is_use"]] == [str(rival.id)]
    assert _balance(client, rival) == 2 * RATE
    again = client.post(
        f"/v1/conflicts/{conflict['id']}/withdraw-claim",
        json={"reason": "changed our mind"},
        headers=rival.headers,
    )
    assert again.status_code == 409
    assert _ledger_sum(engine) == 0
    [use] = [
        u for u in client.get("/v1/uses", headers=label.headers).json()["items"] if u["conflict_id"]
    ]
    assert use["conflict_state"] == "upheld"
    # Reversing the check takes the credit back from the label that was paid.
    reversal = client.post(
        f"/v1/checks/{use['check_id']}/reversal",
        json={"reason": "refund"},
        headers=tenants.operator().headers,
    )
    assert reversal.status_code == 201, reversal.text
    assert (_balance(client, label), _balance(client, rival)) == (0, RATE)
    assert _ledger_sum(engine) == 0


def test_an_operator_decides_for_the_first_registrant(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    label = world["label"]
    rival, conflict, _ = _held_check(client, settings, engine, music, tenants, world)
    operator = tenants.operator()
    url = f"/v1/conflicts/{conflict['id']}/decision"
    stranger = tenants.label()
    assert (
        client.post(
            url, json={"winner_label_id": str(stranger.id), "reason": "x" * 5},
            headers=operator.headers,
        ).status_code
        == 422
    )  # fmt: skip
    assert (
        client.post(
            url, json={"winner_label_id": str(label.id), "reason": "delivery contract"},
            headers=rival.headers,
        ).status_code
        == 403
    )  # fmt: skip
    response = client.post(
        url,
        json={"winner_label_id": str(label.id), "reason": "their delivery contract predates"},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["resolution"], done["resolved_by"]) == ("decided", str(operator.id))
    assert done["resolved_reason"] == "their delivery contract predates"
    assert done["holds"][0]["state"] == "released"
    assert (_balance(client, label), _balance(client, rival)) == (RATE, 0)
    claimed = client.get(f"/v1/tracks/{conflict['track_id']}", headers=rival.headers).json()
    assert claimed["withdrawn_at"] is not None
    assert _ledger_sum(engine) == 0


def test_conflicts_are_seen_by_both_labels_operators_and_auditors_only(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    rival, conflict, _ = _held_check(client, settings, engine, music, tenants, world)
    url = f"/v1/conflicts/{conflict['id']}"
    for reader in (world["label"], rival, tenants.operator(), tenants.auditor()):
        assert client.get(url, headers=reader.headers).status_code == 200
    assert client.get(url, headers=tenants.label().headers).status_code == 404
    assert _conflicts(client, tenants.label()) == []
    assert client.get(url, headers=world["company"].headers).status_code == 403
    outsider = client.post(
        f"{url}/withdraw-claim", json={"reason": "not ours"}, headers=tenants.label().headers
    )
    assert outsider.status_code == 404
    assert client.post(f"{url}/withdraw-claim", json={}, headers=rival.headers).status_code == 422


def test_a_duplicate_has_no_claim_to_withdraw(
    client: TestClient, settings: Settings, engine: Engine, music: Music, world: dict[str, Any]
) -> None:
    label = world["label"]
    _ingest(client, settings, engine, label, world["catalogue"]["id"], _quieter(music, 11))
    [duplicate] = _conflicts(client, label, kind="duplicate")
    response = client.post(
        f"/v1/conflicts/{duplicate['id']}/withdraw-claim",
        json={"reason": "keep one"},
        headers=label.headers,
    )
    assert response.status_code == 409
    assert "duplicate" in response.json()["error"]["message"]


def test_two_concurrent_resolutions_one_wins_the_other_is_409(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
) -> None:
    label = world["label"]
    rival, conflict, _ = _held_check(client, settings, engine, music, tenants, world)
    operator = tenants.operator()
    url = f"/v1/conflicts/{conflict['id']}"
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def withdraw() -> None:
        barrier.wait()
        r = client.post(f"{url}/withdraw-claim", json={"reason": "ours no more"},
                        headers=rival.headers)  # fmt: skip
        statuses.append(r.status_code)

    def decide() -> None:
        barrier.wait()
        r = client.post(
            f"{url}/decision",
            json={"winner_label_id": str(rival.id), "reason": "the rival owns it"},
            headers=operator.headers,
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=withdraw), threading.Thread(target=decide)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409]
    posted = scalar(
        engine, "SELECT count(*) FROM ledger_transactions WHERE kind IN ('release', 'uphold')"
    )
    assert posted == 1
    assert _balance(client, label) + _balance(client, rival) == RATE
    assert _ledger_sum(engine) == 0


def test_resolution_after_the_month_closed_is_an_adjustment_and_statements_show_the_hold(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    music: Music,
    tenants: Tenants,
    world: dict[str, Any],
    clock: ManualClock,
) -> None:
    label = world["label"]
    rival, conflict, check = _held_check(client, settings, engine, music, tenants, world)
    operator = tenants.operator()
    clock.set(dt.datetime(2030, 2, 3, 9, 0, tzinfo=dt.UTC))
    closed = client.post("/v1/periods/2030-01/close", headers=operator.headers)
    assert closed.status_code == 200, closed.text

    january = client.get("/v1/statements/2030-01", headers=rival.headers).json()
    [row] = january["conflicts"]
    assert (row["status"], row["amount_micros"]) == ("held", RATE)
    assert row["label_id"] == str(label.id)
    assert row["other_label_id"] == str(rival.id)

    response = client.post(
        f"/v1/conflicts/{conflict['id']}/decision",
        json={"winner_label_id": str(rival.id), "reason": "the rival's licence"},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    [hold] = response.json()["holds"]
    adjusts = scalar(
        engine,
        "SELECT adjusts_period::text FROM ledger_transactions WHERE id = :id",
        id=hold["resolution_transaction_id"],
    )
    assert adjusts == "2030-01-01"  # the held money's month is closed: an adjustment
    assert _balance(client, rival) == RATE
    assert _ledger_sum(engine) == 0
    # January's statement does not change; February's shows the hold paid out.
    assert client.get("/v1/statements/2030-01", headers=rival.headers).json() == january
    clock.set(dt.datetime(2030, 3, 2, 9, 0, tzinfo=dt.UTC))
    assert client.post("/v1/periods/2030-02/close", headers=operator.headers).status_code == 200
    february = client.get("/v1/statements/2030-02", headers=rival.headers).json()
    [row] = february["conflicts"]
    assert row["status"] == "upheld"
    assert [a["kind"] for a in february["adjustments"]] == ["uphold"]
    assert check["id"]


def test_grouping_merges_the_same_passage_only() -> None:
    import uuid as _uuid

    from app.checks.attribution import Evidence, TrackMatch
    from app.checks.grouping import Pair, group_matches

    newer, original = _uuid.uuid4(), _uuid.uuid4()
    # The newer track is the original from 5 s in: original time = newer time + 5.
    pair = Pair(_uuid.uuid4(), newer, original, 1.0, 5.0, holds_money=True, spans=((0, 25),))

    def match(ref_start: float, resemblance: float) -> TrackMatch:
        return TrackMatch(0, resemblance, (Evidence(0.0, 12.0, ref_start, ref_start + 12, 0.9),))

    same = group_matches([(newer, match(3.0, 0.8)), (original, match(8.0, 0.7))], [pair])
    [group] = same
    assert group.representative == original
    assert group.match.resemblance == 0.8  # the group's strongest
    assert group.held_by == pair.conflict_id
    # The same tracks at another alignment: two passages, two uses.
    apart = group_matches([(newer, match(3.0, 0.8)), (original, match(40.0, 0.7))], [pair])
    assert len(apart) == 2
    # Only the newer matched: the original joins, its match moved into its own time.
    [alone] = group_matches([(newer, match(3.0, 0.8))], [pair], partners=[original])
    assert alone.representative == original
    assert alone.match.evidence[0].reference_start == 8.0
    # Only the newer matched, outside the stretch both share: the original stays out.
    [outside] = group_matches([(newer, match(60.0, 0.8))], [pair], partners=[original])
    assert outside.representative == newer
