"""DDEX ERN 4.x delivery: tracks created or updated by ISRC, audio uploaded, each resource
reported; bad messages refused naming the resource and field; entity attacks refused."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app import cli
from app.config import Settings, get_settings
from app.rights import ddex
from tests.ddex_messages import (
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    ern_message,
    package,
    write_sounds,
)
from tests.factories import Tenant, Tenants, scalar


def _send(client: TestClient, label: Tenant, catalogue_id: str, body: bytes) -> Any:
    return client.post(
        f"/v1/catalogues/{catalogue_id}/ddex",
        files={"package": ("delivery.zip", body, "application/zip")},
        headers=label.headers,
    )


def _tracks(client: TestClient, label: Tenant, catalogue_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = client.get(
            f"/v1/catalogues/{catalogue_id}/tracks", params=params, headers=label.headers
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
def shelf(tenants: Tenants) -> dict[str, Any]:
    label = tenants.label()
    return {"label": label, "catalogue": tenants.catalogue(label)}


@pytest.mark.slow
def test_a_200_recording_delivery_round_trips_and_a_second_run_changes_nothing(
    client: TestClient, shelf: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    label, catalogue_id = shelf["label"], shelf["catalogue"]["id"]
    sounds = write_sounds(tmp_path, 200)
    body = package(tmp_path, ern_message(sounds))

    first = _send(client, label, catalogue_id, body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["message_id"] == "MSG-1"
    assert result["counts"] == {
        "created": 200,
        "updated": 0,
        "replaced": 0,
        "unchanged": 0,
        "failed": 0,
    }
    assert [r["resource_reference"] for r in result["resources"]] == [s.reference for s in sounds]
    stored = {t["isrc"]: t for t in _tracks(client, label, catalogue_id)}
    assert len(stored) == 200
    for sound, resource in zip(sounds, result["resources"], strict=True):
        track = stored[sound.isrc]
        assert track["id"] == resource["track_id"]
        assert (track["title"], track["artist"]) == (sound.title, sound.artist)
        assert track["duration_s"] == pytest.approx(2.5, abs=0.01)
        assert track["audio_sha256"] == sound.hash_sha256
        assert track["status"] == "pending"  # ingestion was queued, as for an upload
    jobs = scalar(engine, "SELECT count(*) FROM procrastinate_jobs")
    assert jobs == 200

    again = _send(client, label, catalogue_id, body).json()
    assert again["counts"]["unchanged"] == 200
    assert [r["track_id"] for r in again["resources"]] == [
        r["track_id"] for r in result["resources"]
    ]
    assert scalar(engine, "SELECT count(*) FROM tracks") == 200
    assert scalar(engine, "SELECT count(*) FROM procrastinate_jobs") == jobs


def test_a_redelivery_updates_metadata_and_replaces_new_masters(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path
) -> None:
    label, catalogue_id = shelf["label"], shelf["catalogue"]["id"]
    sounds = write_sounds(tmp_path / "v1", 3)
    first = _send(client, label, catalogue_id, package(tmp_path / "v1", ern_message(sounds)))
    before = {r["isrc"]: r["track_id"] for r in first.json()["resources"]}

    remastered = write_sounds(tmp_path / "v2", 3, first_seed=50)
    sounds[0].title = "Renamed"
    sounds[1].uri, sounds[1].hash_sha256 = remastered[1].uri, remastered[1].hash_sha256
    # The second delivery's folder holds the new master at the first one's path.
    (tmp_path / "v1" / "resources" / "A2.wav").write_bytes(
        (tmp_path / "v2" / "resources" / "A2.wav").read_bytes()
    )
    result = _send(client, label, catalogue_id, package(tmp_path / "v1", ern_message(sounds)))
    statuses = {r["isrc"]: r for r in result.json()["resources"]}
    assert statuses[sounds[0].isrc]["status"] == "updated"
    assert statuses[sounds[0].isrc]["track_id"] == before[sounds[0].isrc]
    assert statuses[sounds[1].isrc]["status"] == "replaced"
    assert statuses[sounds[1].isrc]["track_id"] != before[sounds[1].isrc]
    assert statuses[sounds[2].isrc]["status"] == "unchanged"

    old = client.get(f"/v1/tracks/{before[sounds[1].isrc]}", headers=label.headers).json()
    assert old["withdrawn_at"] is not None
    renamed = client.get(f"/v1/tracks/{before[sounds[0].isrc]}", headers=label.headers).json()
    assert renamed["title"] == "Renamed"


def test_unusable_audio_fails_its_recording_alone_with_the_reason(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path
) -> None:
    label, catalogue_id = shelf["label"], shelf["catalogue"]["id"]
    sounds = write_sounds(tmp_path, 5)
    (tmp_path / "resources" / "A2.wav").write_bytes(b"not audio at all" * 64)
    sounds[1].hash_sha256 = None
    sounds[2].hash_sha256 = "0" * 64  # the file is not what the message says
    sounds[3].duration = "PT3M20S"  # the file lasts 2.5 s
    sounds[4].uri = sounds[0].uri  # audio the catalogue already holds under A1's ISRC
    sounds[4].hash_sha256 = sounds[0].hash_sha256
    result = _send(client, label, catalogue_id, package(tmp_path, ern_message(sounds)))
    assert result.status_code == 200, result.text
    resources = result.json()["resources"]
    assert [r["status"] for r in resources] == ["created", "failed", "failed", "failed", "failed"]
    reasons = [r["reason"] for r in resources]
    assert "not a readable audio file" in reasons[1]
    assert "HashSum" in reasons[2]
    assert "200.0 s" in reasons[3]
    assert resources[0]["track_id"] in reasons[4]
    assert len(_tracks(client, label, catalogue_id)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"isrc": None}, "SoundRecordingEdition/ResourceId/ISRC"),
        ({"isrc": "XX-not-isrc"}, "SoundRecordingEdition/ResourceId/ISRC"),
        ({"title": None}, "DisplayTitleText"),
        ({"artist": None}, "DisplayArtistName"),
        ({"duration": "three minutes"}, "Duration"),
        ({"duration": None}, "Duration"),
        ({"uri": None}, "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI"),
        ({"uri": "../outside.wav"}, "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI"),
        ({"uri": "/etc/passwd"}, "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI"),
        (
            {"uri": "https://cdn.example/a.wav"},
            "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI",
        ),
        (
            {"uri": "resources/missing.wav"},
            "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI",
        ),
    ],
)
def test_an_invalid_recording_refuses_the_message_naming_resource_and_field(
    client: TestClient,
    shelf: dict[str, Any],
    tmp_path: Path,
    engine: Engine,
    change: dict[str, Any],
    field: str,
) -> None:
    sounds = write_sounds(tmp_path, 3)
    for key, value in change.items():
        setattr(sounds[1], key, value)
    response = _send(
        client, shelf["label"], shelf["catalogue"]["id"], package(tmp_path, ern_message(sounds))
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"] == [
        {"resource": "SoundRecording A2", "field": field, "message": error["details"][0]["message"]}
    ]
    assert f"SoundRecording A2: {field}" in error["message"]
    assert scalar(engine, "SELECT count(*) FROM tracks") == 0  # nothing of it was imported


def test_every_problem_is_listed_and_duplicates_are_refused(tmp_path: Path) -> None:
    sounds = write_sounds(tmp_path, 3)
    sounds[0].duration = None
    sounds[2].isrc = sounds[1].isrc
    with pytest.raises(ddex.MessageRefused) as refused:
        ddex.parse(ern_message(sounds))
    assert [(d["resource"], d["field"]) for d in refused.value.details] == [
        ("SoundRecording A1", "Duration"),
        ("SoundRecording A3", "SoundRecordingEdition/ResourceId/ISRC"),
    ]


def test_malformed_xml_and_other_messages_are_refused(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path
) -> None:
    label, catalogue_id = shelf["label"], shelf["catalogue"]["id"]
    sounds = write_sounds(tmp_path, 1)
    truncated = ern_message(sounds)[:-40]
    response = _send(client, label, catalogue_id, package(tmp_path, truncated))
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "XML"
    ern_38 = ern_message(sounds, namespace="http://ddex.net/xml/ern/382")
    response = _send(client, label, catalogue_id, package(tmp_path, ern_38))
    assert response.status_code == 422
    assert "ERN 4.x" in response.json()["error"]["message"]
    not_zip = _send(client, label, catalogue_id, b"PK but not really")
    assert not_zip.status_code == 422
    assert not_zip.json()["error"]["details"][0]["field"] == "body.package"


@pytest.mark.parametrize("attack", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["bomb", "xxe"])
def test_entity_attacks_are_refused_before_expansion(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path, attack: bytes
) -> None:
    started = time.perf_counter()
    response = _send(client, shelf["label"], shelf["catalogue"]["id"], package(tmp_path, attack))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"][0]["field"] == "DOCTYPE"
    assert "root:" not in response.text  # nothing of /etc/passwd came back
    # Expanded, the bomb would be 3 GB of text; refused, it costs nothing.
    assert time.perf_counter() - started < 10


def test_namespaced_children_and_party_artists_are_read(tmp_path: Path) -> None:
    sounds = write_sounds(tmp_path, 1)
    sounds[0].artist, sounds[0].artist_party = None, "P1"
    message = ddex.parse(
        ern_message(
            sounds,
            qualified=True,
            parties={"P1": "Anna Berg"},
            namespace="http://ddex.net/xml/ern/42",
        )
    )
    (recording,) = message.recordings
    assert (recording.artist, recording.isrc, recording.duration_s) == (
        "Anna Berg",
        sounds[0].isrc,
        2.5,
    )
    assert recording.uri == "resources/A1.wav"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("PT3M20S", 200.0), ("PT0H1M32.5S", 92.5), ("PT1H", 3600.0), ("P0DT0H0M2S", 2.0)],
)
def test_durations_are_read_from_iso_8601(value: str, seconds: float) -> None:
    assert ddex.parse_duration(value) == seconds


def test_a_package_must_hold_exactly_one_message(
    client: TestClient, shelf: dict[str, Any], tmp_path: Path
) -> None:
    sounds = write_sounds(tmp_path, 1)
    body = package(tmp_path, ern_message(sounds))
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        with zipfile.ZipFile(io.BytesIO(body)) as original:
            for info in original.infolist():
                archive.writestr(info, original.read(info))
        archive.writestr("delivery/MSG-2.xml", ern_message(sounds, message_id="MSG-2"))
    response = _send(
        client, shelf["label"], shelf["catalogue"]["id"], (tmp_path / "two.zip").read_bytes()
    )
    assert response.status_code == 422
    assert "exactly one" in response.json()["error"]["message"]


def test_the_command_imports_a_message_from_disk_and_reruns_idempotently(
    client: TestClient,
    shelf: dict[str, Any],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    label, catalogue_id = shelf["label"], shelf["catalogue"]["id"]
    folder = tmp_path / "delivery"
    sounds = write_sounds(folder, 4)
    isrcs = sorted(s.isrc or "" for s in sounds)
    (folder / "MSG-1.xml").write_bytes(ern_message(sounds))
    assert settings.database_url is not None
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ECHOLEDGER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()

    def run() -> int:
        args = cli.build_parser().parse_args(
            ["import-ddex", str(folder / "MSG-1.xml"), "--catalogue", catalogue_id]
        )
        code: int = args.func(args)
        return code

    try:
        assert run() == 0
        first = capsys.readouterr()
        assert "created 4" in first.err
        assert run() == 0
        assert "unchanged 4" in capsys.readouterr().err
        sounds[0].isrc = "bad"
        (folder / "MSG-1.xml").write_bytes(ern_message(sounds))
        assert run() == 2
        assert "SoundRecording A1: SoundRecordingEdition/ResourceId/ISRC" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    listed = _tracks(client, label, catalogue_id)
    assert sorted(t["isrc"] for t in listed) == isrcs
