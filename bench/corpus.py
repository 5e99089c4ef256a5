"""Reproducible evaluation corpus: real scores from music21 rendered to audio with FluidSynth.

From a seed this builds a catalogue of rendered pieces, query sets derived from them (one per
transformation, each with its true time alignment to the catalogue) and negatives, and writes
them with a ``manifest.json`` into an output directory::

    python -m bench.corpus --size full --out .echoledger/corpus --seed 0

Renderings are cached on disk (keyed on score, tempo, transposition, programs and sample rate),
so a rebuild with the same seed only re-assembles the query files.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import soundfile as sf

from bench import _audio_transforms as au

log = logging.getLogger("bench.corpus")

Size = Literal["small", "full"]
Role = Literal["catalogue", "other"]

MANIFEST_VERSION = 1
EXTRACT_VERSION = 1
RENDER_VERSION = 1
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

MIN_PIECE_S = 25.0  # scores shorter than this (at their chosen tempo) are skipped
MAX_PIECE_S = 240.0  # longer scores are cut here (the small preset cuts earlier)
TAIL_S = 2.0  # release and reverb tail rendered after the last note
FLUID_BLOCK = 64  # FluidSynth processes MIDI events on this sample grid
MIDI_TPQ = 9600
MIDI_US_PER_QUARTER = 500_000
TICKS_PER_S = MIDI_TPQ * 1_000_000 / MIDI_US_PER_QUARTER
EXCERPT_S = (10.0, 30.0)
EMBED_EXCERPT_S = (10.0, 20.0)
EMBED_TOTAL_S = 60.0
EMBED_RAMP_S = 0.25
EMBED_FILLER_PARTS = 3
FILLER_XFADE_S = 1.0
MIN_COVERAGE = 0.9  # fraction of an excerpt in which some note sounds

TEMPO_FACTORS = {"tempo+5": 1.05, "tempo-5": 0.95, "tempo+10": 1.10, "tempo-10": 0.90}
TRANSPOSITIONS = {"transpose+1": 1, "transpose-1": -1, "transpose+2": 2, "transpose-2": -2}
TRANSFORMATIONS: tuple[str, ...] = (
    "clean", "gain", "noise20", "noise10", "lossy",
    *TEMPO_FACTORS, *TRANSPOSITIONS,
    "reinstrument", "mix2", "embedded",
)  # fmt: skip
NEGATIVE_KINDS = ("hard_negative", "other_negative")

# General MIDI programs (0-based) per ensemble; a palette lists programs from the top voice down.
PALETTES: dict[str, dict[str, tuple[int, ...]]] = {
    "chorale": {
        "organ": (19,),
        "strings": (40, 40, 41, 42),
        "choir": (52,),
        "brass": (56, 60, 57, 58),
        "woodwinds": (73, 68, 71, 70),
        "string-ensemble": (48,),
    },
    "polyphony": {
        "choir": (52,),
        "voice-oohs": (53,),
        "organ": (19,),
        "reed-organ": (20,),
        "recorders": (74, 74, 74, 70),
        "viols": (40, 41, 42, 43),
    },
    "folk": {
        "fiddle": (110,),
        "violin": (40,),
        "flute": (73,),
        "piano": (0,),
        "nylon-guitar": (24,),
        "steel-guitar": (25,),
        "accordion": (21,),
        "harmonica": (22,),
        "banjo": (105,),
        "clarinet": (71,),
    },
    "quartet": {
        "string-quartet": (40, 40, 41, 42),
        "string-ensemble": (48, 48, 49, 49),
        "piano": (0,),
        "winds": (73, 68, 71, 70),
        "brass": (56, 56, 60, 57),
    },
    "keyboard": {
        "piano": (0,),
        "harpsichord": (6,),
        "electric-piano": (4,),
        "vibraphone": (11,),
        "chamber": (73, 40, 42, 0),
    },
}
_MIDI_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15)  # 9 is percussion


@dataclass(frozen=True)
class CollectionSpec:
    """A group of music21 corpus files rendered alike."""

    name: str
    composer: str
    roots: tuple[str, ...]
    ensemble: str
    qpm: tuple[float, float]
    role: Role
    weight: float
    split_abc: bool = True
    trust_titles: bool = True  # False where the scores' title metadata is unusable
    include: str = r""
    exclude: str = r"^$"


COLLECTIONS: tuple[CollectionSpec, ...] = (
    # Catalogue collections: the catalogue and the hard negatives are drawn from these.
    CollectionSpec("bach-chorales", "Johann Sebastian Bach", ("bach",), "chorale", (60, 76),
                   "catalogue", 0.30, include=r"^bach/bwv[^/]*$", exclude=r"bwv846"),
    CollectionSpec("palestrina", "Giovanni Pierluigi da Palestrina", ("palestrina",), "polyphony",
                   (112, 144), "catalogue", 0.20),
    CollectionSpec("monteverdi", "Claudio Monteverdi", ("monteverdi",), "polyphony", (100, 132),
                   "catalogue", 0.08, trust_titles=False),
    CollectionSpec("oneills1850", "traditional (O'Neill's Music of Ireland)", ("oneills1850",),
                   "folk", (100, 132), "catalogue", 0.17),
    CollectionSpec("ryansMammoth", "traditional (Ryan's Mammoth Collection)", ("ryansMammoth",),
                   "folk", (100, 132), "catalogue", 0.17),
    CollectionSpec("string-quartets", "various", ("haydn", "mozart/k155", "mozart/k156",
                   "mozart/k458", "mozart/k80", "beethoven", "schumann_robert/opus41no1"),
                   "quartet", (96, 132), "catalogue", 0.08, include=r"/movement\d"),
    # Other music: other negatives and the background of embedded queries.
    CollectionSpec("essenFolksong", "traditional (Essen folksong collection)", ("essenFolksong",),
                   "folk", (84, 120), "other", 0.30, exclude=r"/test"),
    CollectionSpec("trecento", "various (trecento)", ("trecento",), "polyphony", (100, 132),
                   "other", 0.20),
    CollectionSpec("airdsAirs", "traditional (Aird's Airs)", ("airdsAirs",), "folk", (90, 120),
                   "other", 0.15),
    CollectionSpec("miscFolk", "traditional", ("miscFolk", "nottingham-dataset"), "folk",
                   (100, 132), "other", 0.10),
    CollectionSpec("josquin", "Josquin des Prez", ("josquin",), "polyphony", (110, 140), "other",
                   0.05, split_abc=False),
    CollectionSpec("miscellany", "various", ("beach", "chopin", "ciconia", "corelli", "cpebach",
                   "handel", "johnson_j_r", "joplin", "leadSheet", "liliuokalani", "luca",
                   "lusitano", "schubert", "schumann_clara", "verdi", "weber", "mozart/k545",
                   "schumann_robert/dichterliebe_no2.xml", "schumann_robert/opus48no2.mxl"),
                   "keyboard", (80, 120), "other", 0.20),
)  # fmt: skip


@dataclass(frozen=True)
class SizePreset:
    """How many pieces, queries and negatives a corpus has."""

    catalogue: int
    queries_per_transformation: int
    hard_negatives: int
    other_negatives: int
    fillers: int
    max_piece_s: float = MAX_PIECE_S  # catalogue pieces are cut at this length


SIZES: dict[str, SizePreset] = {
    "small": SizePreset(catalogue=12, queries_per_transformation=3, hard_negatives=4,
                        other_negatives=4, fillers=4, max_piece_s=75.0),
    "full": SizePreset(catalogue=300, queries_per_transformation=40, hard_negatives=100,
                       other_negatives=100, fillers=24),
}  # fmt: skip


# --------------------------------------------------------------------------- manifest


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


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- music21 scores


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
class _ScoreInfo:
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


def _extract_job(args: tuple[ScoreRef, str]) -> _ScoreInfo:
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
        _write_json(path, data)
    if data.get("error"):
        return _ScoreInfo(ref, str(path), error=data["error"])
    return _ScoreInfo(
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


# --------------------------------------------------------------------------- timing and MIDI


def _seconds(ql: np.ndarray, marks: Sequence[tuple[float, float]], qpm: float) -> np.ndarray:
    """Map quarter-length offsets to seconds through a piecewise-constant tempo map."""
    points = list(marks)
    if not points or points[0][0] > 0:
        points.insert(0, (0.0, qpm))
    bounds = np.array([p[0] for p in points])
    spq = np.array([60.0 / p[1] for p in points])
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(bounds) * spq[:-1])])
    index = np.clip(np.searchsorted(bounds, ql, side="right") - 1, 0, None)
    return np.asarray(cumulative[index] + (ql - bounds[index]) * spq[index])


@dataclass(frozen=True)
class _Voicing:
    """A score at a base tempo with one General MIDI program per part."""

    key: str
    notes_file: str
    tempo: tuple[tuple[float, float], ...]
    qpm: float
    programs: tuple[int, ...]
    cap_s: float = MAX_PIECE_S


def _timed_notes(voicing: _Voicing) -> np.ndarray:
    """Notes as rows (onset s, offset s, pitch, velocity, part), cut at the voicing's cap."""
    data = json.loads(Path(voicing.notes_file).read_text(encoding="utf-8"))
    raw = np.asarray(data["notes"], dtype=np.float64).reshape(-1, 5)
    on = _seconds(raw[:, 0], voicing.tempo, voicing.qpm)
    off = _seconds(raw[:, 0] + raw[:, 1], voicing.tempo, voicing.qpm)
    off = np.minimum(np.maximum(off, on + 0.03), voicing.cap_s)
    keep = on < voicing.cap_s - 0.05
    out = np.stack([on, off, raw[:, 2], raw[:, 3], raw[:, 4]], axis=1)[keep]
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]], end_tick: int) -> bytes:
    """One MTrk chunk from (tick, order, message) events."""
    events.sort(key=lambda e: (e[0], e[1]))
    body = bytearray()
    last = 0
    for tick, _order, message in events:
        body += _vlq(tick - last) + message
        last = tick
    body += _vlq(max(end_tick - last, 0)) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def midi_bytes(notes: np.ndarray, programs: Sequence[int], end_s: float) -> bytes:
    """Standard MIDI file (format 1) for timed notes, one track and channel per part."""
    end_tick = round(end_s * TICKS_PER_S)
    tempo = b"\xff\x51\x03" + MIDI_US_PER_QUARTER.to_bytes(3, "big")
    tracks = [_track([(0, 0, tempo)], end_tick)]
    for part, program in enumerate(programs):
        channel = _MIDI_CHANNELS[part % len(_MIDI_CHANNELS)]
        events: list[tuple[int, int, bytes]] = [
            (0, 0, bytes([0xC0 | channel, program])),
            (0, 0, bytes([0xB0 | channel, 7, 100])),
        ]
        for on, off, pitch, velocity, _ in notes[notes[:, 4] == part]:
            vel = int(velocity) if velocity > 0 else (88 if part == 0 else 76)
            events.append((round(on * TICKS_PER_S), 2, bytes([0x90 | channel, int(pitch), vel])))
            events.append((round(off * TICKS_PER_S), 1, bytes([0x80 | channel, int(pitch), 0])))
        tracks.append(_track(events, end_tick))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), MIDI_TPQ)
    return header + b"".join(tracks)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _RenderContext:
    """Settings shared by all renders of one build."""

    cache_dir: str
    sample_rate: int
    soundfont: str


def fluidsynth_version() -> str:
    """Version line of the installed FluidSynth."""
    out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def _fluidsynth(
    notes: np.ndarray, programs: Sequence[int], n_samples: int, ctx: _RenderContext
) -> np.ndarray:
    """Render timed notes to mono float audio of exactly `n_samples` samples."""
    with tempfile.TemporaryDirectory(prefix="corpus-render-") as tmp:
        midi = Path(tmp) / "in.mid"
        raw = Path(tmp) / "out.raw"
        midi.write_bytes(midi_bytes(notes, programs, n_samples / ctx.sample_rate))
        cmd = [
            "fluidsynth",
            "-n",
            "-i",
            "-q",
            "-g",
            "0.5",
            "-r",
            str(ctx.sample_rate),
            "-F",
            str(raw),
            "-T",
            "raw",
            "-O",
            "float",
            "-o",
            "synth.cpu-cores=1",
            "-o",
            "synth.dynamic-sample-loading=1",
            "-o",
            "synth.polyphony=512",
            ctx.soundfont,
            str(midi),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not raw.exists():
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): {proc.stderr[-300:]}")
        stereo = np.fromfile(raw, dtype=np.float32)
    if stereo.size < 2 * FLUID_BLOCK:
        raise RuntimeError("fluidsynth produced no audio")
    mono = stereo[: stereo.size // 2 * 2].reshape(-1, 2).mean(axis=1)
    if not np.all(np.isfinite(mono)) or au.peak(mono) == 0:
        raise RuntimeError("fluidsynth produced silence or invalid samples")
    if mono.size < n_samples:
        mono = np.pad(mono, (0, n_samples - mono.size))
    return np.asarray(mono[:n_samples])


def _render_path(
    ctx: _RenderContext,
    voicing: _Voicing,
    factor: float,
    transpose: int,
    programs: tuple[int, ...],
    window: tuple[int, int] | None,
) -> Path:
    """Cache path of a rendering (score, tempo, transposition, programs, rate, window)."""
    soundfont = Path(ctx.soundfont)
    key = json.dumps(
        [
            RENDER_VERSION,
            EXTRACT_VERSION,
            voicing.key,
            voicing.tempo,
            voicing.qpm,
            voicing.cap_s,
            factor,
            transpose,
            programs,
            ctx.sample_rate,
            window,
            soundfont.name,
            soundfont.stat().st_size,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "-", voicing.key.lower()).strip("-")[:60]
    kind = "full" if window is None else "window"
    return Path(ctx.cache_dir) / "audio" / kind / f"{slug}-{digest}.flac"


def render(
    voicing: _Voicing,
    ctx: _RenderContext,
    *,
    factor: float = 1.0,
    transpose: int = 0,
    programs: tuple[int, ...] | None = None,
    window: tuple[int, int] | None = None,
) -> Path:
    """Render a voicing (whole, or a window of (start, length) samples at the rendered tempo).

    A window is cut from a rendering that starts at the beginning of the piece, so it holds
    exactly what the whole rendering holds there. `factor` scales the tempo (1.05 plays 5%
    faster), `transpose` shifts by semitones. The result is level-normalised 16-bit FLAC in the
    render cache; its path is returned.
    """
    programs = programs or voicing.programs
    path = _render_path(ctx, voicing, factor, transpose, programs, window)
    if path.exists():
        return path
    sr = ctx.sample_rate
    notes = _timed_notes(voicing)
    notes[:, :2] /= factor
    notes[:, 2] += transpose
    notes = notes[(notes[:, 2] >= 0) & (notes[:, 2] <= 127)]
    if window is None:
        n_samples = round((float(notes[:, 1].max()) + TAIL_S) * sr)
        audio = _fluidsynth(notes, programs, n_samples, ctx)
    else:
        start, length = window
        end_s = (start + length) / sr
        local = notes[notes[:, 0] < end_s].copy()
        local[:, 1] = np.minimum(local[:, 1], end_s + 0.1)
        if not np.any(local[:, 1] > start / sr):
            raise RuntimeError("no notes in window")
        audio = _fluidsynth(local, programs, start + length, ctx)[start:]
    au.write_audio(path, au.normalize(audio), sr)
    return path


def _render_full_job(args: tuple[_Voicing, _RenderContext]) -> tuple[str, str | None]:
    """Pool job: render a whole piece; returns (path, error)."""
    voicing, ctx = args
    try:
        return str(render(voicing, ctx)), None
    except Exception as exc:
        return "", f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------- worker pool

_T = TypeVar("_T")
_R = TypeVar("_R")


def _init_worker(scratch: str) -> None:
    """Pool initializer: offline music21, quiet warnings."""
    configure_music21(Path(scratch))


class _Runner:
    """Ordered map over items, in a process pool when more than one worker is used."""

    def __init__(self, workers: int, scratch: Path, progress: bool) -> None:
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(scratch),),
            )
        else:
            _init_worker(str(scratch))

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T], desc: str) -> list[_R]:
        """Apply `fn` to every item; results in item order."""
        if not items:
            return []
        from tqdm import tqdm

        it: Iterator[_R] = (
            map(fn, items) if self._pool is None else self._pool.map(fn, items, chunksize=1)
        )
        bar = tqdm(it, total=len(items), desc=desc, disable=not self.progress, leave=False)
        return list(bar)

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _Piece:
    """A selected score with its instrumentation and tempo."""

    id: str
    info: _ScoreInfo
    spec: CollectionSpec
    palette: str
    voicing: _Voicing
    end_s: float  # end of the last note at the base tempo

    @property
    def programs(self) -> list[int]:
        """Program per part."""
        return list(self.voicing.programs)


def _programs(palette: tuple[int, ...], n_parts: int) -> tuple[int, ...]:
    """Spread a top-to-bottom palette over `n_parts` parts."""
    if len(palette) == 1 or n_parts <= 1:
        return tuple(palette[0] for _ in range(max(n_parts, 1)))
    step = (len(palette) - 1) / (n_parts - 1)
    return tuple(palette[round(i * step)] for i in range(n_parts))


def _title_key(title: str) -> str | None:
    """Normalised title used to spot the same tune under two entries."""
    text = re.sub(r"[^a-z0-9äöüß]+", " ", title.lower())
    noise = r"\b(the|a|an|reel|jig|hornpipe|strathspey|waltz|march|polka|air|slide|no|\d+)\b"
    text = "".join(re.sub(noise, " ", text).split())
    return text if len(text) >= 4 else None


def _stable_rng(*parts: int | str) -> np.random.Generator:
    """Generator seeded from integers and strings, independent of process and hash seed."""
    return np.random.default_rng(
        [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    )


class _Selector:
    """Draws scores per collection in a seeded order, skipping duplicates and unusable scores."""

    def __init__(self, runner: _Runner, cache_dir: Path, seed: int, cap_s: float) -> None:
        self.runner = runner
        self.cap_s = cap_s
        self.cache_dir = cache_dir
        self.seed = seed
        root = music21_corpus_root()
        self.streams: dict[str, list[ScoreRef]] = {}
        self.pos: dict[str, int] = {}
        for spec in COLLECTIONS:
            refs = discover(spec, root)
            order = _stable_rng(seed, spec.name).permutation(len(refs))
            self.streams[spec.name] = [refs[i] for i in order]
            self.pos[spec.name] = 0
        self.used_keys: set[str] = set()
        self.used_titles: set[str] = set()
        self.used_melodies: set[tuple[int, ...]] = set()
        self.used_ids: set[str] = set()
        self.rejected: Counter[str] = Counter()
        self.failures: list[dict[str, str]] = []

    def available(self, spec: CollectionSpec) -> int:
        """Candidates not examined yet."""
        return len(self.streams[spec.name]) - self.pos[spec.name]

    def take(self, spec: CollectionSpec, n: int) -> list[_Piece]:
        """Next `n` acceptable pieces of a collection (fewer if it runs out)."""
        out: list[_Piece] = []
        stream = self.streams[spec.name]
        while len(out) < n and self.pos[spec.name] < len(stream):
            start = self.pos[spec.name]
            batch = stream[start : start + max(n - len(out), self.runner.workers)]
            infos = self.runner.map(
                _extract_job, [(r, str(self.cache_dir)) for r in batch], desc=f"scores {spec.name}"
            )
            log.info("extracted %d %s scores", len(batch), spec.name)
            for info in infos:
                if len(out) == n:
                    break
                self.pos[spec.name] += 1
                piece = self._accept(spec, info)
                if piece is not None:
                    out.append(piece)
        return out

    def _accept(self, spec: CollectionSpec, info: _ScoreInfo) -> _Piece | None:
        """Turn extraction results into a piece, or None with the reason counted."""
        ref = info.ref
        if info.error:
            log.warning("skipping %s: %s", ref.key, info.error)
            self.failures.append({"score": ref.key, "reason": info.error})
            self.rejected[f"{spec.name}: parse failed"] += 1
            return None
        rng = _stable_rng(ref.key)
        qpm = float(round(rng.uniform(*spec.qpm)))
        end_s = float(_seconds(np.array([info.end_ql]), info.tempo, qpm)[0])
        title_key = (
            _title_key(info.tune or info.title) if spec.ensemble in ("chorale", "folk") else None
        )
        reason = None
        if min(end_s, self.cap_s) + TAIL_S < MIN_PIECE_S:
            reason = "too short"
        elif ref.key in self.used_keys:
            reason = "already used"
        elif title_key is not None and title_key in self.used_titles:
            reason = "same title as a chosen piece"
        elif info.melody is not None and info.melody in self.used_melodies:
            reason = "same melody as a chosen piece"
        if reason:
            self.rejected[f"{spec.name}: {reason}"] += 1
            return None
        self.used_keys.add(ref.key)
        if title_key:
            self.used_titles.add(title_key)
        if info.melody is not None:
            self.used_melodies.add(info.melody)
        palettes = PALETTES[spec.ensemble]
        names = sorted(palettes)
        palette = names[int(_stable_rng(self.seed, ref.key, "palette").integers(len(names)))]
        piece_id = ref.slug
        while piece_id in self.used_ids:
            piece_id += "-b"
        self.used_ids.add(piece_id)
        voicing = _Voicing(
            ref.key,
            info.notes_file,
            info.tempo,
            qpm,
            _programs(palettes[palette], info.n_parts),
            self.cap_s,
        )
        return _Piece(piece_id, info, spec, palette, voicing, min(end_s, self.cap_s))


def _allocate(total: int, specs: Sequence[CollectionSpec]) -> dict[str, int]:
    """Split `total` over collections by weight (largest remainder)."""
    weights = np.array([s.weight for s in specs], dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return {s.name: int(c) for s, c in zip(specs, counts, strict=True)}


def _take_quota(selector: _Selector, specs: Sequence[CollectionSpec], total: int) -> list[_Piece]:
    """Take `total` pieces over collections by weight, topping up from others when one runs out."""
    quota = _allocate(total, specs)
    chosen: list[_Piece] = []
    for spec in specs:
        chosen += selector.take(spec, quota[spec.name])
    for spec in specs:
        if len(chosen) >= total:
            break
        if selector.available(spec):
            chosen += selector.take(spec, total - len(chosen))
    if len(chosen) < total:
        log.warning("only %d of %d pieces available", len(chosen), total)
    return chosen


# --------------------------------------------------------------------------- query planning


@dataclass(frozen=True)
class _Take:
    """A window of a piece, in samples at the base tempo."""

    piece: _Piece
    start: int
    length: int
    audio: str | None = None  # the catalogue rendering, when the piece is in the catalogue


@dataclass
class _Job:
    """Everything needed to write one query or negative file."""

    id: str
    group: str  # transformation, or negative kind
    file: str
    takes: list[_Take]
    params: dict[str, Any] = field(default_factory=dict)
    fillers: list[_Take] = field(default_factory=list)
    seed: tuple[int, ...] = ()


class _Planner:
    """Chooses excerpt windows with seeded generators, avoiding silent stretches."""

    def __init__(self, sample_rate: int) -> None:
        self.sr = sample_rate
        self._activity: dict[str, np.ndarray] = {}

    def activity(self, piece: _Piece) -> np.ndarray:
        """Per-100-ms flags: does any note sound?"""
        if piece.id not in self._activity:
            notes = _timed_notes(piece.voicing)
            steps = int(np.ceil(piece.end_s * 10)) + 1
            delta = np.zeros(steps + 1)
            np.add.at(delta, np.clip((notes[:, 0] * 10).astype(int), 0, steps), 1)
            np.add.at(delta, np.clip(np.ceil(notes[:, 1] * 10).astype(int), 0, steps), -1)
            self._activity[piece.id] = np.cumsum(delta)[:steps] > 0
        return self._activity[piece.id]

    def window(
        self,
        rng: np.random.Generator,
        piece: _Piece,
        length_s: float,
        margin_s: float = 0.0,
        audio: str | None = None,
    ) -> _Take:
        """A window of about `length_s` seconds inside the piece's notes."""
        length_s = min(length_s, piece.end_s - 2 * margin_s - 0.5)
        latest = piece.end_s - margin_s - length_s
        active = self.activity(piece)
        best: tuple[float, float] = (-1.0, margin_s)
        for _ in range(20):
            start_s = float(rng.uniform(margin_s, max(latest, margin_s)))
            cover = float(np.mean(active[int(start_s * 10) : int((start_s + length_s) * 10)]))
            if cover > best[0]:
                best = (cover, start_s)
            if cover >= MIN_COVERAGE:
                break
        return _Take(piece, round(best[1] * self.sr), round(length_s * self.sr), audio)


def _plan_queries(
    catalogue: list[_Piece],
    audio: dict[str, str],
    fillers: list[_Piece],
    preset: SizePreset,
    seed: int,
    planner: _Planner,
) -> list[_Job]:
    """Seeded plan of every query: sources, windows and transformation parameters."""
    jobs: list[_Job] = []
    n = preset.queries_per_transformation
    for t_index, name in enumerate(TRANSFORMATIONS):
        rng = _stable_rng(seed, "queries", name)
        per_query = 2 if name == "mix2" else 1
        needed = n * per_query
        order = np.concatenate(
            [rng.permutation(len(catalogue)) for _ in range(-(-needed // len(catalogue)))]
        )[:needed]
        for i in range(n):
            picks = [catalogue[j] for j in order[i * per_query : (i + 1) * per_query]]
            if name == "mix2" and picks[0].id == picks[1].id:
                picks[1] = catalogue[(order[i * 2 + 1] + 1) % len(catalogue)]
            job_id = f"{name}-{i:03d}"
            ext = "flac"
            params: dict[str, Any] = {}
            fill: list[_Take] = []
            if name == "embedded":
                length = float(rng.uniform(*EMBED_EXCERPT_S))
                takes = [planner.window(rng, picks[0], length, EMBED_RAMP_S, audio[picks[0].id])]
                position = float(rng.uniform(5.0, EMBED_TOTAL_S - 5.0 - length))
                params["position_s"] = round(round(position * planner.sr) / planner.sr, 6)
                seg = EMBED_TOTAL_S / EMBED_FILLER_PARTS + FILLER_XFADE_S
                chosen = rng.choice(
                    len(fillers), size=EMBED_FILLER_PARTS, replace=len(fillers) < EMBED_FILLER_PARTS
                )
                fill = [planner.window(rng, fillers[k], seg + 0.01) for k in chosen]
            else:
                length = float(rng.uniform(*EXCERPT_S))
                takes = [planner.window(rng, p, length, 0.0, audio[p.id]) for p in picks]
                if name == "mix2":
                    size = min(t.length for t in takes)
                    takes = [_Take(t.piece, t.start, size, t.audio) for t in takes]
                    params["relative_gain_db"] = round(float(rng.uniform(-3.0, 3.0)), 2)
                elif name == "gain":
                    params["gain_db"] = round(float(rng.uniform(-12.0, 6.0)), 2)
                elif name.startswith("noise"):
                    params["snr_db"] = float(name.removeprefix("noise"))
                    params["noise"] = str(rng.choice(["white", "pink"]))
                elif name == "lossy":
                    ext = "mp3" if i % 2 == 0 else "ogg"
                    params["codec"] = ext
                elif name == "reinstrument":
                    params.update(_reinstrument(rng, picks[0]))
            jobs.append(
                _Job(
                    job_id,
                    name,
                    f"queries/{name}/{job_id}.{ext}",
                    takes,
                    params,
                    fill,
                    (seed, t_index, i),
                )
            )
    return jobs


def _reinstrument(rng: np.random.Generator, piece: _Piece) -> dict[str, Any]:
    """Another palette of the same ensemble, differing from the catalogue program of each part."""
    palettes = PALETTES[piece.spec.ensemble]
    current = piece.voicing.programs
    options: list[tuple[int, int, str, tuple[int, ...]]] = []
    for name in sorted(palettes):
        programs = _programs(palettes[name], len(current))
        same = sum(a == b for a, b in zip(programs, current, strict=True))
        options.append((same, len(set(programs) & set(current)), name, programs))
    best = min(o[:2] for o in options)
    options = [o for o in options if o[:2] == best]
    *_, name, programs = options[int(rng.integers(len(options)))]
    return {
        "instrumentation": name,
        "programs": list(programs),
        "original_instrumentation": piece.palette,
        "original_programs": list(current),
    }


def _plan_negatives(pieces: list[_Piece], kind: str, seed: int, planner: _Planner) -> list[_Job]:
    """One excerpt per negative piece."""
    rng = _stable_rng(seed, "negatives", kind)
    prefix = "hard" if kind == "hard_negative" else "other"
    jobs = []
    for i, piece in enumerate(pieces):
        take = planner.window(rng, piece, float(rng.uniform(*EXCERPT_S)))
        job_id = f"{prefix}-{i:03d}"
        jobs.append(_Job(job_id, kind, f"negatives/{kind}/{job_id}.flac", [take]))
    return jobs


# --------------------------------------------------------------------------- query execution


def _read_take(take: _Take, sr: int, margin: int = 0) -> np.ndarray:
    """Samples of a catalogue take (with `margin` extra samples each side)."""
    assert take.audio is not None
    x, _ = au.read_mono(Path(take.audio), take.start - margin, take.start + take.length + margin)
    return x


def _render_take(
    take: _Take,
    ctx: _RenderContext,
    factor: float = 1.0,
    transpose: int = 0,
    programs: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Render a take symbolically; returns (audio, start, length) in rendered-tempo samples."""
    start = round(take.start / factor)
    length = round(take.length / factor)
    path = render(
        take.piece.voicing,
        ctx,
        factor=factor,
        transpose=transpose,
        programs=programs,
        window=(start, length),
    )
    x, _ = au.read_mono(path)
    return x, start, length


def _span(
    piece_id: str,
    src_start: float,
    src_end: float,
    q_start: float,
    q_end: float,
    factor: float = 1.0,
    transpose: int = 0,
) -> SourceSpan:
    """SourceSpan with times rounded to microseconds."""
    return SourceSpan(
        piece_id,
        round(src_start, 6),
        round(src_end, 6),
        round(q_start, 6),
        round(q_end, 6),
        factor,
        transpose,
    )


def _execute(job: _Job, out_dir: Path, ctx: _RenderContext) -> Query | Negative:
    """Produce one query or negative file and its manifest record."""
    sr = ctx.sample_rate
    out = out_dir / job.file
    params = dict(job.params)
    take = job.takes[0]
    piece = take.piece
    if job.group in NEGATIVE_KINDS:
        x, _, _ = _render_take(take, ctx)
        au.write_audio(out, x, sr)
        ref = piece.info.ref
        return Negative(
            job.id,
            job.group,
            job.file,
            round(x.size / sr, 6),
            piece.spec.name,
            _composer(piece),
            _title(piece),
            ref.path,
            ref.number,
            piece.palette,
            piece.programs,
            round(take.start / sr, 6),
            round((take.start + take.length) / sr, 6),
        )
    start_s, end_s = take.start / sr, (take.start + take.length) / sr
    sources = [_span(piece.id, start_s, end_s, 0.0, take.length / sr)]
    if job.group in TEMPO_FACTORS or job.group in TRANSPOSITIONS or job.group == "reinstrument":
        factor = TEMPO_FACTORS.get(job.group, 1.0)
        transpose = TRANSPOSITIONS.get(job.group, 0)
        programs = tuple(params["programs"]) if "programs" in params else None
        x, start, length = _render_take(take, ctx, factor, transpose, programs)
        sources = [
            _span(
                piece.id,
                start * factor / sr,
                (start + length) * factor / sr,
                0.0,
                length / sr,
                factor,
                transpose,
            )
        ]
        if factor != 1.0:
            params["tempo_factor"] = factor
        if transpose:
            params["transpose"] = transpose
    elif job.group == "mix2":
        second = job.takes[1]
        a = au.normalize(_read_take(take, sr))
        b = au.normalize(_read_take(second, sr)) * au.db_to_amp(params["relative_gain_db"])
        x = au.normalize(a + b)
        sources.append(
            _span(
                second.piece.id,
                second.start / sr,
                (second.start + second.length) / sr,
                0.0,
                second.length / sr,
            )
        )
    elif job.group == "embedded":
        x, sources = _embed(job, take, ctx)
    else:
        x = _read_take(take, sr)
        if job.group == "gain":
            x, params["gain_db"] = au.apply_gain(x, params["gain_db"])
            params["gain_db"] = round(params["gain_db"], 3)
        elif job.group.startswith("noise"):
            x = au.add_noise(x, params["snr_db"], params["noise"], _stable_rng(*job.seed))
    if job.group == "lossy":
        au.write_lossy(out, x, sr, params["codec"])
        if params["codec"] == "ogg":
            _fix_ogg_serial(out)
        decoded, _ = au.read_mono(out)
        lag = au.estimate_lag(x, decoded, 4096)
        params["decoder_delay_samples"] = lag
        params["kbps"] = round(out.stat().st_size * 8 / (x.size / sr) / 1000, 1)
        sources = [_span(piece.id, start_s, end_s, lag / sr, (lag + take.length) / sr)]
        duration = decoded.size / sr
    else:
        au.write_audio(out, x, sr)
        duration = x.size / sr
    return Query(job.id, job.group, job.file, round(duration, 6), sources, params)


def _embed(job: _Job, take: _Take, ctx: _RenderContext) -> tuple[np.ndarray, list[SourceSpan]]:
    """A catalogue excerpt inside 60 s of other music, with short crossfades outside the span."""
    sr = ctx.sample_rate
    total = round(EMBED_TOTAL_S * sr)
    parts = [_render_take(f, ctx)[0] for f in job.fillers]
    bed = au.normalize(au.crossfade_concat(parts, round(FILLER_XFADE_S * sr))[:total])
    ramp = round(EMBED_RAMP_S * sr)
    excerpt = _read_take(take, sr, margin=ramp)
    core = excerpt[ramp : ramp + take.length]
    excerpt = excerpt * (au.rms(bed) / max(au.rms(core), 1e-9))
    position = round(job.params["position_s"] * sr)
    weight = np.concatenate(
        [
            np.linspace(0.0, 1.0, ramp, endpoint=False),
            np.ones(take.length),
            np.linspace(1.0, 0.0, ramp),
        ]
    )
    lo = position - ramp
    mixed = bed.astype(np.float64)
    mixed[lo : lo + weight.size] = mixed[lo : lo + weight.size] * (1 - weight) + excerpt * weight
    x = au.limit_peak(mixed)
    job.params["fillers"] = [
        {
            "score_path": f.piece.info.ref.path,
            "score_number": f.piece.info.ref.number,
            "collection": f.piece.spec.name,
        }
        for f in job.fillers
    ]
    span = _span(
        take.piece.id,
        take.start / sr,
        (take.start + take.length) / sr,
        position / sr,
        (position + take.length) / sr,
    )
    return x, [span]


def _ogg_crc(data: bytes) -> int:
    """CRC-32 of an Ogg page (polynomial 0x04C11DB7, no reflection)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _fix_ogg_serial(path: Path, serial: int = 0x45434C47) -> None:
    """Give an Ogg file a fixed stream serial (libsndfile picks a random one): same bytes."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        size = 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        data[pos + 14 : pos + 18] = struct.pack("<I", serial)
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = struct.pack("<I", _ogg_crc(bytes(data[pos : pos + size])))
        pos += size
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def _clean_text(text: str) -> str | None:
    """Metadata text, or None when it is empty, a file name or scanning debris."""
    text = " ".join(text.split())
    if not text or '"' in text or "\\" in text:
        return None
    if re.search(r"\.(mxl|xml|musicxml|krn|abc)$", text, re.IGNORECASE):
        return None
    return text if sum(ch.isalpha() for ch in text) >= 0.6 * len(text) else None


def _title(piece: _Piece) -> str:
    """Display title: chorale title, else usable score metadata, else the corpus path."""
    info = piece.info
    title = _clean_text(info.title) if piece.spec.trust_titles else None
    return info.tune or title or " ".join(Path(info.ref.path).with_suffix("").parts[1:])


_COMPOSER_DIRS = {
    "beethoven": "Ludwig van Beethoven",
    "haydn": "Joseph Haydn",
    "mozart": "Wolfgang Amadeus Mozart",
    "schumann_robert": "Robert Schumann",
    "schumann_clara": "Clara Schumann",
    "chopin": "Frederic Chopin",
    "joplin": "Scott Joplin",
    "schubert": "Franz Schubert",
    "verdi": "Giuseppe Verdi",
    "weber": "Carl Maria von Weber",
    "handel": "George Frideric Handel",
    "corelli": "Arcangelo Corelli",
    "cpebach": "Carl Philipp Emanuel Bach",
    "beach": "Amy Beach",
    "josquin": "Josquin des Prez",
    "ciconia": "Johannes Ciconia",
}


def _composer(piece: _Piece) -> str:
    """The collection's composer; for mixed collections the corpus folder's, else the score's."""
    if not piece.spec.composer.startswith("various"):
        return piece.spec.composer
    top = piece.info.ref.path.split("/")[0]
    return _COMPOSER_DIRS.get(top) or _clean_text(piece.info.composer) or piece.spec.composer


def _execute_job(args: tuple[_Job, str, _RenderContext]) -> Query | Negative | str:
    """Pool job: run `_execute`; an error message replaces the record on failure."""
    job, out_dir, ctx = args
    try:
        return _execute(job, Path(out_dir), ctx)
    except Exception as exc:
        return f"{job.id}: {type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------- build


def _link(src: Path, dst: Path) -> None:
    """Hard-link (or copy) a cached file into the corpus directory atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete audio files from an earlier build that this manifest no longer lists."""
    for sub in ("catalogue", "queries", "negatives"):
        base = out_dir / sub
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.is_file() and path.relative_to(out_dir).as_posix() not in keep:
                path.unlink()


def check_tools(soundfont: Path) -> None:
    """Fail early when FluidSynth or the soundfont is missing."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth not found: apt-get install -y fluidsynth")
    if not soundfont.exists():
        raise RuntimeError(f"{soundfont} not found: apt-get install -y fluid-soundfont-gm")


def build_corpus(
    out_dir: Path,
    *,
    size: Size | SizePreset = "small",
    seed: int = 0,
    sample_rate: int = 22050,
    workers: int | None = None,
    cache_dir: Path | None = None,
    soundfont: Path | None = None,
    progress: bool = False,
) -> Manifest:
    """Build (or refresh) the corpus in `out_dir` and return its manifest.

    Renderings are cached in `cache_dir` (default `out_dir/cache`); `workers` defaults to the
    number of CPUs.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    preset = SIZES[size] if isinstance(size, str) else size
    size_name = size if isinstance(size, str) else "custom"
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    soundfont = Path(soundfont or os.environ.get("ECHOLEDGER_SOUNDFONT") or DEFAULT_SOUNDFONT)
    check_tools(soundfont)
    workers = max(1, workers or os.cpu_count() or 1)
    ctx = _RenderContext(str(cache_dir), sample_rate, str(soundfont))
    runner = _Runner(workers, cache_dir / "music21", progress)
    try:
        selector = _Selector(runner, cache_dir, seed, preset.max_piece_s)
        main = [s for s in COLLECTIONS if s.role == "catalogue"]
        other = [s for s in COLLECTIONS if s.role == "other"]
        catalogue, audio = _select_catalogue(selector, runner, main, preset.catalogue, ctx)
        log.info("catalogue rendered after %.1fs", time.monotonic() - started)
        hard = _take_quota(selector, main, preset.hard_negatives)
        others = _take_quota(selector, other, preset.other_negatives)
        fillers = _take_quota(selector, other, preset.fillers)
        log.info(
            "selected %d catalogue, %d hard, %d other, %d filler pieces in %.1fs",
            len(catalogue),
            len(hard),
            len(others),
            len(fillers),
            time.monotonic() - started,
        )

        pieces = []
        for piece in catalogue:
            rel = f"catalogue/{piece.id}.flac"
            _link(Path(audio[piece.id]), out_dir / rel)
            duration = sf.info(audio[piece.id]).frames / sample_rate
            ref = piece.info.ref
            pieces.append(
                CataloguePiece(
                    piece.id,
                    _title(piece),
                    piece.spec.name,
                    _composer(piece),
                    ref.path,
                    ref.number,
                    piece.info.tune,
                    piece.palette,
                    piece.programs,
                    piece.voicing.tempo[0][1]
                    if piece.voicing.tempo and piece.voicing.tempo[0][0] == 0
                    else piece.voicing.qpm,
                    round(duration, 6),
                    rel,
                )
            )

        planner = _Planner(sample_rate)
        jobs = _plan_queries(catalogue, audio, fillers, preset, seed, planner)
        jobs += _plan_negatives(hard, "hard_negative", seed, planner)
        jobs += _plan_negatives(others, "other_negative", seed, planner)
        results = runner.map(_execute_job, [(j, str(out_dir), ctx) for j in jobs], desc="queries")
    finally:
        runner.close()

    queries = [r for r in results if isinstance(r, Query)]
    negatives = [r for r in results if isinstance(r, Negative)]
    errors = [r for r in results if isinstance(r, str)]
    for message in errors:
        log.warning("skipped %s", message)
    info = {
        "music21_version": _music21_version(),
        "fluidsynth": fluidsynth_version(),
        "soundfont": soundfont.name,
        "preset": asdict(preset),
        "collections": dict(sorted(Counter(p.collection for p in pieces).items())),
        "rejected_candidates": dict(sorted(selector.rejected.items())),
        "failed_scores": selector.failures,
        "failed_files": errors,
    }
    manifest = Manifest(out_dir, seed, size_name, sample_rate, pieces, queries, negatives, info)
    keep = {p.file for p in pieces} | {q.file for q in queries} | {n.file for n in negatives}
    _remove_stale(out_dir, keep)
    _write_json(out_dir / "manifest.json", manifest.to_json())
    log.info("corpus built in %.1fs: %s", time.monotonic() - started, out_dir)
    return manifest


def _select_catalogue(
    selector: _Selector,
    runner: _Runner,
    specs: Sequence[CollectionSpec],
    total: int,
    ctx: _RenderContext,
) -> tuple[list[_Piece], dict[str, str]]:
    """Choose and render catalogue pieces, replacing any whose rendering fails."""
    chosen: list[_Piece] = []
    audio: dict[str, str] = {}
    pending = _take_quota(selector, specs, total)
    log.info("catalogue scores chosen")
    while pending:
        results = runner.map(
            _render_full_job, [(p.voicing, ctx) for p in pending], desc="catalogue"
        )
        failed: list[_Piece] = []
        for piece, (path, error) in zip(pending, results, strict=True):
            if error:
                log.warning("skipping %s: render failed: %s", piece.info.ref.key, error)
                selector.failures.append({"score": piece.info.ref.key, "reason": error})
                failed.append(piece)
            else:
                chosen.append(piece)
                audio[piece.id] = path
        pending = []
        for piece in failed:
            pending += selector.take(piece.spec, 1)
    order = {p.id: i for i, p in enumerate(_take_order(chosen, specs))}
    return sorted(chosen, key=lambda p: order[p.id]), audio


def _take_order(pieces: list[_Piece], specs: Sequence[CollectionSpec]) -> list[_Piece]:
    """Pieces grouped by collection in collection order (stable within a collection)."""
    rank = {s.name: i for i, s in enumerate(specs)}
    return sorted(pieces, key=lambda p: rank[p.spec.name])


def _music21_version() -> str:
    """Installed music21 version."""
    import music21

    return str(music21.__version__)


# --------------------------------------------------------------------------- summary and checks


def summarize(manifest: Manifest) -> dict[str, Any]:
    """Counts, audio hours and disk size of a built corpus."""
    files = [manifest.path(p.file) for p in manifest.catalogue]
    files += [manifest.path(q.file) for q in manifest.queries]
    files += [manifest.path(n.file) for n in manifest.negatives]
    seconds = {
        "catalogue": sum(p.duration_s for p in manifest.catalogue),
        "queries": sum(q.duration_s for q in manifest.queries),
        "negatives": sum(n.duration_s for n in manifest.negatives),
    }
    return {
        "catalogue_pieces": len(manifest.catalogue),
        "queries": dict(Counter(q.transformation for q in manifest.queries)),
        "negatives": dict(Counter(n.kind for n in manifest.negatives)),
        "catalogue_per_collection": dict(Counter(p.collection for p in manifest.catalogue)),
        "hard_negatives_per_collection": dict(
            Counter(n.collection for n in manifest.negatives if n.kind == "hard_negative")
        ),
        "other_negatives_per_collection": dict(
            Counter(n.collection for n in manifest.negatives if n.kind == "other_negative")
        ),
        "instrumentations": dict(Counter(p.instrumentation for p in manifest.catalogue)),
        "audio_hours": {k: round(v / 3600, 3) for k, v in seconds.items()},
        "total_audio_hours": round(sum(seconds.values()) / 3600, 3),
        "output_megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 1),
    }


def _segment(manifest: Manifest, span: SourceSpan, extra_s: float = 0.0) -> np.ndarray:
    """Catalogue audio of a span (optionally longer at the end)."""
    sr = manifest.sample_rate
    path = manifest.path(manifest.piece(span.piece_id).file)
    x, _ = au.read_mono(
        path, round(span.source_start_s * sr), round((span.source_end_s + extra_s) * sr)
    )
    return x


_HOP, _NFFT = 1024, 4096


def _chroma_match(cq: np.ndarray, cs: np.ndarray, sr: int, factor: float, shift: int) -> float:
    """Similarity of mean-removed chroma if the query is the source sped up by `factor`."""
    cq = cq - cq.mean(axis=0)
    cs = np.roll(cs - cs.mean(axis=0), shift, axis=1)
    centres = (np.arange(cq.shape[0]) * _HOP + _NFFT / 2) / sr
    index = np.round((centres * factor * sr - _NFFT / 2) / _HOP).astype(int)
    valid = (index >= 0) & (index < cs.shape[0])
    a, b = cq[valid], cs[index[valid]]
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9
    return float(np.mean(np.sum(a * b, axis=1) / norm))


def _check_query(manifest: Manifest, query: Query) -> dict[str, float]:
    """Measurements showing that a query's transformation happened as recorded."""
    sr = manifest.sample_rate
    q, _ = au.read_mono(manifest.path(query.file))
    span = query.sources[0]
    name = query.transformation
    qs, qe = round(span.query_start_s * sr), round(span.query_end_s * sr)
    if name in TEMPO_FACTORS:
        source = _segment(manifest, span, extra_s=(span.source_end_s - span.source_start_s) * 0.2)
        factors = np.round(np.arange(0.85, 1.1501, 0.01), 2)
        cq, cs = au.chroma(q, sr, _HOP, _NFFT), au.chroma(source, sr, _HOP, _NFFT)
        scores = [_chroma_match(cq, cs, sr, float(f), 0) for f in factors]
        best = float(factors[int(np.argmax(scores))])
        ratio = (span.source_end_s - span.source_start_s) / (q.size / sr)
        return {
            "duration_ratio": ratio,
            "estimated_factor": best,
            "ok": float(abs(best - span.tempo_factor) < 0.015),
        }
    source = _segment(manifest, span)
    if name in TRANSPOSITIONS or name == "reinstrument":
        cq, cs = au.chroma(q, sr, _HOP, _NFFT), au.chroma(source, sr, _HOP, _NFFT)
        scores = [_chroma_match(cq, cs, sr, 1.0, k) for k in range(12)]
        shift = int(np.argmax(scores))
        shift = shift - 12 if shift > 6 else shift
        timbre = float(
            np.sqrt(np.mean((au.band_profile_db(q, sr) - au.band_profile_db(source, sr)) ** 2))
        )
        ok = shift == span.transpose
        if name == "reinstrument":
            ok = ok and all(
                a != b
                for a, b in zip(
                    query.params["programs"], query.params["original_programs"], strict=True
                )
            )
        return {"chroma_shift": shift, "timbre_distance_db": timbre, "ok": float(ok)}
    if name == "mix2":
        second = _segment(manifest, query.sources[1])
        snr, coef = au.fit_snr_db(q, [source, second])
        energy = [abs(c) * au.rms(s) for c, s in zip(coef, [source, second], strict=True)]
        share = energy[0] ** 2 / (energy[0] ** 2 + energy[1] ** 2)
        return {
            "fit_snr_db": snr,
            "first_source_share": share,
            "ok": float(snr > 30 and 0.15 < share < 0.85),
        }
    region = q[qs:qe]
    snr, _ = au.fit_snr_db(region, [source])
    result: dict[str, float] = {"fit_snr_db": min(snr, 99.0)}
    if name == "clean":
        result["ok"] = float(snr > 60)
    elif name == "gain":
        measured = au.amp_to_db(au.rms(region) / au.rms(source))
        result["gain_db_error"] = measured - query.params["gain_db"]
        result["ok"] = float(abs(measured - query.params["gain_db"]) < 0.1 and au.peak(q) < 1)
    elif name.startswith("noise"):
        result["snr_error_db"] = snr - query.params["snr_db"]
        result["ok"] = float(abs(snr - query.params["snr_db"]) < 1.0)
    elif name == "lossy":
        result["residual_lag"] = au.estimate_lag(source, region, 2048)
        result["kbps"] = query.params["kbps"]
        result["ok"] = float(5 < snr < 35 and result["residual_lag"] == 0)
    elif name == "embedded":
        outside = np.concatenate([q[: qs - sr], q[qe + sr :]])
        result["duration_s"] = q.size / sr
        result["outside_energy_share"] = au.rms(outside) ** 2 / (au.rms(q) ** 2 + 1e-12)
        result["ok"] = float(snr > 40 and abs(q.size / sr - EMBED_TOTAL_S) < 1e-3)
    return result


def check_corpus(out_dir: Path) -> dict[str, dict[str, float]]:
    """Verify every query's transformation; median measurements and pass rate per set."""
    manifest = load_manifest(out_dir)
    rows: dict[str, list[dict[str, float]]] = {}
    for query in manifest.queries:
        rows.setdefault(query.transformation, []).append(_check_query(manifest, query))
    catalogue_paths = {(p.score_path, p.score_number) for p in manifest.catalogue}
    for neg in manifest.negatives:
        disjoint = (neg.score_path, neg.score_number) not in catalogue_paths
        rows.setdefault(neg.kind, []).append({"duration_s": neg.duration_s, "ok": float(disjoint)})
    summary: dict[str, dict[str, float]] = {}
    for name, results in rows.items():
        keys = sorted({k for r in results for k in r})
        summary[name] = {"n": float(len(results))}
        summary[name].update(
            {
                f"median_{k}": float(np.median([r[k] for r in results if k in r]))
                for k in keys
                if k != "ok"
            }
        )
        summary[name]["pass_rate"] = float(np.mean([r["ok"] for r in results]))
    return summary


def format_check(summary: dict[str, dict[str, float]]) -> str:
    """Plain-text table of `check_corpus` results."""
    lines = []
    for name, values in summary.items():
        cells = ", ".join(f"{k}={v:.3g}" for k, v in values.items())
        lines.append(f"{name:>16}: {cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=Path(".echoledger/corpus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="render cache (default OUT/cache)")
    parser.add_argument("--soundfont", type=Path, default=None)
    parser.add_argument("--check", action="store_true", help="verify the transformations after")
    parser.add_argument("--check-only", action="store_true", help="verify an existing corpus")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(relativeCreated)8.0fms %(levelname)s %(name)s: %(message)s",
    )
    if not args.check_only:
        started = time.monotonic()
        manifest = build_corpus(
            args.out,
            size=args.size,
            seed=args.seed,
            sample_rate=args.sample_rate,
            workers=args.workers,
            cache_dir=args.cache,
            soundfont=args.soundfont,
            progress=sys.stderr.isatty(),
        )
        report = summarize(manifest)
        report["build_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(report, indent=1))
    if args.check or args.check_only:
        summary = check_corpus(args.out)
        print(format_check(summary))
        if any(v["pass_rate"] < 1.0 for v in summary.values()):
            return 1
    return 0


if __name__ == "__main__":
    from bench import corpus as _corpus  # run under the package name so pool workers can import

    sys.exit(_corpus.main())
