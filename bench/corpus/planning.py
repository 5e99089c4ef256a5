"""Query planning: seeded choice of sources, windows and transformation parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.corpus.manifest import SourceSpan
from bench.corpus.melody import SharedMelodyIndex, top_voice
from bench.corpus.midi import timed_notes
from bench.corpus.selection import Piece, spread_programs, stable_rng
from bench.corpus.spec import (
    EMBED_BORROW_S,
    EMBED_EXCERPT_S,
    EMBED_FILLER_PARTS,
    EMBED_RAMP_S,
    EMBED_TOTAL_S,
    EMBED_UNDER_DB,
    EXCERPT_S,
    FILLER_XFADE_S,
    LOSSY_SETS,
    MIN_COVERAGE,
    MIX_LEVEL_DB,
    MIX_SIZES,
    PALETTES,
    PHONE_BAND_HZ,
    QUOTE_MIN_NOTES,
    QUOTE_S,
    QUOTE_TEMPO,
    RELATED,
    REVERB_RT60_S,
    REVERB_WET,
    SECOND_SOUNDFONT,
    TRANSFORMATIONS,
    VERBATIM_S,
    SizePreset,
)


@dataclass(frozen=True)
class Take:
    """A window of a piece, in samples at the base tempo."""

    piece: Piece
    start: int
    length: int
    audio: str | None = None  # the catalogue rendering, when the piece is in the catalogue


@dataclass
class Job:
    """Everything needed to write one query or negative file."""

    id: str
    group: str  # transformation, or negative kind
    file: str
    takes: list[Take]
    params: dict[str, Any] = field(default_factory=dict)
    fillers: list[Take] = field(default_factory=list)
    seed: tuple[int, ...] = ()
    spans: list[SourceSpan] = field(default_factory=list)  # sources known when planning


class Planner:
    """Chooses excerpt windows with seeded generators, avoiding silent stretches."""

    def __init__(self, sample_rate: int) -> None:
        self.sr = sample_rate
        self._activity: dict[str, np.ndarray] = {}

    def activity(self, piece: Piece) -> np.ndarray:
        """Per-100-ms flags: does any note sound?"""
        if piece.id not in self._activity:
            notes = timed_notes(piece.voicing)
            steps = int(np.ceil(piece.end_s * 10)) + 1
            delta = np.zeros(steps + 1)
            np.add.at(delta, np.clip((notes[:, 0] * 10).astype(int), 0, steps), 1)
            np.add.at(delta, np.clip(np.ceil(notes[:, 1] * 10).astype(int), 0, steps), -1)
            self._activity[piece.id] = np.cumsum(delta)[:steps] > 0
        return self._activity[piece.id]

    def window(
        self,
        rng: np.random.Generator,
        piece: Piece,
        length_s: float,
        margin_s: float = 0.0,
        audio: str | None = None,
    ) -> Take:
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
        return Take(piece, round(best[1] * self.sr), round(length_s * self.sr), audio)

    def melodic_window(
        self, rng: np.random.Generator, piece: Piece, length_s: float, audio: str | None
    ) -> Take:
        """A window whose top voice has at least `QUOTE_MIN_NOTES` notes, if one is found.

        A quotation borrows a melody: a stretch of long held notes (slow polyphony) is none.
        """
        notes = timed_notes(piece.voicing)
        best: tuple[int, Take] | None = None
        for _ in range(8):
            take = self.window(rng, piece, length_s, 0.0, audio)
            start_s = take.start / self.sr
            count = _melody_notes(notes, start_s, start_s + take.length / self.sr)
            if best is None or count > best[0]:
                best = (count, take)
            if count >= QUOTE_MIN_NOTES:
                break
        assert best is not None
        return best[1]


def _melody_notes(notes: np.ndarray, start_s: float, end_s: float) -> int:
    """Notes of the top voice starting inside a window."""
    inside = notes[(notes[:, 0] >= start_s) & (notes[:, 0] < end_s)]
    return int(top_voice(inside).shape[0]) if inside.size else 0


def plan_queries(
    catalogue: list[Piece],
    audio: dict[str, str],
    fillers: list[Piece],
    preset: SizePreset,
    seed: int,
    planner: Planner,
    *,
    skip: Sequence[str] = (),
) -> list[Job]:
    """Seeded plan of every query: sources, windows and transformation parameters.

    Each set draws from its own generator, so adding a set leaves the others' queries as
    they were; `skip` leaves sets out (one whose tools are missing).
    """
    jobs: list[Job] = []
    for t_index, name in enumerate(TRANSFORMATIONS):
        if name in skip:
            continue
        rng = stable_rng(seed, "queries", name)
        n = preset.queries_for(t_index)
        per_query = MIX_SIZES.get(name, 1)
        needed = n * per_query
        order = np.concatenate(
            [rng.permutation(len(catalogue)) for _ in range(-(-needed // len(catalogue)))]
        )[:needed]
        for i in range(n):
            picks = _distinct(catalogue, order, i * per_query, per_query)
            job = _plan_one(name, i, picks, audio, fillers, planner, rng)
            job.seed = (seed, t_index, i)
            jobs.append(job)
    return jobs


def _distinct(catalogue: list[Piece], order: np.ndarray, start: int, count: int) -> list[Piece]:
    """`count` pieces from `order` at `start`, moving on to the next piece on a repeat."""
    picks: list[Piece] = []
    for j in order[start : start + count]:
        k = int(j)
        while any(p.id == catalogue[k].id for p in picks):
            k = (k + 1) % len(catalogue)
        picks.append(catalogue[k])
    return picks


def _plan_one(
    name: str,
    i: int,
    picks: list[Piece],
    audio: dict[str, str],
    fillers: list[Piece],
    planner: Planner,
    rng: np.random.Generator,
) -> Job:
    """One query of set `name` on the pieces `picks`."""
    job_id = f"{name}-{i:03d}"
    ext = "flac"
    params: dict[str, Any] = {}
    fill: list[Take] = []
    if name in ("embedded", "embedded-6db"):
        if name == "embedded":
            length = float(rng.uniform(*EMBED_EXCERPT_S))
        else:
            length = EMBED_BORROW_S
            params["level_db"] = EMBED_UNDER_DB
        takes = [planner.window(rng, picks[0], length, EMBED_RAMP_S, audio[picks[0].id])]
        position = float(rng.uniform(5.0, EMBED_TOTAL_S - 5.0 - length))
        params["position_s"] = round(round(position * planner.sr) / planner.sr, 6)
        seg = EMBED_TOTAL_S / EMBED_FILLER_PARTS + FILLER_XFADE_S
        chosen = rng.choice(
            len(fillers), size=EMBED_FILLER_PARTS, replace=len(fillers) < EMBED_FILLER_PARTS
        )
        fill = [planner.window(rng, fillers[k], seg + 0.01) for k in chosen]
    elif name == "quotation":
        takes = [planner.melodic_window(rng, picks[0], QUOTE_S, audio[picks[0].id])]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        params["tempo_factor"] = round(1.0 + sign * float(rng.uniform(*QUOTE_TEMPO)), 4)
        params.update(_arrangement(rng, picks[0]))
    else:
        length = VERBATIM_S if name == "verbatim16" else float(rng.uniform(*EXCERPT_S))
        takes = [planner.window(rng, p, length, 0.0, audio[p.id]) for p in picks]
        if name in MIX_SIZES:
            size = min(t.length for t in takes)
            takes = [Take(t.piece, t.start, size, t.audio) for t in takes]
            if name == "mix2":
                params["relative_gain_db"] = round(
                    float(rng.uniform(-MIX_LEVEL_DB, MIX_LEVEL_DB)), 2
                )
            else:  # every pair within MIX_LEVEL_DB of each other
                half = MIX_LEVEL_DB / 2
                gains = [round(float(g), 2) for g in rng.uniform(-half, half, size=len(takes))]
                params["gains_db"] = gains
                params["level_spread_db"] = round(max(gains) - min(gains), 2)
        elif name == "gain":
            params["gain_db"] = round(float(rng.uniform(-12.0, 6.0)), 2)
        elif name.startswith("noise"):
            params["snr_db"] = float(name.removeprefix("noise"))
            params["noise"] = str(rng.choice(["white", "pink"]))
        elif name in LOSSY_SETS:
            ext = "mp3" if i % 2 == 0 else "ogg"
            params["codec"] = ext
            if name == "phone":
                params["band_hz"] = list(PHONE_BAND_HZ)
        elif name == "reverb":
            params["rt60_s"] = round(float(rng.uniform(*REVERB_RT60_S)), 3)
            params["wet"] = round(float(rng.uniform(*REVERB_WET)), 3)
        elif name == "reinstrument":
            params.update(_reinstrument(rng, picks[0]))
        elif name == "soundfont2":
            params["soundfont"] = SECOND_SOUNDFONT.name
    return Job(job_id, name, f"queries/{name}/{job_id}.{ext}", takes, params, fill)


MIN_RELATED_S = 5.0  # of a shared melody inside a negative's excerpt to make it related

# Melody and accompaniment programs of quotations (General MIDI, 0-based).
_QUOTE_MELODY = (73, 71, 68, 65, 40, 56, 11, 22, 0, 24)
_QUOTE_CHORDS = (0, 4, 24, 25, 46, 48, 19)
_QUOTE_BASS = (32, 33, 42, 43)


def _arrangement(rng: np.random.Generator, piece: Piece) -> dict[str, Any]:
    """New instruments (none the piece's own where avoidable) and accompaniment style."""
    used = set(piece.voicing.programs)

    def pick(options: tuple[int, ...]) -> int:
        fresh = [p for p in options if p not in used] or list(options)
        choice = int(fresh[int(rng.integers(len(fresh)))])
        used.add(choice)
        return choice

    style = str(rng.choice(["block", "arpeggio"]))
    programs = [pick(_QUOTE_MELODY), pick(_QUOTE_CHORDS), pick(_QUOTE_BASS)]
    return {
        "style": style,
        "programs": programs,
        "original_programs": list(piece.voicing.programs),
    }


def _reinstrument(rng: np.random.Generator, piece: Piece) -> dict[str, Any]:
    """Another palette of the same ensemble, differing from the catalogue program of each part."""
    palettes = PALETTES[piece.spec.ensemble]
    current = piece.voicing.programs
    options: list[tuple[int, int, str, tuple[int, ...]]] = []
    for name in sorted(palettes):
        programs = spread_programs(palettes[name], len(current))
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


def plan_negatives(pieces: list[Piece], kind: str, seed: int, planner: Planner) -> list[Job]:
    """One excerpt per negative piece."""
    rng = stable_rng(seed, "negatives", kind)
    prefix = "hard" if kind == "hard_negative" else "other"
    jobs = []
    for i, piece in enumerate(pieces):
        take = planner.window(rng, piece, float(rng.uniform(*EXCERPT_S)))
        job_id = f"{prefix}-{i:03d}"
        jobs.append(Job(job_id, kind, f"negatives/{kind}/{job_id}.flac", [take]))
    return jobs


def relabel_related(
    negatives: list[Job], catalogue: list[Piece], planner: Planner
) -> tuple[list[Job], list[dict[str, Any]]]:
    """Turn negatives that carry a catalogue piece's melody into `related` queries.

    The same hymn tune in another harmonisation, or a tune filed twice, is a use of the
    catalogue piece, not a false positive. Whole melodies are compared; a negative becomes
    related when its excerpt holds at least `MIN_RELATED_S` of the shared run. Returns the
    jobs (related ones relabelled, with their source span) and a record of each match.
    """
    index = SharedMelodyIndex([top_voice(timed_notes(p.voicing)) for p in catalogue])
    found: list[dict[str, Any]] = []
    out: list[Job] = []
    for job in negatives:
        take = job.takes[0]
        shared = index.find(top_voice(timed_notes(take.piece.voicing)))
        start_s, end_s = take.start / planner.sr, (take.start + take.length) / planner.sr
        q0 = max(start_s, shared.query_start_s) if shared else 0.0
        q1 = min(end_s, shared.query_end_s) if shared else 0.0
        if shared is None or q1 - q0 < MIN_RELATED_S:
            out.append(job)
            continue
        source = catalogue[shared.piece]
        factor = shared.tempo_factor
        span = SourceSpan(
            source.id,
            round(shared.source_start_s + (q0 - shared.query_start_s) * factor, 6),
            round(shared.source_start_s + (q1 - shared.query_start_s) * factor, 6),
            round(q0 - start_s, 6),
            round(q1 - start_s, 6),
            round(factor, 4),
            shared.transpose,
        )
        record = {
            "negative": job.id,
            "kind": job.group,
            "score_path": take.piece.info.ref.path,
            "score_number": take.piece.info.ref.number,
            "catalogue_piece": source.id,
            "shared_intervals": shared.intervals,
            "shared_share": round(shared.share, 3),
        }
        found.append(record)
        related_id = f"{RELATED}-{job.id}"
        out.append(
            Job(
                related_id,
                RELATED,
                f"queries/{RELATED}/{related_id}.flac",
                job.takes,
                {k: v for k, v in record.items() if k != "negative"},
                spans=[span],
            )
        )
    return out, found
