"""Importing a DDEX ERN delivery into a catalogue: tracks created or updated by ISRC.

Each SoundRecording is matched by ISRC against the catalogue's live tracks:

* no track has the ISRC: the audio goes through the same checks and store as an upload, and a
  new track is registered (`created`);
* a track has it with the same audio: its title and artist follow the message (`updated`, or
  `unchanged` when they already did);
* a track has it with other audio: the new master replaces it; the old track is withdrawn,
  keeping its history, and a new one registered (`replaced`).

Audio a recording cannot use (refused by the header checks, a hash that does not match, a
duration far from the declared one, audio the catalogue holds under another ISRC) fails that
recording alone, with the reason; the others go on. Re-running a delivery changes nothing.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.audio.decode import probe
from app.blobs import BlobStore, StagedFile
from app.catalogues import tracks
from app.catalogues.models import Catalogue, Track
from app.config import Settings
from app.errors import AppError, PayloadTooLarge, Unprocessable
from app.rights.ddex import Message, MessageRefused, Problem, Recording

FILE_FIELD = "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI"
MAX_PACKAGE_ENTRIES = 20_000


class Status(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    reference: str
    isrc: str
    status: Status
    track_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Metadata:
    """A recording's metadata in the shape `tracks.register` takes."""

    title: str
    artist: str
    isrc: str | None
    external_id: str | None = None


class MessageFiles(Protocol):
    """The files a message refers to, by their normalised relative path."""

    def exists(self, uri: str) -> bool: ...
    def open(self, uri: str) -> BinaryIO: ...


class FolderFiles:
    """Files beside a message on disk (the command line)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def _path(self, uri: str) -> Path:
        path = (self.folder / uri).resolve()
        # `relative_uri` already refuses `..`; a symlink pointing out is refused here.
        if not path.is_relative_to(self.folder):
            raise FileNotFoundError(uri)
        return path

    def exists(self, uri: str) -> bool:
        try:
            return self._path(uri).is_file()
        except FileNotFoundError:
            return False

    def open(self, uri: str) -> BinaryIO:
        return self._path(uri).open("rb")


class PackageFiles:
    """Files in a zip package, relative to the message's folder inside it."""

    def __init__(self, package: zipfile.ZipFile, base: str) -> None:
        self.package = package
        self.base = base
        self.names = {info.filename for info in package.infolist() if not info.is_dir()}

    def _name(self, uri: str) -> str:
        return posixpath.join(self.base, uri) if self.base else uri

    def exists(self, uri: str) -> bool:
        return self._name(uri) in self.names

    def open(self, uri: str) -> BinaryIO:
        return cast(BinaryIO, self.package.open(self._name(uri)))


def open_package(package: zipfile.ZipFile) -> tuple[bytes, PackageFiles]:
    """The one ERN message in a zip package and the files beside it."""
    entries = package.infolist()
    if len(entries) > MAX_PACKAGE_ENTRIES:
        raise _package_error(f"holds more than {MAX_PACKAGE_ENTRIES} entries")
    messages = [
        e.filename
        for e in entries
        if e.filename.lower().endswith(".xml")
        and not posixpath.basename(e.filename).startswith("BatchComplete")
        and not e.is_dir()
    ]
    if len(messages) != 1:
        raise _package_error(
            f"must hold exactly one ERN message (.xml), holds {len(messages)}: "
            + ", ".join(sorted(messages)[:5])
        )
    with package.open(messages[0]) as f:
        data = f.read(64 * 1024 * 1024 + 1)
    return data, PackageFiles(package, posixpath.dirname(messages[0]))


def _package_error(message: str) -> Unprocessable:
    return Unprocessable(
        f"the package {message}", details=[{"field": "body.package", "message": message}]
    )


def check_files(message: Message, files: MessageFiles) -> None:
    """Refuse the message when a file it refers to is not there."""
    missing = [
        Problem(f"SoundRecording {r.reference}", FILE_FIELD, f"{r.uri}: no such file")
        for r in message.recordings
        if not files.exists(r.uri)
    ]
    if missing:
        raise MessageRefused(missing)


@dataclass(slots=True)
class Importer:
    """Imports one message into one catalogue, in the caller's transaction."""

    session: Session
    catalogue: Catalogue
    blobs: BlobStore
    settings: Settings
    outcomes: list[Outcome] = field(default_factory=list)

    def run(self, message: Message, files: MessageFiles) -> list[Outcome]:
        check_files(message, files)
        live = self._live_by_isrc([r.isrc for r in message.recordings])
        for recording in message.recordings:
            self.outcomes.append(self._one(recording, live.get(recording.isrc, []), files))
        return self.outcomes

    def _live_by_isrc(self, isrcs: list[str]) -> dict[str, list[Track]]:
        found: dict[str, list[Track]] = {}
        stmt = sa.select(Track).where(
            Track.catalogue_id == self.catalogue.id,
            Track.withdrawn_at.is_(None),
            Track.isrc.in_(isrcs),
        )
        for track in self.session.scalars(stmt):
            found.setdefault(track.isrc or "", []).append(track)
        return found

    def _one(self, recording: Recording, live: list[Track], files: MessageFiles) -> Outcome:
        def failed(reason: str) -> Outcome:
            return Outcome(recording.reference, recording.isrc, Status.FAILED, reason=reason)

        if len(live) > 1:
            ids = ", ".join(str(t.id) for t in live)
            return failed(f"several live tracks of the catalogue have this ISRC: {ids}")
        current = live[0] if live else None
        try:
            return self._store(recording, current, files)
        except PayloadTooLarge as exc:
            return failed(f"{recording.uri}: {exc.message}")
        except (zipfile.BadZipFile, OSError) as exc:
            return failed(f"{recording.uri}: cannot be read ({exc})")

    def _store(self, recording: Recording, current: Track | None, files: MessageFiles) -> Outcome:
        def failed(reason: str) -> Outcome:
            return Outcome(recording.reference, recording.isrc, Status.FAILED, reason=reason)

        with self._staged(files, recording.uri) as staged:
            if not _hash_matches(staged.path, recording):
                return failed(f"{recording.uri}: the file does not match its HashSum")
            if current is not None and current.audio_sha256 == staged.sha256:
                return self._update(recording, current)
            holder = tracks.find_active_by_hash(self.session, self.catalogue.id, staged.sha256)
            if holder is not None:
                return failed(
                    f"this audio is already in the catalogue as track {holder.id} "
                    f"(ISRC {holder.isrc or 'none'})"
                )
            try:
                info = probe(
                    staged.path,
                    min_seconds=self.settings.min_audio_seconds,
                    max_seconds=self.settings.max_audio_seconds,
                )
            except AppError as exc:
                return failed(f"{recording.uri}: {exc.message}")
            tolerance = max(1.0, 0.02 * recording.duration_s)
            if abs(info.duration_s - recording.duration_s) > tolerance:
                return failed(
                    f"{recording.uri} lasts {info.duration_s:.1f} s; the message says "
                    f"{recording.duration_s:.1f} s"
                )
            self.blobs.commit(staged)
            if current is not None:
                tracks.withdraw(self.session, current)
            metadata = Metadata(recording.title, recording.artist, recording.isrc)
            track = tracks.register(self.session, self.catalogue, metadata, staged, info)
        status = Status.CREATED if current is None else Status.REPLACED
        return Outcome(recording.reference, recording.isrc, status, track_id=str(track.id))

    def _update(self, recording: Recording, track: Track) -> Outcome:
        changed = (track.title, track.artist) != (recording.title, recording.artist)
        if changed:
            track.title, track.artist = recording.title, recording.artist
            self.session.flush()
        status = Status.UPDATED if changed else Status.UNCHANGED
        return Outcome(recording.reference, recording.isrc, status, track_id=str(track.id))

    @contextmanager
    def _staged(self, files: MessageFiles, uri: str) -> Iterator[StagedFile]:
        with (
            files.open(uri) as source,
            self.blobs.stage(source, max_bytes=self.settings.max_upload_bytes) as staged,
        ):
            yield staged


def _hash_matches(path: Path, recording: Recording) -> bool:
    if recording.hash_algorithm is None:
        return True
    digest = hashlib.new(recording.hash_algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest() == recording.hash_value


def import_message(
    session: Session,
    catalogue: Catalogue,
    message: Message,
    files: MessageFiles,
    *,
    blobs: BlobStore,
    settings: Settings,
) -> list[Outcome]:
    """Import every SoundRecording of a parsed message; the caller's transaction commits."""
    return Importer(session, catalogue, blobs, settings).run(message, files)


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    tally = dict.fromkeys((s.value for s in Status), 0)
    for outcome in outcomes:
        tally[outcome.status.value] += 1
    return tally
