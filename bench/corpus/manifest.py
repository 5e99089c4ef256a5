"""The corpus manifest: what every file of a built corpus is, read and written as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 2  # 2: the sets after the first sixteen, related queries


@dataclass(frozen=True)
class CataloguePiece:
    """One catalogue recording: a whole score rendered with one instrumentation."""

    id: str
    title: str
    collection: str
    composer: str
    score_path: str  # path inside the music21 corpus, e.g. "bach/bwv269.mxl"
    score_number: int | None  # tune number inside a multi-tune ABC file
    tune: str | None  # chorale (hymn) title for Bach chorales
    instrumentation: str
    programs: list[int]  # General MIDI program (0-based) per score part, top part first
    tempo_qpm: float  # quarter notes per minute at the start of the piece
    duration_s: float
    file: str  # relative to the corpus directory


@dataclass(frozen=True)
class SourceSpan:
    """Which seconds of a catalogue piece appear at which seconds of a query.

    Inside the span, query time = query_start_s + (source time - source_start_s) / tempo_factor.
    """

    piece_id: str
    source_start_s: float
    source_end_s: float
    query_start_s: float
    query_end_s: float
    tempo_factor: float = 1.0  # query tempo / source tempo
    transpose: int = 0  # semitones
    # Shifts (source seconds) at which the same notes recur in the source: a repeat holds the
    # same music, so evidence pointing there is as right as evidence pointing here.
    repeat_offsets_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Query:
    """One query recording and the catalogue material it contains."""

    id: str
    transformation: str
    file: str
    duration_s: float
    sources: list[SourceSpan]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Negative:
    """An excerpt of music that is not in the catalogue."""

    id: str
    kind: str  # "hard_negative" (same collections as the catalogue) or "other_negative"
    file: str
    duration_s: float
    collection: str
    composer: str
    title: str
    score_path: str
    score_number: int | None
    instrumentation: str
    programs: list[int]
    source_start_s: float
    source_end_s: float


@dataclass
class Manifest:
    """Everything in a corpus directory; file paths are relative to `root`."""

    root: Path
    seed: int
    size: str
    sample_rate: int
    catalogue: list[CataloguePiece]
    queries: list[Query]
    negatives: list[Negative]
    info: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the manifest."""
        return self.root / relative

    def piece(self, piece_id: str) -> CataloguePiece:
        """Catalogue piece by id."""
        for piece in self.catalogue:
            if piece.id == piece_id:
                return piece
        raise KeyError(piece_id)

    def queries_for(self, transformation: str) -> list[Query]:
        """Queries of one transformation."""
        return [q for q in self.queries if q.transformation == transformation]

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (without the root directory)."""
        return {
            "version": self.version,
            "seed": self.seed,
            "size": self.size,
            "sample_rate": self.sample_rate,
            "info": self.info,
            "catalogue": [asdict(p) for p in self.catalogue],
            "queries": [asdict(q) for q in self.queries],
            "negatives": [asdict(n) for n in self.negatives],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> Manifest:
        """Inverse of `to_json`."""
        queries = [
            Query(**{**q, "sources": [SourceSpan(**s) for s in q["sources"]]})
            for q in data["queries"]
        ]
        return cls(
            root=root,
            seed=data["seed"],
            size=data["size"],
            sample_rate=data["sample_rate"],
            catalogue=[CataloguePiece(**p) for p in data["catalogue"]],
            queries=queries,
            negatives=[Negative(**n) for n in data["negatives"]],
            info=data.get("info", {}),
            version=data.get("version", MANIFEST_VERSION),
        )


def load_manifest(out_dir: Path) -> Manifest:
    """Read `manifest.json` from a corpus directory; ValueError when its version differs."""
    out_dir = Path(out_dir)
    path = out_dir / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    version = data.get("version")
    if version != MANIFEST_VERSION:
        raise ValueError(
            f"{path} has manifest version {version}, this code reads version "
            f"{MANIFEST_VERSION}: rebuild the corpus (python -m bench.corpus --out {out_dir} "
            "--size ..., or bench.attribution --rebuild)"
        )
    return Manifest.from_json(data, out_dir)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
