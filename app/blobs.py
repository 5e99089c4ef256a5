"""Content-addressed storage for original audio files under the data directory.

A blob's name is the SHA-256 of its bytes, so storing the same file twice costs nothing and
the catalogue can be re-embedded from the originals whenever the embedder changes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import payload_too_large

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StagedFile:
    """An upload copied to local disk, hashed and measured, not yet in the store."""

    path: Path
    sha256: str
    size: int


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "staging"

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    @contextmanager
    def stage(self, source: BinaryIO, *, max_bytes: int) -> Iterator[StagedFile]:
        """Copy `source` to a staging file while hashing it; the file is removed on exit
        unless `commit` moved it into the store."""
        self.staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.staging, prefix="upload-")
        path = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise payload_too_large(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
            yield StagedFile(path=path, sha256=digest.hexdigest(), size=size)
        finally:
            path.unlink(missing_ok=True)

    def sweep_staging(self, *, older_than: float) -> int:
        """Remove staging files untouched for `older_than` seconds (left by a process that
        died mid-upload; live uploads are younger); returns how many."""
        if not self.staging.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for path in self.staging.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another process swept it first
        return removed

    def commit(self, staged: StagedFile) -> Path:
        """Move a staged file into the store (atomic; a no-op if the blob already exists)."""
        final = self.path(staged.sha256)
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        return final


AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


def sniff_audio_type(path: Path) -> str:
    """The media type of a stored audio file, from its first bytes (blobs keep no name)."""
    with path.open("rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return AUDIO_TYPES["wav"]
    if head[:4] == b"fLaC":
        return AUDIO_TYPES["flac"]
    if head[:4] == b"OggS":
        return AUDIO_TYPES["ogg"]
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return AUDIO_TYPES["mp3"]
    return "application/octet-stream"
