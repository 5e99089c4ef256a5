"""Query planning: seeded choice of sources, windows and transformation parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.corpus.midi import timed_notes
from bench.corpus.selection import Piece, spread_programs, stable_rng
from bench.corpus.spec import (
    EMBED_EXCERPT_S,
    EMBED_FILLER_PARTS,
    EMBED_RAMP_S,
    EMBED_TOTAL_S,
    EXCERPT_S,
    FILLER_XFADE_S,
    MIN_COVERAGE,
    PALETTES,
    TRANSFORMATIONS,
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


def plan_queries(
    catalogue: list[Piece],
    audio: dict[str, str],
    fillers: list[Piece],
    preset: SizePreset,
    seed: int,
    planner: Planner,
) -> list[Job]:
    """Seeded plan of every query: sources, windows and transformation parameters."""
    jobs: list[Job] = []
    n = preset.queries_per_transformation
    for t_index, name in enumerate(TRANSFORMATIONS):
        rng = stable_rng(seed, "queries", name)
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
            fill: list[Take] = []
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
                    takes = [Take(t.piece, t.start, size, t.audio) for t in takes]
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
                Job(
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
