"""Attribution checks end to end: synthesised music in, matches, evidence and payments out."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.checks import service as check_service
from app.checks.attribution import Calibration
from app.config import Settings
from app.db import make_sessionmaker
from app.main import create_app
from app.timing import parse_server_timing, server_timing
from tests.audio_synth import melody_track, white_noise, write_audio
from tests.factories import Tenants, run_jobs, scalar, submit_check, upload
from tests.worlds import RATE, SEEDS, SR, Music, excerpt


def test_transformed_excerpt_is_attributed_to_its_source_with_evidence_and_paid(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    tempo, start = 1.04, 6.0
    piece = excerpt(12, start, 14.0, tempo=tempo, transpose=1, timbre="strings")
    piece = white_noise(piece * 0.5, snr_db=20, seed=3)
    path = music.write("query-12-transformed", lambda: piece, "OGG")

    response = submit_check(client, world["company"], path, generation_id="gen-1", model="m1")
    assert response.status_code == 201, response.text
    result = response.json()
    assert response.headers["Idempotent-Replayed"] == "false"
    assert result["matches"], "the source was not found"
    top = result["matches"][0]
    assert top["track_id"] == world["tracks"][12]
    assert top["is_use"] is True
    assert top["share"] == 1.0
    assert top["label_id"] == str(world["label"].id)
    assert [m["track_id"] for m in result["matches"] if m["is_use"]] == [world["tracks"][12]]
    for ev in top["evidence"]:
        assert ev["transposition"] == 1  # the piece is a semitone above its source
        # Query time t plays the source's (start + t) * tempo.
        assert ev["reference_start"] == pytest.approx((start + ev["query_start"]) * tempo, abs=1.0)
        assert ev["reference_end"] == pytest.approx((start + ev["query_end"]) * tempo, abs=1.0)
    covered = sum(ev["query_end"] - ev["query_start"] for ev in top["evidence"])
    assert covered >= 8.0

    assert result["charge_micros"] == RATE
    assert result["ledger_transaction_id"] is not None
    assert result["embedder"]["name"] == "spectral"
    assert result["index_watermark"] > 0
    assert result["generation_id"] == "gen-1"

    company = client.get("/v1/accounts/me", headers=world["company"].headers).json()
    label = client.get("/v1/accounts/me", headers=world["label"].headers).json()
    assert company["balance_micros"] == -RATE
    assert label["balance_micros"] == RATE
    stored = client.get(f"/v1/checks/{result['id']}", headers=world["company"].headers).json()
    assert stored == result


def test_piece_mixing_two_tracks_finds_both_and_splits_the_charge(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    mix = excerpt(11, 3.0, 15.0, timbre="piano") + excerpt(13, 10.0, 15.0, timbre="flute")
    path = music.write("query-mix-11-13", lambda: 0.5 * mix)
    result = submit_check(client, world["company"], path).json()
    uses = {m["track_id"]: m for m in result["matches"] if m["is_use"]}
    assert set(uses) == {world["tracks"][11], world["tracks"][13]}
    assert sum(m["share"] for m in uses.values()) == pytest.approx(1.0, abs=2e-6)
    assert sum(m["amount_micros"] for m in uses.values()) == result["charge_micros"] == RATE


def test_a_quieter_source_beside_a_paid_use_is_paid_from_the_calibrated_beside_threshold(
    client: TestClient, world: dict[str, Any], music: Music, settings: Settings
) -> None:
    """A mix's quieter source is judged beside the louder one: from its catalogue's
    threshold scaled by the calibrated ratio, with the false-positive rate of a spurious
    match beside a true use. Heard alone at the same resemblance, it is not paid."""
    calibration = Calibration.load(settings.calibration_file)
    params = calibration.params
    ratio = params.beside_use_threshold / params.use_threshold
    assert ratio < 0.8, "the packaged calibration judges a mix's sources as if heard alone"
    threshold = 0.95
    client.put(
        f"/v1/catalogues/{world['catalogue']['id']}/license",
        json={"rate_per_use_micros": RATE, "threshold": threshold},
        headers=world["label"].headers,
    )
    quiet = 10 ** (-12 / 20) * excerpt(13, 10.0, 15.0, timbre="flute")
    loud_part = excerpt(11, 3.0, 15.0, timbre="piano")
    mix = music.write("query-mix-11-13-quiet", lambda: 0.5 * (loud_part + quiet))
    result = submit_check(client, world["company"], mix).json()
    by_track = {m["track_id"]: m for m in result["matches"]}
    loud, soft = by_track[world["tracks"][11]], by_track[world["tracks"][13]]
    assert loud["resemblance"] >= threshold
    assert not loud["beside_use"]
    assert loud["threshold"] == threshold
    assert threshold * ratio <= soft["resemblance"] < threshold
    assert soft["beside_use"] is True
    assert soft["is_use"] is True
    assert soft["threshold"] == pytest.approx(threshold * ratio, abs=2e-6)
    assert soft["expected_fpr"] == calibration.expected_fpr(soft["resemblance"], beside=True)
    assert sum(m["amount_micros"] for m in (loud, soft)) == result["charge_micros"] == RATE
    assert 0 < soft["amount_micros"] < loud["amount_micros"]

    # The same source mixed with music that is not in the catalogue: as much resemblance as
    # the beside threshold asks, but nothing stronger is paid, so it is judged as heard alone.
    source = excerpt(13, 10.0, 15.0, timbre="flute")
    other = melody_track(99, seconds=15.0, sr=SR, timbre="brass")[: len(source)]
    alone = music.write("query-13-in-other", lambda: 0.5 * (other + source[: len(other)]))
    result = submit_check(client, world["company"], alone).json()
    matched = {m["track_id"]: m for m in result["matches"]}
    soft = matched[world["tracks"][13]]
    assert threshold * ratio <= soft["resemblance"] < threshold
    assert (soft["is_use"], soft["beside_use"], soft["threshold"]) == (False, False, threshold)
    assert result["charge_micros"] == 0


def test_unrelated_music_abstains_and_charges_nothing_but_is_recorded(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    path = music.write(
        "query-unrelated", lambda: melody_track(99, seconds=15.0, sr=SR, timbre="brass")
    )
    response = submit_check(client, world["company"], path)
    assert response.status_code == 201
    result = response.json()
    assert result["matches"] == []
    assert result["charge_micros"] == 0
    assert result["ledger_transaction_id"] is None
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == 0
    assert (
        client.get(f"/v1/checks/{result['id']}", headers=world["company"].headers).status_code
        == 200
    )


def test_a_check_says_where_its_time_went_and_a_replay_does_not(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    started = time.perf_counter()
    first = submit_check(client, world["company"], path, key="timed")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert first.status_code == 201
    phases = parse_server_timing(first.headers["Server-Timing"])
    assert {"upload", "claim", "queue", "decode", "embed", "search", "windows", "verify",
            "licensing", "conflicts", "record"} <= set(phases)  # fmt: skip
    assert all(ms >= 0 for ms in phases.values())
    assert phases["embed"] > 0  # the piece was analysed here
    assert phases["verify"] > 0
    # Phases do not overlap: together they fit in the time the client waited.
    assert sum(phases.values()) <= elapsed_ms
    again = submit_check(client, world["company"], path, key="timed")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Server-Timing" not in again.headers


def test_server_timing_reads_back_what_it_writes_and_skips_what_has_no_duration() -> None:
    assert parse_server_timing(server_timing({"decode": 6.84, "search": 198.0})) == {
        "decode": 6.8,
        "search": 198.0,
    }
    assert parse_server_timing('db;desc="reads";dur=5.5, cache, app;dur=2') == {
        "db": 5.5,
        "app": 2.0,
    }
    assert parse_server_timing("") == {}


def test_retry_with_the_same_key_replays_and_charges_once(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    first = submit_check(client, world["company"], path, key="retry-me", generation_id="g")
    again = submit_check(client, world["company"], path, key="retry-me", generation_id="g")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == 1
    assert scalar(engine, "SELECT count(*) FROM checks") == 1

    other = submit_check(client, world["company"], path, key="retry-me", generation_id="other")
    assert other.status_code == 422
    assert other.json()["error"]["details"]["reason"] == "key_reused"
    # Keys belong to one AI company: another company's identical key is its own.
    stranger = Tenants(client, engine).ai_company()
    assert (
        submit_check(client, stranger, path, key="retry-me", generation_id="g").status_code == 201
    )


def test_a_key_still_in_flight_is_409(
    client: TestClient, world: dict[str, Any], music: Music, settings: Settings, engine: Engine
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    check_service.claim_key(
        make_sessionmaker(engine),
        ai_company_id=world["company"].id,
        key="busy",
        request_hash=check_service.fingerprint(
            audio_sha256=sha, generation_id=None, model=None, metadata={}
        ),
        lock_seconds=settings.idempotency_lock_seconds,
    )
    response = submit_check(client, world["company"], path, key="busy")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["reason"] == "in_flight"


def test_parallel_checks_charge_exactly_once_per_key_and_the_ledger_holds(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    pieces = [
        music.write(f"query-par-{s}", lambda s=s: excerpt(s, 1.0, 12.0, timbre=SEEDS[s]))
        for s in SEEDS
    ]
    keys = [f"k{i}" for i in range(20)]
    jobs = [(k, pieces[i % len(pieces)]) for i, k in enumerate(keys)]
    jobs += [(k, pieces[i % len(pieces)]) for i, k in enumerate(keys[:6])]  # repeats

    def run(job: tuple[str, Path]) -> int:
        return submit_check(client, world["company"], job[1], key=job[0]).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(run, jobs))
    assert set(statuses) <= {201, 409}
    with engine.connect() as conn:
        per_key = dict(conn.execute(sa.text(
            "SELECT c.idempotency_key, count(t.id) FROM checks c "
            "LEFT JOIN ledger_transactions t ON t.check_id = c.id GROUP BY c.idempotency_key"
        )).all())  # fmt: skip
        assert set(per_key) == set(keys)
        assert set(per_key.values()) == {1}
        unbalanced = conn.scalar(sa.text(
            "SELECT count(*) FROM (SELECT transaction_id FROM ledger_postings "
            "GROUP BY transaction_id HAVING sum(amount_micros) <> 0) x"
        ))  # fmt: skip
        assert unbalanced == 0
    auditor = Tenants(client, engine).auditor()
    verified = client.get("/v1/ledger/verify", headers=auditor.headers).json()
    assert verified["ok"] is True
    assert verified["transactions_checked"] == 20
    company = client.get("/v1/accounts/me", headers=world["company"].headers).json()
    label = client.get("/v1/accounts/me", headers=world["label"].headers).json()
    assert company["balance_micros"] == -label["balance_micros"] == -20 * RATE


def test_withdrawn_tracks_and_unlicensed_catalogues_never_match(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    path = music.write("query-14", lambda: excerpt(14, 4.0, 12.0, timbre="organ"))
    assert (
        submit_check(client, world["company"], path).json()["matches"][0]["track_id"]
        == world["tracks"][14]
    )

    # Withdrawn: no match at once, before the index has synced.
    client.delete(f"/v1/tracks/{world['tracks'][14]}", headers=world["label"].headers)
    assert world["tracks"][14] not in [
        m["track_id"] for m in submit_check(client, world["company"], path).json()["matches"]
    ]

    other = music.write("query-13", lambda: excerpt(13, 4.0, 12.0, timbre="flute"))
    url = f"/v1/catalogues/{world['catalogue']['id']}/license"
    client.put(
        url,
        json={"rate_per_use_micros": RATE, "status": "suspended"},
        headers=world["label"].headers,
    )
    assert submit_check(client, world["company"], other).json()["matches"] == []
    client.put(
        url,
        json={
            "rate_per_use_micros": RATE,
            "valid_from": "2020-01-01T00:00:00Z",
            "valid_to": "2021-01-01T00:00:00Z",
        },
        headers=world["label"].headers,
    )
    assert submit_check(client, world["company"], other).json()["matches"] == []
    client.put(url, json={"rate_per_use_micros": 3000}, headers=world["label"].headers)
    result = submit_check(client, world["company"], other).json()
    assert result["matches"][0]["terms_version"] == 4
    assert result["charge_micros"] == 3000


def test_bad_audio_is_422_and_frees_the_key(
    client: TestClient, world: dict[str, Any], music: Music, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"nope" * 1000)
    bad = submit_check(client, world["company"], junk, key="k1")
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["reason"] == "not_audio"
    silent = tmp_path / "silent.wav"
    write_audio(silent, np.zeros(SR * 5, dtype=np.float32), SR, "WAV")
    assert (
        submit_check(client, world["company"], silent, key="k2").json()["error"]["details"][
            "reason"
        ]
        == "silent"
    )
    good = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    assert submit_check(client, world["company"], good, key="k1").status_code == 201


@pytest.mark.parametrize(
    ("headers", "fields", "field"),
    [
        ({}, {}, "header.Idempotency-Key"),
        ({"Idempotency-Key": "x" * 256}, {}, "header.Idempotency-Key"),
        ({"Idempotency-Key": "k"}, {"metadata": "[1, 2]"}, "body.metadata"),
        ({"Idempotency-Key": "k"}, {"metadata": "{oops"}, "body.metadata"),
        ({"Idempotency-Key": "k"}, {"prompt": "x"}, "body.prompt"),
    ],
)
def test_malformed_check_requests_are_422_naming_the_field(
    client: TestClient,
    tenants: Tenants,
    music: Music,
    headers: dict[str, str],
    fields: dict[str, str],
    field: str,
) -> None:
    company = tenants.ai_company()
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    with path.open("rb") as f:
        response = client.post(
            "/v1/checks",
            files={"file": (path.name, f)},
            data=fields,
            headers=company.headers | headers,
        )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert field in [d["field"] for d in details]


def test_checks_are_listed_for_their_company_and_hidden_from_others(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Tenants
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    ids = [
        submit_check(client, world["company"], path, generation_id=f"g{i}").json()["id"]
        for i in range(3)
    ]
    listed = client.get("/v1/checks", params={"limit": 2}, headers=world["company"].headers).json()
    assert [c["id"] for c in listed["items"]] == ids[::-1][:2]
    assert listed["items"][0]["uses"] == 1
    rest = client.get(
        "/v1/checks",
        params={"limit": 2, "cursor": listed["next_cursor"]},
        headers=world["company"].headers,
    ).json()
    assert [c["id"] for c in rest["items"]] == [ids[0]]
    only = client.get(
        "/v1/checks", params={"generation_id": "g1"}, headers=world["company"].headers
    ).json()
    assert [c["id"] for c in only["items"]] == [ids[1]]

    stranger = tenants.ai_company()
    assert client.get(f"/v1/checks/{ids[0]}", headers=stranger.headers).status_code == 404
    assert client.get("/v1/checks", headers=stranger.headers).json()["items"] == []
    auditor = tenants.auditor()
    assert len(client.get("/v1/checks", headers=auditor.headers).json()["items"]) == 3
    assert client.get(f"/v1/checks/{uuid.uuid4()}", headers=auditor.headers).status_code == 404


def test_transpositions_are_searched_only_with_an_embedder_that_can_transpose() -> None:
    from app.checks.attribution import AttributionParams
    from app.embedding.spectral import SpectralEmbedder

    params = AttributionParams(transpositions=(-1, 0, 1))
    assert check_service.params_for(params, SpectralEmbedder()) == params

    class Plain:  # an embedder that cannot transpose its vectors, as OpenL3 cannot
        name, version, dim, sample_rate, window_s, hop_s = "plain", "1", 8, 8000, 1.0, 1.0
        can_transpose = False

    adapted = check_service.params_for(params, Plain())  # type: ignore[arg-type]
    assert adapted.transpositions == (0,)
    assert params.octave_views
    assert adapted.octave_views == ()  # nor octave views
    assert adapted.k == params.k


def test_uses_of_equal_resemblance_are_listed_closest_first() -> None:
    """Two tracks at resemblance 1 (a source and a close setting of the same tune): the
    closer comes first in the check's matches and uses, whatever the order of their ids."""
    from app.catalogues.licensing import Licensed
    from app.checks.attribution import AttributionParams, Evidence, TrackMatch

    def licensed(track_id: uuid.UUID) -> Licensed:
        return Licensed(
            track_id=track_id, title="t", artist="a", catalogue_id=uuid.uuid4(),
            label_id=uuid.uuid4(), terms_id=uuid.uuid4(), terms_version=1,
            rate_per_use_micros=RATE, threshold=0.5,
        )  # fmt: skip

    run = (Evidence(0.0, 20.0, 3.0, 23.0, 0.95),)
    setting = (TrackMatch(1, 1.0, run, closeness=8.4), licensed(uuid.UUID(int=1)))
    source = (TrackMatch(2, 1.0, run, closeness=11.9), licensed(uuid.UUID(int=2)))
    weaker = (TrackMatch(3, 0.7, run, closeness=12.5), licensed(uuid.UUID(int=0)))
    analysis = check_service.Analysis(
        duration_s=20.0, index_watermark=0, matches=[weaker, setting, source]
    )

    found = check_service._ranked_uses(analysis, AttributionParams())

    assert [lic.track_id.int for _, lic in found.ranked] == [2, 1, 0]
    assert [lic.track_id.int for _, lic in found.uses] == [2, 1, 0]


def test_a_match_under_the_abstain_threshold_is_listed_only_when_paid_beside_a_use() -> None:
    """The beside threshold is calibrated on what sits beside true uses and can lie under the
    abstain threshold (fitted on music alone): a quieter source between the two is listed and
    paid beside a stronger use, the same resemblance with nothing paid is not listed at all."""
    from app.catalogues.licensing import Licensed
    from app.checks.attribution import AttributionParams, Evidence, TrackMatch

    def licensed(track_id: int, threshold: float = 0.5) -> Licensed:
        return Licensed(
            track_id=uuid.UUID(int=track_id), title="t", artist="a", catalogue_id=uuid.uuid4(),
            label_id=uuid.uuid4(), terms_id=uuid.uuid4(), terms_version=1,
            rate_per_use_micros=RATE, threshold=threshold,
        )  # fmt: skip

    params = AttributionParams(abstain_threshold=0.26, use_threshold=0.5, beside_use_threshold=0.24)
    assert params.report_floor == 0.24  # what the attribution keeps
    run = (Evidence(0.0, 20.0, 3.0, 23.0, 0.9),)
    loud = (TrackMatch(1, 0.9, run), licensed(1))
    quiet = (TrackMatch(2, 0.25, run), licensed(2))  # between beside (0.24) and abstain (0.26)
    faint = (TrackMatch(3, 0.23, run), licensed(3))  # under both

    mix = check_service._ranked_uses(
        check_service.Analysis(duration_s=20.0, index_watermark=0, matches=[loud, quiet, faint]),
        params,
    )
    assert [lic.track_id.int for _, lic in mix.ranked] == [1, 2]
    assert [lic.track_id.int for _, lic in mix.uses] == [1, 2]
    assert mix.beside >= {uuid.UUID(int=2)}
    assert mix.thresholds[uuid.UUID(int=2)] == pytest.approx(0.24, abs=1e-6)

    alone = check_service._ranked_uses(
        check_service.Analysis(duration_s=20.0, index_watermark=0, matches=[quiet, faint]),
        params,
    )
    assert alone.ranked == []
    assert alone.uses == []

    # A catalogue whose own threshold lies under the abstain threshold: heard alone, its
    # match is judged from the abstain threshold, so 0.25 is neither listed nor paid.
    low = (TrackMatch(4, 0.25, run), licensed(4, threshold=0.1))
    lone = check_service._ranked_uses(
        check_service.Analysis(duration_s=20.0, index_watermark=0, matches=[low]), params
    )
    assert (lone.ranked, lone.uses) == ([], [])
    assert lone.thresholds[uuid.UUID(int=4)] == 0.26


def test_a_piece_played_an_octave_higher_is_paid_in_its_own_key(
    settings: Settings, engine: Engine, music: Music
) -> None:
    # A recording in a high register: played an octave higher, its top notes leave the range
    # the embedder reads (C2-C7). The chroma of the notes the embedder estimates fold octaves
    # (a note above the range still shows in its pitch class), so the evidence reports the
    # shift in pitch classes; an octave is reported where an octave view resembles the track
    # clearly better, or best with the band levels agreeing (tests/test_attribution.py). Up
    # here the partials leave the bands' range (5 kHz) and the levels do not agree.
    high = music.write("track-31-high", lambda: melody_track(31, seconds=30.0, sr=SR, transpose=12))
    higher = music.write("query-31-octave-up", lambda: excerpt(31, 4.0, 16.0, transpose=24))
    with TestClient(create_app(settings)) as client:
        tenants = Tenants(client, engine)
        label, company = tenants.label(), tenants.ai_company()
        catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
        track_id = upload(client, label, catalogue["id"], high).json()["id"]
        run_jobs(settings, engine)
        client.app.state.service.index.sync()

        result = submit_check(client, company, higher).json()
        match = next(m for m in result["matches"] if m["track_id"] == track_id)
        assert match["is_use"] is True
        assert match["evidence"]
        assert {ev["transposition"] % 12 for ev in match["evidence"]} == {0}


def test_a_track_matches_in_the_very_next_check_once_it_reads_indexed(
    settings: Settings, engine: Engine, music: Music
) -> None:
    # The index's own polling is pushed out of reach: only the check can bring it up to date.
    slow_sync = settings.model_copy(update={"index_sync_seconds": 3600.0})
    with TestClient(create_app(slow_sync)) as client:
        tenants = Tenants(client, engine)
        label, company = tenants.label(), tenants.ai_company()
        catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
        track_id = upload(client, label, catalogue["id"], music.track(13)).json()["id"]
        run_jobs(slow_sync, engine)
        track = client.get(f"/v1/tracks/{track_id}", headers=label.headers).json()
        assert track["status"] == "indexed"

        path = music.write("query-13-right-after", lambda: excerpt(13, 4.0, 14.0))
        result = submit_check(client, company, path).json()
        assert [m["track_id"] for m in result["matches"] if m["is_use"]] == [track_id]
        assert result["index_watermark"] >= scalar(engine, "SELECT max(id) FROM segments")
