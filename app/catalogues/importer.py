"""Bulk import of a folder of audio files into a catalogue, through the HTTP API.

Metadata comes from a CSV file beside the audio (`metadata.csv` in the folder, columns `file`,
`title`, `artist`, optional `isrc` and `external_id`), else from the file's own tags, else from
its name ("Artist - Title.flac"). Re-running skips files the catalogue already holds, so an
interrupted import resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import soundfile as sf

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
METADATA_FILE = "metadata.csv"


@dataclass(frozen=True, slots=True)
class TrackFile:
    path: Path
    title: str
    artist: str
    isrc: str | None = None
    external_id: str | None = None


@dataclass(slots=True)
class ImportReport:
    uploaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def discover(folder: Path, *, default_artist: str) -> list[TrackFile]:
    """The audio files under `folder` (recursively, sorted) with their metadata."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    rows = _csv_rows(folder / METADATA_FILE)
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        relative = path.relative_to(folder).as_posix()
        row = rows.get(relative) or rows.get(path.name)
        found.append(_from_row(path, row) if row else _from_file(path, default_artist))
    return found


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"file", "title", "artist"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} lacks the column(s): {', '.join(sorted(missing))}")
        return {row["file"].strip(): row for row in reader}


def _from_row(path: Path, row: dict[str, str]) -> TrackFile:
    return TrackFile(
        path=path,
        title=row["title"].strip(),
        artist=row["artist"].strip(),
        isrc=(row.get("isrc") or "").strip() or None,
        external_id=(row.get("external_id") or "").strip() or None,
    )


def _from_file(path: Path, default_artist: str) -> TrackFile:
    title, artist = "", ""
    try:
        with sf.SoundFile(str(path)) as f:
            title, artist = (f.title or "").strip(), (f.artist or "").strip()
    except (sf.LibsndfileError, RuntimeError):
        pass  # unreadable files are reported by the server with a precise reason
    if not title and " - " in path.stem:
        artist, title = (part.strip() for part in path.stem.split(" - ", 1))
    return TrackFile(path=path, title=title or path.stem, artist=artist or default_artist)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def import_folder(
    client: httpx.Client,
    catalogue_id: str,
    files: Iterable[TrackFile],
    *,
    jobs: int = 2,
    progress: Callable[[], object] = lambda: None,
) -> ImportReport:
    """Upload every file the catalogue does not hold yet; `client` carries the label's key."""
    report = ImportReport()

    def one(track: TrackFile) -> None:
        try:
            outcome = _upload_one(client, catalogue_id, track)
        except httpx.HTTPError as exc:
            report.failed.append((track.path, f"{type(exc).__name__}: {exc}"))
        else:
            if outcome is None:
                report.uploaded.append(track.path)
            elif outcome == "exists":
                report.skipped.append(track.path)
            else:
                report.failed.append((track.path, outcome))
        progress()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, files))
    return report


def _upload_one(client: httpx.Client, catalogue_id: str, track: TrackFile) -> str | None:
    """None when uploaded, "exists" when already there, else the server's error message."""
    base = f"/v1/catalogues/{catalogue_id}/tracks"
    existing = client.get(
        base, params={"audio_sha256": sha256_of(track.path), "withdrawn": "false", "limit": 1}
    )
    if existing.status_code != 200:
        return _message(existing)
    if existing.json()["items"]:
        return "exists"
    data = {"title": track.title, "artist": track.artist}
    if track.isrc:
        data["isrc"] = track.isrc
    if track.external_id:
        data["external_id"] = track.external_id
    with track.path.open("rb") as f:
        response = client.post(base, data=data, files={"file": (track.path.name, f)})
    if response.status_code == 202:
        return None
    if response.status_code == 409:
        return "exists"
    return _message(response)


def _message(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"
