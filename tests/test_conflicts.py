"""Ownership conflicts: the same recording registered twice is noticed (a duplicate within a
label, a conflict between two), a passage is paid once, and a conflict's money is held until
one label withdraws its claim or an operator decides. Through the API, on real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app import cli
from app.config import Settings, get_settings
from tests.audio_synth import melody_track, write_audio
from tests.factories import Tenant, Tenants, run_jobs, scalar, upload
from tests.worlds import SEEDS, SR, Music


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
