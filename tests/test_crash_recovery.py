"""What a crash leaves behind is cleaned up: claims of dead processes, staging files."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.boot import Boot
from app.checks import service as check_service
from app.config import Settings
from app.db import make_sessionmaker
from app.main import create_app
from tests.factories import scalar, submit_check
from tests.worlds import Music, excerpt

DEAD_BOOT = 1_234_567  # no process holds its lock


def _claim(engine: Engine, company: Any, path: Path, key: str, boot_id: int | None) -> None:
    check_service.claim_key(
        make_sessionmaker(engine),
        ai_company_id=company.id,
        key=key,
        request_hash=check_service.fingerprint(
            audio_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            generation_id=None,
            model=None,
            metadata={},
        ),
        lock_seconds=300,
        boot_id=boot_id,
    )


def test_a_claim_whose_process_died_is_taken_over_at_once(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    _claim(engine, world["company"], path, "orphan", DEAD_BOOT)
    retried = submit_check(client, world["company"], path, key="orphan")
    assert retried.status_code == 201, retried.text
    assert scalar(engine, "SELECT count(*) FROM ledger_transactions") == 1


def test_a_claim_of_a_live_process_is_409_until_that_process_is_gone(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    other_process = Boot(engine, boot_id=DEAD_BOOT + 1)
    other_process.hold()
    try:
        _claim(engine, world["company"], path, "busy", other_process.id)
        busy = submit_check(client, world["company"], path, key="busy")
        assert busy.status_code == 409
        assert busy.json()["error"]["details"]["reason"] == "in_flight"
    finally:
        other_process.release()
    assert submit_check(client, world["company"], path, key="busy").status_code == 201


def test_a_restart_frees_dead_claims_and_sweeps_stale_staging_files(
    client: TestClient,
    world: dict[str, Any],
    music: Music,
    engine: Engine,
    settings: Settings,
) -> None:
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    _claim(engine, world["company"], path, "dead", DEAD_BOOT)
    _claim(engine, world["company"], path, "legacy", None)  # no boot: the lock time applies
    staging = settings.blob_dir / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    stale, fresh = staging / "upload-stale", staging / "upload-fresh"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in progress")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    with TestClient(create_app(settings)):
        pass

    keys = scalar(engine, "SELECT string_agg(key, ',' ORDER BY key) FROM idempotency_keys")
    assert keys == "legacy"
    assert not stale.exists()
    assert fresh.exists()


def test_boot_liveness_follows_the_lock(engine: Engine) -> None:
    import sqlalchemy as sa

    from app.boot import live

    process = Boot(engine)
    process.hold()
    with engine.connect() as conn:
        assert conn.scalar(sa.select(live(sa.literal(process.id)))) is True
        process.release()
        assert conn.scalar(sa.select(live(sa.literal(process.id)))) is False


def test_a_claim_this_process_failed_to_give_back_is_taken_over(
    client: TestClient, world: dict[str, Any], music: Music, engine: Engine
) -> None:
    """When the database drops mid-check, the attempt cannot release its claim; the retry,
    once the database is back, must not wait out the lock time."""
    path = music.write("query-11", lambda: excerpt(11, 2.0, 12.0))
    own_boot = client.app.state.check_flow.boot_id  # type: ignore[attr-defined]
    _claim(engine, world["company"], path, "left-behind", own_boot)
    retried = submit_check(client, world["company"], path, key="left-behind")
    assert retried.status_code == 201, retried.text
