"""Ingestion under failure: interrupted jobs, killed workers, abandoned jobs, live servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app import cli, jobs
from app.catalogues import ingest, tasks, tracks
from app.catalogues.jobs import track_lock
from app.config import Settings, get_settings
from app.db import make_sessionmaker, transaction
from app.embedding import get_embedder
from app.main import create_app
from app.worker import build_job_app
from tests.audio_synth import melody_track, write_audio
from tests.factories import Tenants, audio_file, run_jobs, scalar, upload


def _wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_interrupted_job_writes_nothing_and_its_retry_completes(
    client: TestClient,
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    track = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=10.0)).json()

    def connection_lost() -> Any:
        # Raised after the segment rows were inserted, before the transaction commits.
        raise sqlalchemy.exc.OperationalError(
            "COMMIT", {}, Exception("server closed the connection")
        )

    monkeypatch.setattr(ingest, "utcnow", connection_lost)
    run_jobs(settings, engine)
    assert scalar(engine, "SELECT count(*) FROM segments") == 0
    assert scalar(engine, "SELECT status FROM tracks") == "pending"
    # A transient error: the job is scheduled again rather than failed.
    assert (
        scalar(
            engine, "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'ingest_track'"
        )
        == "todo"
    )

    monkeypatch.undo()
    with engine.begin() as conn:  # skip the retry back-off
        conn.execute(sa.text("UPDATE procrastinate_jobs SET scheduled_at = now()"))
    run_jobs(settings, engine)
    done = client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    assert done["status"] == "indexed"
    assert scalar(engine, "SELECT count(*) FROM segments") == done["segment_count"] > 0


@pytest.mark.slow
def test_killed_worker_leaves_no_partial_segments_and_its_job_is_picked_up_again(
    client: TestClient,
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    # Ten minutes of music: long enough that the worker is surely mid-job when killed.
    sr = 11025
    long_piece = np.tile(melody_track(5, seconds=30.0, sr=sr), 20)
    path = tmp_path / "long.wav"
    write_audio(path, long_piece, sr, "WAV")
    track = upload(client, label, catalogue["id"], path).json()

    env = dict(os.environ) | {
        "DATABASE_URL": settings.database_url or "",
        "ECHOLEDGER_DATA_DIR": str(settings.data_dir),
        "ECHOLEDGER_WORKER_HEARTBEAT_SECONDS": "0.5",
        "ECHOLEDGER_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(
            lambda: scalar(
                engine, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
            ),
            timeout=60,
            what="the worker to start the job",
        )
        time.sleep(0.5)  # into decoding and embedding
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert (
        scalar(
            engine, "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'ingest_track'"
        )
        == "doing"
    )
    assert scalar(engine, "SELECT count(*) FROM segments") == 0
    assert scalar(engine, "SELECT status FROM tracks") == "pending"

    time.sleep(1.5)  # the dead worker's heartbeat goes stale

    async def recover() -> int:
        job_app = build_job_app(settings, settings.database_url or "", pool_size=2)
        async with job_app.open_async():
            return await jobs.retry_stalled(job_app.job_manager, seconds=1.0)

    assert asyncio.run(recover()) == 1
    run_jobs(settings, engine)
    done = client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    assert done["status"] == "indexed"
    assert scalar(engine, "SELECT count(*) FROM segments") == done["segment_count"] > 500


def test_pending_track_whose_job_gave_up_is_failed_by_reconciliation(
    client: TestClient, tenants: Tenants, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    stuck, fresh, young, withdrawn = (
        upload(client, label, catalogue["id"], audio_file(tmp_path, seed=s, seconds=3.0)).json()
        for s in (1, 2, 3, 4)
    )
    assert client.delete(f"/v1/tracks/{withdrawn['id']}", headers=label.headers).status_code == 200
    with engine.begin() as conn:
        # As after the last retry of a transient error: the job ended failed. `young` lost its
        # job too, but is still inside the grace period; `withdrawn` is skipped on purpose.
        conn.execute(
            sa.text("UPDATE procrastinate_jobs SET status = 'failed' WHERE lock = ANY(:locks)"),
            {"locks": [track_lock(t["id"]) for t in (stuck, young, withdrawn)]},
        )
        conn.execute(
            sa.text("UPDATE tracks SET created_at = now() - :age WHERE id = ANY(:ids)"),
            {
                "age": 2 * tasks.ABANDONED_AFTER,
                "ids": [uuid.UUID(t["id"]) for t in (stuck, fresh, withdrawn)],
            },
        )

    with transaction(make_sessionmaker(engine)) as session:
        failed = ingest.fail_abandoned(session, older_than=tasks.ABANDONED_AFTER)
    assert [str(t) for t in failed] == [stuck["id"]]
    stuck_now = client.get(f"/v1/tracks/{stuck['id']}", headers=label.headers).json()
    assert stuck_now["status"] == "failed"
    assert "did not complete" in stuck_now["error"]
    for other in (fresh, young):
        now = client.get(f"/v1/tracks/{other['id']}", headers=label.headers).json()
        assert now["status"] == "pending", now
    # The withdrawal itself failed the withdrawn track, with its own reason.
    gone = client.get(f"/v1/tracks/{withdrawn['id']}", headers=label.headers).json()
    assert "withdrawn before ingestion finished" in gone["error"]


@pytest.mark.slow
def test_serve_indexes_uploads_in_process_and_the_index_follows_within_seconds(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    live = settings.model_copy(update={"run_worker": True, "index_sync_seconds": 0.2})
    with TestClient(create_app(live)) as client:
        tenants = Tenants(client, engine)
        label = tenants.label()
        catalogue = tenants.catalogue(label)
        track = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=8.0)).json()
        url = f"/v1/tracks/{track['id']}"
        _wait_for(
            lambda: client.get(url, headers=label.headers).json()["status"] == "indexed",
            timeout=60,
            what="the in-process worker to index the track",
        )
        index = client.app.state.service.index  # type: ignore[attr-defined]
        segments = client.get(url, headers=label.headers).json()["segment_count"]
        _wait_for(lambda: index.size == segments, timeout=10, what="the index to add segments")
        client.delete(url, headers=label.headers)
        _wait_for(lambda: index.size == 0, timeout=10, what="the index to drop the track")


def test_reembedding_adds_the_current_embedders_segments_after_a_change(
    client: TestClient,
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    kept = upload(client, label, catalogue["id"], audio_file(tmp_path, seed=1, seconds=6.0)).json()
    gone = upload(client, label, catalogue["id"], audio_file(tmp_path, seed=2, seconds=6.0)).json()
    run_jobs(settings, engine)
    client.delete(f"/v1/tracks/{gone['id']}", headers=label.headers)
    current = get_embedder(settings.embedder)
    with engine.begin() as conn:  # as if an earlier embedder version had indexed them
        conn.execute(sa.text("UPDATE segments SET embedder_version = 'old'"))
    sessions = make_sessionmaker(engine)

    def queue() -> int:
        with transaction(sessions) as session:
            return tracks.enqueue_reembedding(
                session, embedder_name=current.name, embedder_version=current.version
            )

    assert queue() == 1  # the withdrawn track is left alone
    run_jobs(settings, engine)
    fresh = scalar(
        engine,
        "SELECT count(*) FROM segments WHERE track_id = :t AND embedder_version = :v",
        t=kept["id"],
        v=current.version,
    )
    after = client.get(f"/v1/tracks/{kept['id']}", headers=label.headers).json()
    assert fresh == after["segment_count"] > 0
    # The old version's segments stay (history), both tracks' of the same length.
    assert scalar(engine, "SELECT count(*) FROM segments WHERE embedder_version = 'old'") == (
        2 * fresh
    )
    assert (after["status"], after["embedder_version"]) == ("indexed", current.version)
    assert queue() == 0

    # Once no release reads the old version, its segments go from the re-embedded track; the
    # withdrawn one was not re-embedded and keeps its only segments.
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        assert cli.main(["prune-segments", "--dry-run"]) == 0
        said = capsys.readouterr().out
        assert f"{fresh} segments of other embedders or versions would be deleted from 1 " in said
        assert "1 tracks have only other versions' segments" in said
        assert scalar(engine, "SELECT count(*) FROM segments WHERE embedder_version = 'old'") == (
            2 * fresh
        )
        assert cli.main(["prune-segments"]) == 0
        assert f"{fresh} segments of other embedders or versions deleted" in capsys.readouterr().out
        assert cli.main(["prune-segments"]) == 0
        assert "0 segments" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:
        counts = conn.execute(
            sa.text("SELECT track_id::text, count(*) FROM segments GROUP BY track_id")
        )
        by_track = dict(counts.all())
    assert by_track == {kept["id"]: fresh, gone["id"]: fresh}
    assert scalar(engine, "SELECT count(*) FROM segments WHERE embedder_version = 'old'") == fresh


def test_a_worker_that_stops_by_itself_is_started_again() -> None:
    """procrastinate stops a worker whose LISTEN connection broke (a database restart); the
    supervisor starts it again, and only cancelling stops it for good."""

    from app.worker import work_supervised

    class StopsOnceThenRuns:
        runs = 0

        async def run_worker_async(self, **_: Any) -> None:
            self.runs += 1
            if self.runs == 1:
                return  # as procrastinate does when a side task fails
            await asyncio.sleep(3600)

    job_app = StopsOnceThenRuns()

    async def scenario() -> bool:
        task = asyncio.create_task(
            work_supervised(job_app, None, restart_after=0.01)  # type: ignore[arg-type]
        )
        for _ in range(200):
            if job_app.runs == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(scenario()) is True
    assert job_app.runs == 2
