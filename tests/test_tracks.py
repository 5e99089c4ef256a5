"""Track upload and ingestion: decode, embed, store segments; every bad input handled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.config import Settings
from app.embedding import get_embedder
from app.main import create_app
from tests.audio_synth import write_audio
from tests.factories import Tenant, Tenants, audio_file, run_jobs, scalar, upload


@pytest.fixture
def label(tenants: Tenants) -> Tenant:
    return tenants.label()


@pytest.fixture
def catalogue(tenants: Tenants, label: Tenant) -> dict[str, Any]:
    return tenants.catalogue(label)


def test_upload_is_accepted_pending_then_indexed_by_a_worker(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    path = audio_file(tmp_path, seed=1, seconds=12.0, fmt="FLAC")
    response = upload(client, label, catalogue["id"], path, title="Fugue", isrc="US-RC1-76-07839")
    assert response.status_code == 202, response.text
    track = response.json()
    assert track["status"] == "pending"
    assert track["isrc"] == "USRC17607839"
    assert track["audio_format"] == "flac"
    assert track["duration_s"] == pytest.approx(12.0, abs=0.01)
    # The job was enqueued with the track, in the same transaction.
    assert scalar(engine, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 1
    # The original is kept, content-addressed.
    blob = settings.blob_dir / track["audio_sha256"][:2] / track["audio_sha256"][2:4]
    assert (blob / track["audio_sha256"]).read_bytes() == path.read_bytes()

    run_jobs(settings, engine)

    done = client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    embedder = get_embedder(settings.embedder)
    assert done["status"] == "indexed", done
    assert done["error"] is None
    assert (done["embedder"], done["embedder_version"]) == (embedder.name, embedder.version)
    # One window per hop that fits whole inside the 12 s.
    assert done["segment_count"] == int((12.0 - embedder.window_s) // embedder.hop_s) + 1
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT start_s, duration_s, embedder, embedder_version, vector "
                "FROM segments WHERE track_id = :t ORDER BY start_s"
            ),
            {"t": track["id"]},
        ).all()
    assert len(rows) == done["segment_count"]
    assert {(r.embedder, r.embedder_version) for r in rows} == {(embedder.name, embedder.version)}
    vectors = np.stack([np.frombuffer(r.vector, dtype="<f4") for r in rows])
    assert vectors.shape == (len(rows), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert rows[0].start_s == 0.0
    assert all(r.duration_s == pytest.approx(embedder.window_s) for r in rows)

    counts = client.get(f"/v1/catalogues/{catalogue['id']}", headers=label.headers).json()
    assert counts["track_counts"] == {"pending": 0, "indexed": 1, "failed": 0, "withdrawn": 0}


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_every_supported_format_is_indexed(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    fmt: str,
) -> None:
    path = audio_file(tmp_path, seed=2, seconds=6.0, sr=44100, fmt=fmt)  # type: ignore[arg-type]
    response = upload(client, label, catalogue["id"], path)
    assert response.status_code == 202, response.text
    run_jobs(settings, engine)
    track = client.get(f"/v1/tracks/{response.json()['id']}", headers=label.headers).json()
    assert track["status"] == "indexed", track["error"]
    assert track["audio_format"] == fmt.lower()


def test_short_track_of_two_seconds_is_indexed(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    path = audio_file(tmp_path, seed=3, seconds=2.5)
    track_id = upload(client, label, catalogue["id"], path).json()["id"]
    run_jobs(settings, engine)
    track = client.get(f"/v1/tracks/{track_id}", headers=label.headers).json()
    assert track["status"] == "indexed", track["error"]
    assert track["segment_count"] == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda d: _write(d / "empty.wav", b""), "empty", "empty"),
        (
            lambda d: _write(d / "notes.txt", b"these are liner notes, not audio" * 50),
            "not_audio",
            "not a readable audio file",
        ),
        (
            lambda d: _write(d / "fake.mp3", b"\xff\xfb" + bytes(range(256)) * 40),
            "not_audio",
            "not a readable audio file",
        ),
        (lambda d: audio_file(d, seconds=1.0), "too_short", "at least 2 s"),
        (
            lambda d: _aiff(d / "track.aiff"),
            "unsupported_format",
            "unsupported audio format AIFF",
        ),
        (
            lambda d: _cut_to_header(audio_file(d, seconds=8.0, fmt="WAV")),
            "truncated",
            "no audio frames",
        ),
    ],
    ids=["empty", "text", "fake-mp3", "too-short", "aiff", "header-only-wav"],
)
def test_bad_files_are_refused_on_upload_with_a_clear_reason(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    engine: Engine,
    tmp_path: Path,
    make: Any,
    reason: str,
    words: str,
) -> None:
    response = upload(client, label, catalogue["id"], make(tmp_path))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["reason"] == reason
    assert words in error["message"]
    assert scalar(engine, "SELECT count(*) FROM tracks") == 0
    assert scalar(engine, "SELECT count(*) FROM procrastinate_jobs") == 0


def _aiff(path: Path) -> Path:
    import soundfile as sf

    sf.write(str(path), np.zeros(44100 * 3, dtype=np.float32) + 0.1, 44100, format="AIFF")
    return path


def test_too_long_audio_is_refused(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    strict = settings.model_copy(update={"max_audio_seconds": 5.0})
    with TestClient(create_app(strict)) as client:
        tenants = Tenants(client, engine)
        label = tenants.label()
        catalogue = tenants.catalogue(label)
        response = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=8.0))
    assert response.status_code == 422
    assert response.json()["error"]["details"]["reason"] == "too_long"
    assert "at most 5 s" in response.json()["error"]["message"]


def test_oversized_upload_is_413_before_the_body_is_read(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 100_000})
    path = audio_file(tmp_path, seconds=10.0)  # ~440 kB of WAV
    with TestClient(create_app(small)) as client:
        label = Tenants(client, engine).label()
        catalogue = Tenants(client, engine).catalogue(label)
        declared = upload(client, label, catalogue["id"], path)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Any:  # no Content-Length: counted while streaming
            yield b"x" * 300_000

        streamed = client.post(
            f"/v1/catalogues/{catalogue['id']}/tracks",
            content=chunks(),
            headers={**label.headers, "Content-Type": "multipart/form-data; boundary=abc"},
        )
        assert streamed.status_code == 413
    assert not list((settings.blob_dir).glob("??/??/*"))


def test_file_over_the_limit_inside_a_small_request_is_413(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    """The limit on the file itself holds even when framing makes the request look small."""
    tight = settings.model_copy(update={"max_upload_bytes": 200_000})
    path = audio_file(tmp_path, seconds=4.9)  # ~216 kB of WAV: over the file limit, under
    # the request limit (file limit + 64 kB of allowance for multipart framing)
    with TestClient(create_app(tight)) as client:
        label = Tenants(client, engine).label()
        catalogue = Tenants(client, engine).catalogue(label)
        response = upload(client, label, catalogue["id"], path)
    assert response.status_code == 413
    assert "200000 bytes" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: _silent(d / "silence.flac"), "silent"),
        (lambda d: _corrupt(audio_file(d, seconds=8.0, fmt="FLAC")), "corrupt"),
        (lambda d: _cut_in_half(audio_file(d, seconds=8.0, fmt="MP3")), "truncated"),
    ],
    ids=["silence", "corrupt-flac", "truncated-mp3"],
)
def test_problems_only_decoding_shows_mark_the_track_failed(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    make: Any,
    words: str,
) -> None:
    response = upload(client, label, catalogue["id"], make(tmp_path))
    assert response.status_code == 202, response.text
    run_jobs(settings, engine)
    track = client.get(f"/v1/tracks/{response.json()['id']}", headers=label.headers).json()
    assert track["status"] == "failed"
    assert words in track["error"]
    assert track["segment_count"] == 0
    assert scalar(engine, "SELECT count(*) FROM segments") == 0
    assert (
        scalar(engine, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'") == 0
    )


def _silent(path: Path) -> Path:
    write_audio(path, np.zeros(22050 * 5, dtype=np.float32), 22050, "FLAC")
    return path


def _corrupt(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    path.write_bytes(bytes(data))
    return path


def _cut_to_header(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:44])  # the RIFF header of a 16-bit PCM WAV
    return path


def _cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_same_audio_twice_in_a_catalogue_is_409_naming_the_track(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    tenants: Tenants,
    tmp_path: Path,
) -> None:
    path = audio_file(tmp_path, seed=4, seconds=4.0)
    first = upload(client, label, catalogue["id"], path).json()
    again = upload(client, label, catalogue["id"], path, title="Renamed copy")
    assert again.status_code == 409
    assert again.json()["error"]["details"]["existing_track_id"] == first["id"]
    assert first["id"] in again.json()["error"]["message"]
    # Another catalogue may hold the same recording.
    other = tenants.catalogue(label)
    assert upload(client, label, other["id"], path).status_code == 202
    # After withdrawal, the audio may be uploaded again.
    client.delete(f"/v1/tracks/{first['id']}", headers=label.headers)
    assert upload(client, label, catalogue["id"], path).status_code == 202


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": ""}, "body.title"),
        ({"isrc": "not-an-isrc"}, "body.isrc"),
        ({"external_id": "x" * 201}, "body.external_id"),
        ({"mood": "sad"}, "body.mood"),
    ],
)
def test_bad_metadata_is_422_naming_the_field(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    tmp_path: Path,
    fields: dict[str, str],
    field: str,
) -> None:
    response = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=3.0), **fields)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


def test_missing_file_is_422(client: TestClient, label: Tenant, catalogue: dict[str, Any]) -> None:
    response = client.post(
        f"/v1/catalogues/{catalogue['id']}/tracks",
        data={"title": "t", "artist": "a"},
        headers=label.headers,
    )
    assert response.status_code == 422
    assert "body.file" in [d["field"] for d in response.json()["error"]["details"]]


def test_other_label_cannot_upload_to_or_see_a_catalogue(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    tenants: Tenants,
    tmp_path: Path,
) -> None:
    path = audio_file(tmp_path, seconds=3.0)
    track = upload(client, label, catalogue["id"], path).json()
    other = tenants.label()
    assert upload(client, other, catalogue["id"], path).status_code == 404
    assert client.get(f"/v1/tracks/{track['id']}", headers=other.headers).status_code == 404
    assert client.delete(f"/v1/tracks/{track['id']}", headers=other.headers).status_code == 404
    listing = client.get(f"/v1/catalogues/{catalogue['id']}/tracks", headers=other.headers)
    assert listing.status_code == 404


def test_withdrawal_keeps_the_track_and_its_segments(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    track = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=6.0)).json()
    run_jobs(settings, engine)
    segments = scalar(engine, "SELECT count(*) FROM segments")
    withdrawn = client.delete(f"/v1/tracks/{track['id']}", headers=label.headers)
    assert withdrawn.status_code == 200
    assert withdrawn.json()["withdrawn_at"] is not None
    again = client.delete(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    assert again["withdrawn_at"] == withdrawn.json()["withdrawn_at"]
    assert scalar(engine, "SELECT count(*) FROM segments") == segments
    assert (
        client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()["status"] == "indexed"
    )
    counts = client.get(f"/v1/catalogues/{catalogue['id']}", headers=label.headers).json()
    assert counts["track_counts"]["withdrawn"] == 1


def test_withdrawn_pending_track_is_not_ingested(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    track = upload(client, label, catalogue["id"], audio_file(tmp_path, seconds=4.0)).json()
    withdrawn = client.delete(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    # It does not stay pending forever: its job will skip it.
    assert withdrawn["status"] == "failed"
    assert "withdrawn before ingestion finished" in withdrawn["error"]
    run_jobs(settings, engine)
    assert scalar(engine, "SELECT count(*) FROM segments") == 0
    after = client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    assert after["status"] == "failed"
    counts = client.get(f"/v1/catalogues/{catalogue['id']}", headers=label.headers).json()
    assert counts["track_counts"]["pending"] == 0


def test_track_list_is_paginated_and_filtered(
    client: TestClient,
    label: Tenant,
    catalogue: dict[str, Any],
    tmp_path: Path,
) -> None:
    ids = [
        upload(
            client,
            label,
            catalogue["id"],
            audio_file(tmp_path, seed=s, seconds=2.5),
            external_id=f"cat-{s}",
        ).json()["id"]
        for s in range(5)
    ]
    url = f"/v1/catalogues/{catalogue['id']}/tracks"
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(url, params=params, headers=label.headers).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first
    by_external = client.get(url, params={"external_id": "cat-3"}, headers=label.headers).json()
    assert [t["id"] for t in by_external["items"]] == [ids[3]]
    pending = client.get(url, params={"status": "pending"}, headers=label.headers).json()
    assert len(pending["items"]) == 5
    bad = client.get(url, params={"status": "lost"}, headers=label.headers)
    assert bad.status_code == 422
