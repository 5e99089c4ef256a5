"""Bulk import of a folder: metadata from CSV, tags or names; resumable; failures reported."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
from fastapi.testclient import TestClient

from app.catalogues.importer import discover, import_folder
from tests.audio_synth import melody_track
from tests.factories import Tenants, audio_file


def _folder(root: Path) -> Path:
    folder = root / "catalogue"
    (folder / "disc2").mkdir(parents=True)
    audio_file(folder, seed=1, seconds=3.0, name="take1.wav")
    audio_file(folder, seed=2, seconds=3.0, fmt="FLAC", name="Anna Berg - Night Train.flac")
    tagged = folder / "disc2" / "t3.ogg"
    with sf.SoundFile(str(tagged), "w", 22050, 1, format="OGG", subtype="VORBIS") as f:
        f.title, f.artist = "Tagged Title", "Tagged Artist"
        f.write(melody_track(3, seconds=3.0, sr=22050))
    (folder / "broken.mp3").write_bytes(b"not really an mp3" * 100)
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    (folder / "metadata.csv").write_text(
        "file,title,artist,isrc,external_id\ntake1.wav,First Take,Ola Nordmann,NOA1B2300001,A-1\n"
    )
    return folder


def test_metadata_comes_from_csv_then_tags_then_file_names(tmp_path: Path) -> None:
    files = {f.path.name: f for f in discover(_folder(tmp_path), default_artist="Unknown")}
    assert set(files) == {"take1.wav", "Anna Berg - Night Train.flac", "t3.ogg", "broken.mp3"}
    take = files["take1.wav"]
    assert (take.title, take.artist, take.isrc, take.external_id) == (
        "First Take",
        "Ola Nordmann",
        "NOA1B2300001",
        "A-1",
    )
    named = files["Anna Berg - Night Train.flac"]
    assert (named.title, named.artist) == ("Night Train", "Anna Berg")
    assert (files["t3.ogg"].title, files["t3.ogg"].artist) == ("Tagged Title", "Tagged Artist")
    assert (files["broken.mp3"].title, files["broken.mp3"].artist) == ("broken", "Unknown")


def test_import_uploads_reports_failures_and_resumes(
    client: TestClient, tenants: Tenants, tmp_path: Path
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    files = discover(_folder(tmp_path), default_artist="Unknown")
    client.headers.update(label.headers)
    ticks: list[int] = []

    first = import_folder(client, catalogue["id"], files, progress=lambda: ticks.append(1))
    assert len(first.uploaded) == 3
    assert [p.name for p, _ in first.failed] == ["broken.mp3"]
    assert "not a readable audio file" in first.failed[0][1]
    assert len(ticks) == 4

    again = import_folder(client, catalogue["id"], files)
    assert (len(again.uploaded), len(again.skipped), len(again.failed)) == (0, 3, 1)
    listed = client.get(f"/v1/catalogues/{catalogue['id']}/tracks").json()["items"]
    assert sorted(t["title"] for t in listed) == ["First Take", "Night Train", "Tagged Title"]
