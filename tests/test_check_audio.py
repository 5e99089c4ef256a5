"""A check's audio is kept for its evidence: who may hear it, byte ranges, retention."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.blobs import BlobStore
from app.checks import service as checks
from app.config import Settings
from app.db import make_sessionmaker
from app.main import create_app
from tests.factories import ManualClock, run_scheduled, submit_check
from tests.worlds import Music, build_world, excerpt


def _check(client: TestClient, world: dict[str, Any], music: Music) -> tuple[str, bytes]:
    path = music.write("audio-kept-11", lambda: excerpt(11, 3.0, 10.0))
    response = submit_check(client, world["company"], path)
    assert response.status_code == 201, response.text
    assert any(m["is_use"] for m in response.json()["matches"])
    return response.json()["id"], path.read_bytes()


def test_the_checks_audio_is_kept_and_heard_by_its_company_its_labels_and_auditors(
    client: TestClient, world: dict[str, Any], music: Music, tenants: Any
) -> None:
    check_id, sent = _check(client, world, music)
    url = f"/v1/checks/{check_id}/audio"
    for reader in (world["company"], world["label"], tenants.auditor()):
        whole = client.get(url, headers=reader.headers)
        assert whole.status_code == 200, whole.text
        assert whole.content == sent
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
    for stranger in (tenants.label(), tenants.ai_company()):
        assert client.get(url, headers=stranger.headers).status_code == 404


def test_audio_is_served_in_byte_ranges(
    client: TestClient, world: dict[str, Any], music: Music
) -> None:
    check_id, sent = _check(client, world, music)
    part = client.get(
        f"/v1/checks/{check_id}/audio",
        headers=world["label"].headers | {"Range": "bytes=1000-1999"},
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(sent)}"
    assert part.content == sent[1000:2000]
    track = client.get(
        f"/v1/tracks/{world['tracks'][11]}/audio",
        headers=world["label"].headers | {"Range": "bytes=-10"},
    )
    assert track.status_code == 206
    assert len(track.content) == 10
    beyond = client.get(
        f"/v1/checks/{check_id}/audio",
        headers=world["label"].headers | {"Range": f"bytes={len(sent) + 10}-"},
    )
    assert beyond.status_code == 416


def test_audio_past_retention_is_gone_and_the_daily_task_removes_it(
    settings: Settings, engine: Engine, tenants: Any, music: Music
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings.model_copy(update={"check_audio_retention_days": 7})
    with TestClient(create_app(settings, clock=clock)) as client:
        world = build_world(client, tenants.__class__(client, engine), settings, engine, music)
        check_id, sent = _check(client, world, music)
        blob = BlobStore(settings.blob_dir).path(hashlib.sha256(sent).hexdigest())
        assert blob.is_file()
        clock.advance(days=6)
        run_scheduled(settings, engine, "forget_check_audio", clock=clock)
        assert blob.is_file()
        url = f"/v1/checks/{check_id}/audio"
        assert client.get(url, headers=world["company"].headers).status_code == 200
        clock.advance(days=2)
        gone = client.get(url, headers=world["company"].headers)
        assert gone.status_code == 410
        assert gone.json()["error"]["details"]["retention_days"] == 7
        run_scheduled(settings, engine, "forget_check_audio", clock=clock)
        assert not blob.exists()
        # The record of the check stays: only the audio is forgotten.
        assert client.get(f"/v1/checks/{check_id}", headers=world["company"].headers).is_success


def test_audio_shared_with_a_younger_check_or_a_track_is_kept(
    settings: Settings, engine: Engine, tenants: Any, music: Music
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings.model_copy(update={"check_audio_retention_days": 7})
    with TestClient(create_app(settings, clock=clock)) as client:
        world = build_world(client, tenants.__class__(client, engine), settings, engine, music)
        company = world["company"]
        old_id, sent = _check(client, world, music)
        as_track = submit_check(client, company, music.track(12))  # a track's very bytes
        assert as_track.status_code == 201
        clock.advance(days=8)
        young_id, _ = _check(client, world, music)  # the same piece again, later
        run_scheduled(settings, engine, "forget_check_audio", clock=clock)
        blobs = BlobStore(settings.blob_dir)
        assert blobs.path(hashlib.sha256(sent).hexdigest()).is_file()
        assert blobs.path(hashlib.sha256(music.track(12).read_bytes()).hexdigest()).is_file()
        # By date the old check's audio is gone, though its bytes live on for the young one.
        assert client.get(f"/v1/checks/{old_id}/audio", headers=company.headers).status_code == 410
        assert client.get(f"/v1/checks/{young_id}/audio", headers=company.headers).is_success
        removed = checks.forget_expired_audio(
            make_sessionmaker(engine), blobs, retention_days=7, now=clock()
        )
        assert removed == 0


def test_no_retention_keeps_no_audio(
    settings: Settings, engine: Engine, tenants: Any, music: Music
) -> None:
    settings = settings.model_copy(update={"check_audio_retention_days": 0})
    with TestClient(create_app(settings)) as client:
        world = build_world(client, tenants.__class__(client, engine), settings, engine, music)
        check_id, sent = _check(client, world, music)
        assert not BlobStore(settings.blob_dir).path(hashlib.sha256(sent).hexdigest()).exists()
        answer = client.get(f"/v1/checks/{check_id}/audio", headers=world["company"].headers)
        assert answer.status_code == 410
