"""Scores from the music21 corpus: discovery, and note extraction cached as JSON."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus.manifest import write_json
from bench.corpus.spec import EXTRACT_VERSION, CollectionSpec

log = logging.getLogger("bench.corpus")


@dataclass(frozen=True)
class ScoreRef:
    """A score in the music21 corpus: a file, and a tune number for multi-tune ABC files."""

    path: str
    number: int | None
    collection: str

    @property
    def key(self) -> str:
        """Stable identifier of the score."""
        return self.path if self.number is None else f"{self.path}#{self.number}"

    @property
    def slug(self) -> str:
        """File-name-safe identifier derived from the path."""
        stem = re.sub(r"\.[a-z]+$", "", self.path.lower())
        slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")
        return slug if self.number is None else f"{slug}-x{self.number}"


@dataclass(frozen=True)
class ScoreInfo:
    """What extraction learnt about a score (its notes stay in the cache file)."""

    ref: ScoreRef
    notes_file: str
    error: str | None = None
    title: str = ""
    composer: str = ""
    tune: str | None = None
    n_parts: int = 0
    tempo: tuple[tuple[float, float], ...] = ()  # explicit (offset in quarters, qpm) marks
    end_ql: float = 0.0
    melody: tuple[int, ...] | None = None  # opening intervals of the top voice


def configure_music21(scratch_dir: Path | None = None) -> None:
    """Keep music21 offline and quiet: no downloads, no viewers, scratch files in our cache."""
    from music21 import environment

    warnings.filterwarnings("ignore", module=r"music21(\..*)?")
    env = environment.Environment()
    env["autoDownload"] = "deny"
    env["warnings"] = 0
    for key in (
        "graphicsPath",
        "pdfPath",
        "musicxmlPath",
        "musescoreDirectPNGPath",
        "lilypondPath",
        "midiPath",
        "vectorPath",
        "braillePath",
    ):
        env[key] = None
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        env["directoryScratch"] = str(scratch_dir)


def music21_corpus_root() -> Path:
    """Directory of the corpus shipped inside the music21 package."""
    from music21 import corpus

    return Path(corpus.__file__).parent


_FORMAT_ORDER = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".krn": 3, ".abc": 4}


def discover(spec: CollectionSpec, root: Path) -> list[ScoreRef]:
    """All scores of a collection, in a stable order, one file per score."""
    files: list[Path] = []
    for entry in spec.roots:
        path = root / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
    best: dict[str, Path] = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix not in _FORMAT_ORDER or not re.search(spec.include, rel):
            continue
        if re.search(spec.exclude, rel):
            continue
        stem = rel[: -len(path.suffix)]
        if stem not in best or _FORMAT_ORDER[path.suffix] < _FORMAT_ORDER[best[stem].suffix]:
            best[stem] = path
    refs: list[ScoreRef] = []
    for stem in sorted(best):
        path = best[stem]
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".abc" and spec.split_abc:
            text = path.read_text(encoding="latin-1")
            numbers = list(dict.fromkeys(int(n) for n in re.findall(r"^X:\s*(\d+)", text, re.M)))
            if len(numbers) > 1:
                refs.extend(ScoreRef(rel, n, spec.name) for n in numbers)
                continue
        refs.append(ScoreRef(rel, None, spec.name))
    return refs


def _chorale_title(path: str) -> str | None:
    """Hymn title of a Bach chorale from music21's Riemenschneider list, if listed."""
    from music21.corpus.chorales import ChoraleListRKBWV

    match = re.match(r"bach/bwv([\d.]+(?:-\w+)?)\.", path)
    if not match:
        return None
    table = ChoraleListRKBWV().byBWV
    bwv = match.group(1)
    entry = table.get(bwv) or table.get(bwv.split("-")[0])
    return str(entry["title"]) if entry else None


def _melody_key(notes: list[list[float]], part: int) -> tuple[int, ...] | None:
    """Transposition-invariant opening (12 intervals) of one part, repeated pitches merged."""
    top: dict[float, int] = {}
    for on, _dur, pitch, _vel, p in notes:
        if p == part:
            top[on] = max(top.get(on, 0), int(pitch))
    pitches = [top[on] for on in sorted(top)]
    merged = [p for i, p in enumerate(pitches) if i == 0 or p != pitches[i - 1]][:13]
    if len(merged) < 9:
        return None
    return tuple(b - a for a, b in itertools.pairwise(merged))


def _part_notes(part: Any, index: int) -> list[list[float]]:
    """Rows (onset ql, duration ql, MIDI pitch, velocity or 0, part) of one part, ties merged."""
    from music21 import harmony, note

    rows: list[list[float]] = []
    tied: dict[int, int] = {}  # MIDI pitch -> row of the note its tie continues
    for n in part.flatten().notes:
        if isinstance(n, harmony.ChordSymbol | note.Unpitched) or n.quarterLength <= 0:
            continue
        onset, length = float(n.offset), float(n.quarterLength)
        velocity = n.volume.velocity if n.volume.velocityScalar is not None else None
        if n.isChord:
            pitches = [(p, n.getTie(p) or n.tie) for p in n.pitches]
        else:
            pitches = [(n.pitch, n.tie)]
        for pitch, tie in pitches:
            midi = int(pitch.midi)
            kind = tie.type if tie is not None else None
            if kind in ("continue", "stop") and midi in tied:
                row = rows[tied[midi]]
                row[1] = max(row[1], onset + length - row[0])
                if kind == "stop":
                    del tied[midi]
                continue
            rows.append([onset, length, midi, int(velocity or 0), index])
            if kind in ("start", "continue"):
                tied[midi] = len(rows) - 1
    return rows


def _extract(ref: ScoreRef, root: Path) -> dict[str, Any]:
    """Parse a score with music21 and flatten it to notes (quarter-length offsets)."""
    from music21 import converter, stream
    from music21 import tempo as m21tempo

    kwargs: dict[str, Any] = {"forceSource": True, "storePickle": False}
    if ref.number is not None:
        kwargs["number"] = ref.number
    score: Any = converter.parse(root / ref.path, **kwargs)
    if isinstance(score, stream.Opus):
        score = score.mergeScores()
    if any(True for _ in score.recurse().getElementsByClass("RepeatMark")):
        try:
            score = score.expandRepeats()
        except Exception as exc:  # inconsistent repeat marks: keep the score as written
            log.debug("%s: repeats not expanded (%s)", ref.key, exc)
    parts = list(score.parts) or [score]
    notes: list[list[float]] = []
    for index, part in enumerate(parts):
        notes += _part_notes(part, index)
    if not notes:
        raise ValueError("score has no notes")
    marks: dict[float, float] = {}
    for mark in score.flatten().getElementsByClass(m21tempo.MetronomeMark):
        if mark.number is None or mark.numberImplicit:
            continue
        qpm = float(mark.getQuarterBPM() or 0)
        if 30.0 <= qpm <= 300.0:
            marks.setdefault(float(mark.offset), qpm)
    used = sorted({int(n[4]) for n in notes})
    mean_pitch = {p: np.mean([n[2] for n in notes if n[4] == p]) for p in used}
    top_part = max(used, key=lambda p: mean_pitch[p])
    meta = score.metadata
    title = (meta.title or meta.movementName or "") if meta is not None else ""
    composer = (meta.composer or "") if meta is not None else ""
    return {
        "key": ref.key,
        "title": str(title).strip(),
        "composer": str(composer).strip(),
        "tune": _chorale_title(ref.path) if ref.collection == "bach-chorales" else None,
        "n_parts": len(parts),
        "tempo": sorted(marks.items()),
        "end_ql": max(n[0] + n[1] for n in notes),
        "melody": _melody_key(notes, top_part),
        "notes": notes,
    }


def _notes_file(cache_dir: Path, ref: ScoreRef) -> Path:
    """Cache file holding a score's extracted notes."""
    digest = hashlib.sha1(f"{EXTRACT_VERSION}:{ref.key}".encode()).hexdigest()[:10]
    return cache_dir / "scores" / f"{ref.slug[:80]}-{digest}.json"


def extract_job(args: tuple[ScoreRef, str]) -> ScoreInfo:
    """Extract (or load from cache) one score; failures become an error entry."""
    ref, cache = args
    path = _notes_file(Path(cache), ref)
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        try:
            data = _extract(ref, music21_corpus_root())
        except Exception as exc:
            data = {"key": ref.key, "error": f"{type(exc).__name__}: {exc}"[:300]}
        write_json(path, data)
    if data.get("error"):
        return ScoreInfo(ref, str(path), error=data["error"])
    return ScoreInfo(
        ref=ref,
        notes_file=str(path),
        title=data["title"],
        composer=data["composer"],
        tune=data["tune"],
        n_parts=data["n_parts"],
        tempo=tuple((float(o), float(q)) for o, q in data["tempo"]),
        end_ql=float(data["end_ql"]),
        melody=tuple(data["melody"]) if data["melody"] else None,
    )


def music21_version() -> str:
    """Installed music21 version."""
    import music21

    return str(music21.__version__)
