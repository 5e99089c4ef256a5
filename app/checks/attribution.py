"""Attribution: align nearest-neighbour hits per catalogue track and score the resemblance.

Pure numpy, no HTTP or SQL. Two entry points:

* `attribute` works on search results already mapped to (track index, reference window
  start): top-k hits per query window in, scored tracks with evidence out.
* `attribute_vectors` is the whole check after embedding: it searches the query vectors (and
  their query-side transpositions) through a caller-supplied `search` function, calls
  `attribute`, then explains the sources it found away and searches again, so that a quieter
  second source of a mix is found too.

Alignment
---------
A real use of a recording shows up as hits whose reference time follows the query time along
a line, ``reference = ratio * query + offset``, with ``ratio`` the tempo ratio (reference speed
over query speed) in ``[tempo_min, tempo_max]``. For each track (and query variant, e.g. one
transposition), hits are voted into a (ratio, offset) grid, one vote per query window,
weighted by similarity. The best cell's inliers (hits within ``offset_tolerance_s`` of the line)
are split into runs wherever the query skips more than ``max_gap_s``; runs of at least
``min_run_hits`` windows spanning at least ``min_run_s`` become evidence. The inliers are
removed and the search repeats (a track can be used more than once). Hits scattered over a
track (music that is merely similar) do not line up and yield no runs.

Scoring
-------
Each query window's best inlier similarity ``s`` maps to a quality
``u = clip((s - similarity_floor) / (similarity_full - similarity_floor), 0, 1)``; query
windows inside a run's span without an inlier count as 0. A run covers the windows of its span
with its mean quality; where runs overlap the best counts. Each window stands for one query hop
of time (its centre slot), so the query offers ``offered = n_windows * hop`` seconds to cover,
its duration minus about one window. Then

    resemblance = min(1, covered / clip(offered, min_evidence_s, full_coverage_s))

* ``full_coverage_s`` caps what full coverage asks for: a borrowing of ``full_coverage_s`` plus
  one window or more inside a longer piece scores like a whole-piece use; shorter borrowings
  score in proportion to their length.
* ``min_evidence_s`` keeps a very short query, where one chance run can cover everything, from
  reaching full resemblance on little evidence.
* Counting window centres rather than whole windows keeps short runs from claiming a whole
  window length each.

Tracks below ``abstain_threshold`` are dropped; the threshold is calibrated on music that is
not in the catalogue (``python -m bench.attribution --calibrate``, written to calibration.json).

Explaining away
---------------
In a mix of two recordings every window vector is a blend, and the quieter source's similarity
sits near the level of unrelated music. Once a source is found (resemblance at or above
``explain_threshold``, set below the abstain threshold), `attribute_vectors` removes, from each
query window vector it aligns with, the component along the matched reference vector (a
projection), renormalises and searches again with the explained tracks excluded; a track keeps
its best score over the passes. Each pass explains away the strongest source not yet explained
(greedy, like matching pursuit: removing a quieter source at the same time would also remove
what the search looks for). What is left of a single-source query is noise that matches nothing
consistently; what is left of a mix is mostly the other source. With two or more sources found,
each is scored once more with the others explained away. The abstain threshold filters only the
final scores, so calibrating it on a run with the threshold at zero is exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.config import DEFAULT_CALIBRATION
from app.index.base import SearchResult

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64] | npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Neighbouring hits this much less similar than a window's best hit no longer pull its
# reference time (see _subgrid_refs).
_SUBGRID_SIM_SPAN = 0.05


@dataclass(frozen=True, slots=True)
class Evidence:
    """One time-consistent run: query interval, matching reference interval, mean similarity.

    variant : label of the query variant the run was found with; for `attribute_vectors` the
        query-side transposition in semitones (the query sounds ``-variant`` semitones away
        from the reference), 0 when the query was searched as is
    """

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    similarity: float
    variant: int = 0


@dataclass(frozen=True, slots=True)
class TrackMatch:
    """A catalogue track the query resembles, with its runs sorted by query time.

    hits : (query window, column) of the inlier hit of each query window the runs cover,
        indexes into the [n, k] arrays given to `attribute`
    """

    track: int
    resemblance: float
    evidence: tuple[Evidence, ...]
    hits: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class AttributionParams:
    """Search, alignment and scoring constants; `load` reads a calibration file."""

    query_hop_s: float = 0.5  # hop between query windows
    transpositions: tuple[int, ...] = (
        -2,
        -1,
        0,
        1,
        2,
    )  # semitone shifts the query is also searched at
    k: int = 20  # neighbours per query window and variant
    similarity_floor: float = 0.6
    similarity_full: float = 0.9
    tempo_min: float = 0.85
    tempo_max: float = 1.15
    tempo_step: float = 0.02  # log-spaced ratio grid step
    offset_tolerance_s: float = 1.5
    max_gap_s: float = 4.0
    min_run_s: float = 2.0
    min_run_hits: int = 3
    max_runs_per_track: int = 4
    full_coverage_s: float = 16.0
    min_evidence_s: float = 4.0
    residual_passes: int = 1  # explain-away rounds in `attribute_vectors`; 0 turns it off
    explain_threshold: float = 0.1  # resemblance from which a match is explained away
    abstain_threshold: float = 0.3

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.k < 1:
            problems.append(f"k={self.k} must be >= 1")
        if not self.transpositions or len(set(self.transpositions)) != len(self.transpositions):
            problems.append(f"transpositions={self.transpositions} must be distinct, not empty")
        if not -1.0 <= self.similarity_floor < self.similarity_full <= 1.0:
            problems.append(
                f"need -1 <= similarity_floor ({self.similarity_floor}) < similarity_full "
                f"({self.similarity_full}) <= 1"
            )
        if not 0 < self.tempo_min <= 1.0 <= self.tempo_max:
            problems.append(
                f"need 0 < tempo_min <= 1 <= tempo_max, got {self.tempo_min}..{self.tempo_max}"
            )
        for name in ("query_hop_s", "tempo_step", "offset_tolerance_s", "max_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name}={value} must be positive")
        if not 0 <= self.min_evidence_s <= self.full_coverage_s:
            problems.append(
                f"need 0 <= min_evidence_s ({self.min_evidence_s}) <= full_coverage_s "
                f"({self.full_coverage_s}), full_coverage_s > 0"
            )
        if self.full_coverage_s <= 0:
            problems.append(f"full_coverage_s={self.full_coverage_s} must be positive")
        if self.min_run_s < 0:
            problems.append(f"min_run_s={self.min_run_s} must be >= 0")
        if self.min_run_hits < 2:
            problems.append(f"min_run_hits={self.min_run_hits} must be >= 2")
        if self.max_runs_per_track < 1:
            problems.append(f"max_runs_per_track={self.max_runs_per_track} must be >= 1")
        if self.residual_passes < 0:
            problems.append(f"residual_passes={self.residual_passes} must be >= 0")
        if not 0.0 <= self.explain_threshold <= 1.0:
            problems.append(f"explain_threshold={self.explain_threshold} must be in 0..1")
        if not 0.0 <= self.abstain_threshold <= 1.0:
            problems.append(f"abstain_threshold={self.abstain_threshold} must be in 0..1")
        if problems:
            raise ValueError("invalid attribution parameters: " + "; ".join(problems))

    @classmethod
    def load(cls, path: Path = DEFAULT_CALIBRATION) -> AttributionParams:
        """Read the ``params`` object of a calibration file; unknown names are an error."""
        data = json.loads(path.read_text())
        raw = data.get("params") if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object with a 'params' object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AttributionParams:
        """Build from JSON values; unknown names and wrong types are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown attribution parameters: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(cls, name)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                ):
                    raise ValueError(f"attribution parameter {name}={value!r} must be int list")
                value = tuple(value)
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"attribution parameter {name}={value!r} must be an int")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"attribution parameter {name}={value!r} must be a number")
            values[name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values (recorded with every check)."""
        out = asdict(self)
        out["transpositions"] = list(self.transpositions)
        return out


# --------------------------------------------------------------------------- the whole check


Search = Callable[[npt.NDArray[np.float32]], SearchResult]
Reconstruct = Callable[[I64], npt.NDArray[np.float32]]
Transpose = Callable[[npt.NDArray[np.float32], int], npt.NDArray[np.float32]]


def attribute_vectors(
    *,
    vectors: npt.NDArray[np.float32],
    query_starts: FloatArray,
    window_s: float,
    query_duration_s: float,
    search: Search,
    params: AttributionParams,
    transpose: Transpose | None = None,
    reconstruct: Reconstruct | None = None,
) -> list[TrackMatch]:
    """Search, align and score the window vectors of one query (a check after embedding).

    vectors : np.ndarray [shape=(n, d), dtype=float32], L2-normalised query window vectors
    query_starts : np.ndarray [shape=(n,)], their start times (s)
    search : vectors [m, d] -> SearchResult with k = params.k columns
    transpose : (vectors, semitones) -> the vectors of the query transposed by that much;
        needed when params.transpositions is not (0,) (SpectralEmbedder.transpose)
    reconstruct : segment ids [m] -> stored vectors [m, d]; needed for explaining away
        (params.residual_passes > 0), skipped without it

    Returns the tracks at or above ``params.abstain_threshold``, best first. Evidence
    ``variant`` is the transposition (semitones) the run was found at.
    """
    shifts = params.transpositions
    if shifts != (0,) and transpose is None:
        raise ValueError(f"transpositions {shifts} need a transpose function")
    base = np.ascontiguousarray(vectors, dtype=np.float32)
    if base.ndim != 2 or base.shape[0] != np.shape(query_starts)[0]:
        raise ValueError(
            f"vectors {base.shape} and query_starts {np.shape(query_starts)} do not match"
        )

    def search_variants(q: npt.NDArray[np.float32]) -> tuple[SearchResult, I64]:
        # One search call for all variants: a flat index answers a batch with one matrix
        # product, which is much cheaper than one product per variant.
        views = [q if shift == 0 or transpose is None else transpose(q, shift) for shift in shifts]
        batch = search(np.ascontiguousarray(np.concatenate(views), dtype=np.float32))
        return _stack({shift: _rows(batch, i, q.shape[0]) for i, shift in enumerate(shifts)})

    # Score everything, explain away the matches at or above explain_threshold, abstain only
    # at the end: the scores do not depend on the abstain threshold, so calibrating it on the
    # final scores of a run with the threshold at zero is exact.
    scoring = replace(params, abstain_threshold=0.0)
    found: dict[int, tuple[TrackMatch, SearchResult, I64]] = {}

    def keep_best(result: SearchResult, variants: I64) -> None:
        for m in attribute(
            query_starts=query_starts,
            window_s=window_s,
            query_duration_s=query_duration_s,
            similarities=result.similarities,
            tracks=result.tracks,
            reference_starts=result.reference_starts,
            params=scoring,
            variants=variants,
        ):
            if m.track not in found or m.resemblance > found[m.track][0].resemblance:
                found[m.track] = (m, result, variants)

    keep_best(*search_variants(base))
    explained: list[int] = []
    # Stored vectors aligned with the query, per source (read once: `reconstruct` is I/O).
    aligned: dict[int, npt.NDArray[np.float32]] = {}
    # Sets of explained-away sources the query was searched without; every other track was
    # scored in that search.
    searched: set[frozenset[int]] = set()

    def explain_away(tracks: frozenset[int]) -> tuple[SearchResult, I64]:
        assert reconstruct is not None
        for t in tracks:
            if t not in aligned:
                aligned[t] = _aligned_references(*found[t], base.shape, reconstruct, transpose)
        searched.add(tracks)
        return search_variants(residual_vectors(base, [aligned[t] for t in sorted(tracks)]))

    passes = params.residual_passes if reconstruct is not None else 0
    for _ in range(passes):
        # Greedy, strongest first: explaining away a quieter source too would also remove
        # what the search is looking for.
        waiting = [
            t
            for t in found
            if t not in explained and found[t][0].resemblance >= params.explain_threshold
        ]
        if not waiting:
            break
        explained.append(max(waiting, key=lambda t: (found[t][0].resemblance, -t)))
        result, variants = explain_away(frozenset(explained))
        blocked = np.isin(result.tracks, np.array(explained, dtype=np.int64))
        keep_best(result._replace(tracks=np.where(blocked, -1, result.tracks)), variants)
    if explained and reconstruct is not None:
        # Each source found so far is scored once more with the others explained away: in a
        # mix, the louder source also masks the quieter one's partner in the first pass.
        sources = frozenset(t for t in found if found[t][0].resemblance >= params.explain_threshold)
        if len(sources) < 2:
            sources = frozenset()
        for t in sources - aligned.keys():  # as found before any is scored again
            aligned[t] = _aligned_references(*found[t], base.shape, reconstruct, transpose)
        for track in sorted(sources):
            others = sources - {track}
            if others in searched:
                continue  # `track` was scored in that search already
            result, variants = explain_away(others)
            only = np.where(result.tracks == track, track, -1)
            keep_best(result._replace(tracks=only), variants)
    matches = [m for m, _, _ in found.values() if m.resemblance >= params.abstain_threshold]
    matches.sort(key=lambda m: (-m.resemblance, m.track))
    return matches


def residual_vectors(
    vectors: npt.NDArray[np.float32], references: list[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """Remove from each row of `vectors` its components along the rows of `references`.

    vectors : np.ndarray [shape=(n, d)], L2-normalised
    references : arrays [n, d], one per explained source, all-zero rows where the source does
        not cover that window
    Returns [n, d] float32 rows, renormalised (rows with nothing left stay zero).
    """
    out = np.array(vectors, dtype=np.float64)
    basis: list[F64] = []
    for ref in references:
        u = np.array(ref, dtype=np.float64)
        for b in basis:  # Gram-Schmidt, so overlapping sources are removed once
            u -= np.sum(u * b, axis=1, keepdims=True) * b
        norm = np.linalg.norm(u, axis=1, keepdims=True)
        u = np.divide(u, norm, out=np.zeros_like(u), where=norm > 1e-6)
        basis.append(u)
        out -= np.sum(out * u, axis=1, keepdims=True) * u
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    result: npt.NDArray[np.float32] = np.divide(
        out, norm, out=np.zeros_like(out), where=norm > 1e-6
    ).astype(np.float32)
    return result


def _rows(result: SearchResult, part: int, m: int) -> SearchResult:
    """Rows part*m .. (part+1)*m of a batched search result."""
    rows = slice(part * m, (part + 1) * m)
    return SearchResult(
        similarities=result.similarities[rows],
        tracks=result.tracks[rows],
        reference_starts=result.reference_starts[rows],
        segments=result.segments[rows],
    )


def _stack(results: Mapping[int, SearchResult]) -> tuple[SearchResult, I64]:
    """Join per-variant results along k; returns the joined result and each column's label."""
    labels = sorted(results)
    parts = [results[v] for v in labels]
    joined = SearchResult(
        similarities=np.concatenate([np.asarray(p.similarities, np.float64) for p in parts], 1),
        tracks=np.concatenate([np.asarray(p.tracks, np.int64) for p in parts], 1),
        reference_starts=np.concatenate(
            [np.asarray(p.reference_starts, np.float64) for p in parts], 1
        ),
        segments=np.concatenate([np.asarray(p.segments, np.int64) for p in parts], 1),
    )
    variants = np.concatenate(
        [np.full(np.shape(results[v].tracks), v, dtype=np.int64) for v in labels], axis=1
    )
    return joined, variants


def _aligned_references(
    match: TrackMatch,
    result: SearchResult,
    variants: I64,
    shape: tuple[int, ...],
    reconstruct: Reconstruct,
    transpose: Transpose | None,
) -> npt.NDArray[np.float32]:
    """The stored vector each covered query window aligned with, in the query's orientation."""
    out = np.zeros(shape, dtype=np.float32)
    if not match.hits:
        return out
    rows = np.array([i for i, _ in match.hits], dtype=np.int64)
    cols = np.array([j for _, j in match.hits], dtype=np.int64)
    segments = np.asarray(result.segments)[rows, cols].astype(np.int64)
    ok = segments >= 0
    rows, cols, segments = rows[ok], cols[ok], segments[ok]
    if rows.size == 0:
        return out
    stored = np.asarray(reconstruct(segments), dtype=np.float32)
    shift = variants[rows, cols]
    for s in np.unique(shift):
        pick = shift == s
        # A hit found at transposition s matched transpose(query, s): undo it on the reference.
        vecs = stored[pick] if s == 0 or transpose is None else transpose(stored[pick], -int(s))
        out[rows[pick]] = vecs
    return out


# --------------------------------------------------------------------------- hits -> matches


def attribute(
    *,
    query_starts: FloatArray,
    window_s: float,
    query_duration_s: float,
    similarities: FloatArray,
    tracks: IntArray,
    reference_starts: FloatArray,
    params: AttributionParams,
    variants: IntArray | None = None,
) -> list[TrackMatch]:
    """Group top-k hits per track into time-consistent runs and score each track.

    query_starts : np.ndarray [shape=(n,)], query window start times in seconds, increasing
    window_s : window length in seconds (query and reference windows alike)
    query_duration_s : length of the query audio in seconds
    similarities : np.ndarray [shape=(n, k)], cosine similarity of each hit
    tracks : np.ndarray [shape=(n, k)], track index of each hit; -1 where there is no hit
    reference_starts : np.ndarray [shape=(n, k)], start of the hit's reference window (s)
    variants : np.ndarray [shape=(n, k)], optional integer label of the query variant each
        hit was found with (e.g. a query-side transposition); a run only joins hits of one
        variant, so chance hits of different variants cannot add up

    Returns the tracks with ``resemblance >= params.abstain_threshold``, sorted by
    resemblance (highest first, ties by track index).
    """
    q = np.asarray(query_starts, dtype=np.float64)
    sims = np.asarray(similarities, dtype=np.float64)
    trk_raw = np.asarray(tracks)
    ref = np.asarray(reference_starts, dtype=np.float64)
    if q.ndim != 1:
        raise ValueError(f"query_starts must be 1-D, got shape={q.shape}")
    n = q.shape[0]
    if sims.ndim != 2 or sims.shape[0] != n:
        raise ValueError(f"similarities must have shape ({n}, k), got {sims.shape}")
    if trk_raw.shape != sims.shape or ref.shape != sims.shape:
        raise ValueError(
            f"similarities {sims.shape}, tracks {trk_raw.shape} and reference_starts {ref.shape} "
            "must have the same shape"
        )
    if not np.issubdtype(trk_raw.dtype, np.integer):
        raise ValueError(f"tracks must be integers, got dtype={trk_raw.dtype}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be positive, got {window_s}")
    if not (math.isfinite(query_duration_s) and query_duration_s > 0):
        raise ValueError(f"query_duration_s must be positive, got {query_duration_s}")
    labels = _variant_labels(variants, sims.shape)
    if n == 0:
        return []
    if n > 1 and not np.all(np.diff(q) > 0):
        raise ValueError("query_starts must be strictly increasing")
    trk = trk_raw.astype(np.int64)

    keep = (trk >= 0) & np.isfinite(sims) & (sims >= params.similarity_floor) & np.isfinite(ref)
    if not keep.any():
        return []
    rows, cols = np.nonzero(keep)
    # Runs are searched per group: one track and one query variant.
    values, label_index = np.unique(labels[rows, cols], return_inverse=True)
    n_var = values.size
    group = trk[rows, cols] * n_var + label_index
    order = np.argsort(group, kind="stable")
    hits = _Hits(
        group=group[order],
        window=rows[order],
        column=cols[order],
        ref=ref[rows, cols][order],
        sim=sims[rows, cols][order],
    )
    ratios = _ratio_grid(params)
    viable = _viable_groups(hits, q, ratios, params)
    bounds = np.flatnonzero(np.diff(hits.group)) + 1
    query_hop = float(np.median(np.diff(q))) if n > 1 else window_s

    runs_of: dict[int, list[_Run]] = {}
    for g in np.split(np.arange(hits.group.size), bounds):
        key = int(hits.group[g[0]])
        if key not in viable:
            continue
        variant = int(values[key % n_var])
        runs = _find_runs(hits.take(g), q, ratios, window_s, query_duration_s, variant, params)
        if runs:
            runs_of.setdefault(key // n_var, []).extend(runs)

    matches: list[TrackMatch] = []
    for track, runs in runs_of.items():
        resemblance = _resemblance(runs, n, query_hop, params)
        if resemblance < params.abstain_threshold:
            continue
        best: dict[int, tuple[float, int]] = {}
        for run in runs:
            for window, (sim, column) in run.hits.items():
                if window not in best or sim > best[window][0]:
                    best[window] = (sim, column)
        matches.append(
            TrackMatch(
                track=track,
                resemblance=resemblance,
                evidence=tuple(sorted((r.evidence for r in runs), key=lambda e: e.query_start)),
                hits=tuple((w, best[w][1]) for w in sorted(best)),
            )
        )
    matches.sort(key=lambda m: (-m.resemblance, m.track))
    return matches


def _variant_labels(variants: IntArray | None, shape: tuple[int, ...]) -> I64:
    if variants is None:
        return np.zeros(shape, dtype=np.int64)
    raw = np.asarray(variants)
    if raw.shape != shape or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"variants must be integers of shape {shape}, got {raw.dtype} {raw.shape}")
    return raw.astype(np.int64)


@dataclass(frozen=True, slots=True)
class _Hits:
    """Flat arrays of the hits kept, sorted by group."""

    group: I64
    window: I64  # query window (row) of the hit
    column: I64  # column of the hit in the [n, k] arrays
    ref: F64
    sim: F64

    def take(self, index: I64) -> _Hits:
        return _Hits(
            self.group[index],
            self.window[index],
            self.column[index],
            self.ref[index],
            self.sim[index],
        )


@dataclass(frozen=True, slots=True)
class _Run:
    evidence: Evidence
    first: int  # first query window index in the run
    last: int  # last query window index in the run
    quality: dict[int, float]  # query window -> quality of its inlier hit
    hits: dict[int, tuple[float, int]]  # query window -> (similarity, column) of that hit


def _viable_groups(hits: _Hits, q: F64, ratios: F64, params: AttributionParams) -> set[int]:
    """Groups with at least `min_run_hits` distinct query windows near one line.

    A vectorised pre-pass over all groups at once: most tracks get a few stray hits, and only
    the few that can hold a run go through the per-group search (long queries on a large
    catalogue stay fast). A hit votes for its offset bin and the one below, so any hits within
    ``offset_tolerance_s`` of a line at a grid ratio share a cell.
    """
    n = q.size
    ids, rank = np.unique(hits.group, return_inverse=True)
    offsets = hits.ref[None, :] - ratios[:, None] * q[hits.window][None, :]  # [R, m]
    bins = np.floor(offsets / params.offset_tolerance_s).astype(np.int64)
    bins -= int(bins.min()) - 1
    n_bins = int(bins.max()) + 1
    cells = (rank[None, :] * ratios.size + np.arange(ratios.size)[:, None]) * n_bins + bins
    cells = np.concatenate([cells, cells - 1]).ravel()
    windows = np.tile(hits.window, 2 * ratios.size)
    cell_of_pair = _distinct(cells * n + windows) // n  # sorted
    starts = np.flatnonzero(np.r_[True, cell_of_pair[1:] != cell_of_pair[:-1]])
    counts = np.diff(np.r_[starts, cell_of_pair.size])
    best = np.zeros(ids.size, dtype=np.int64)
    np.maximum.at(best, cell_of_pair[starts] // (ratios.size * n_bins), counts)
    return set(ids[best >= params.min_run_hits].tolist())


def _distinct(values: I64) -> I64:
    """Sorted distinct values (sorting beats numpy's hash-based unique on these sizes)."""
    ordered = np.sort(values, axis=None)
    out: I64 = ordered[np.r_[True, ordered[1:] != ordered[:-1]]]
    return out


def _ratio_grid(params: AttributionParams) -> F64:
    lo = math.log(params.tempo_min)
    hi = math.log(params.tempo_max)
    count = max(1, math.ceil((hi - lo) / params.tempo_step) + 1)
    grid = np.exp(np.linspace(lo, hi, count)) if count > 1 else np.array([1.0])
    # 1.0 exactly, so that unchanged tempo aligns without a rounding drift.
    out: F64 = np.unique(np.append(grid, 1.0))
    return out


def _quality(sim: F64, params: AttributionParams) -> F64:
    span = params.similarity_full - params.similarity_floor
    out: F64 = np.clip((sim - params.similarity_floor) / span, 0.0, 1.0)
    return out


def _find_runs(
    hits: _Hits,
    q: F64,
    ratios: F64,
    window_s: float,
    duration_s: float,
    variant: int,
    params: AttributionParams,
) -> list[_Run]:
    """Runs of one group: the best line, its runs, then the best line of what is left..."""
    tol = params.offset_tolerance_s
    runs: list[_Run] = []
    alive = np.ones(hits.window.size, dtype=bool)
    weight = np.maximum(_quality(hits.sim, params), 1e-3)
    n_q = int(q.size)
    for _ in range(params.max_runs_per_track):
        idx = np.flatnonzero(alive)
        if idx.size < params.min_run_hits:
            break
        offsets = hits.ref[idx][None, :] - ratios[:, None] * q[hits.window[idx]][None, :]
        bins = np.floor(offsets / tol).astype(np.int64)
        b0 = int(bins.min())
        n_bins = int(bins.max()) - b0 + 2
        # One vote per (ratio, bin, query window): the best hit of that window.
        cells = (np.arange(ratios.size)[:, None] * n_bins + (bins - b0)) * n_q
        flat = (cells + hits.window[idx][None, :]).ravel()
        w = np.broadcast_to(weight[idx][None, :], bins.shape).ravel()
        order = np.lexsort((-w, flat))  # by cell, best hit first
        flat, w = flat[order], w[order]
        first = np.r_[True, flat[1:] != flat[:-1]]
        votes = np.bincount(flat[first] // n_q, weights=w[first], minlength=ratios.size * n_bins)
        votes = votes.reshape(ratios.size, n_bins)
        # Adjacent bins together, so a line near a bin edge is not split in two.
        paired = votes[:, :-1] + votes[:, 1:]
        r_best, bin_best = np.unravel_index(int(np.argmax(paired)), paired.shape)
        line = offsets[r_best]
        near = np.abs(line - (bin_best + b0 + 1) * tol) <= tol
        offset = float(np.median(line[near]))
        inliers = idx[np.abs(line - offset) <= tol]
        alive[inliers] = False
        found = _split_runs(
            hits.take(inliers), q, float(ratios[r_best]), window_s, duration_s, variant, params
        )
        if not found:
            # The best remaining line holds no run long enough: nothing better can follow.
            break
        runs.extend(found)
    return runs


def _split_runs(
    inliers: _Hits,
    q: F64,
    ratio: float,
    window_s: float,
    duration_s: float,
    variant: int,
    params: AttributionParams,
) -> list[_Run]:
    # Best inlier hit per query window, in query order.
    order = np.lexsort((-inliers.sim, inliers.window))
    ranked = inliers.take(order)
    first_of_window = np.r_[True, ranked.window[1:] != ranked.window[:-1]]
    best = ranked.take(np.flatnonzero(first_of_window))
    refined = _subgrid_refs(ranked, best)
    t_all = q[best.window]
    gaps = np.flatnonzero(np.diff(t_all) > params.max_gap_s) + 1
    runs: list[_Run] = []
    for part in np.split(np.arange(best.window.size), gaps):
        run = best.take(part)
        t = q[run.window]
        if run.window.size < params.min_run_hits or t[-1] - t[0] < params.min_run_s:
            continue
        r_ratio, r_offset = _fit_line(t, refined[part], run.sim, ratio, params)
        q_start = float(t[0])
        q_end = min(float(t[-1]) + window_s, max(duration_s, q_start))
        ref_start = max(0.0, r_ratio * q_start + r_offset)
        ref_end = ref_start + r_ratio * (q_end - q_start)
        quality = _quality(run.sim, params)
        windows = run.window.tolist()
        runs.append(
            _Run(
                evidence=Evidence(
                    query_start=q_start,
                    query_end=q_end,
                    reference_start=float(ref_start),
                    reference_end=float(ref_end),
                    similarity=float(np.mean(run.sim)),
                    variant=variant,
                ),
                first=windows[0],
                last=windows[-1],
                quality=dict(zip(windows, quality.tolist(), strict=True)),
                hits={
                    w: (s, c)
                    for w, s, c in zip(windows, run.sim.tolist(), run.column.tolist(), strict=True)
                },
            )
        )
    return runs


def _subgrid_refs(ranked: _Hits, best: _Hits) -> F64:
    """Reference time of each window's best hit, refined between the catalogue's hops.

    Reference windows start on the catalogue's hop grid (1 s), so the best hit alone places a
    query window to within half a hop. The hits of the same line on the neighbouring grid
    points say which way the true time lies: each window's time is the mean of the best
    hit's and its neighbours' (within 1.5 hops) starts, weighted by how close their
    similarity comes to the best one's.
    """
    out = best.ref.copy()
    if ranked.window.size == best.window.size:
        return out
    pos = np.searchsorted(best.window, ranked.window)  # ranked and best share window order
    best_ref = best.ref[pos]
    best_sim = best.sim[pos]
    hop = _grid_step(ranked.ref)
    near = np.abs(ranked.ref - best_ref) <= 1.5 * hop
    weight = np.where(near, np.maximum(ranked.sim - (best_sim - _SUBGRID_SIM_SPAN), 0.0), 0.0)
    total = np.bincount(pos, weights=weight, minlength=best.window.size)
    moment = np.bincount(pos, weights=weight * ranked.ref, minlength=best.window.size)
    ok = total > 0
    out[ok] = moment[ok] / total[ok]
    return out


def _grid_step(refs: F64) -> float:
    """The smallest gap between distinct reference starts (the catalogue hop), at least 0.05 s."""
    values = np.unique(np.round(refs, 3))
    if values.size < 2:
        return 1.0
    return max(float(np.min(np.diff(values))), 0.05)


def _fit_line(
    t: F64, r: F64, sim: F64, ratio: float, params: AttributionParams
) -> tuple[float, float]:
    """Weighted least-squares line through a run's hits, ratio kept in the tempo range."""
    w = np.maximum(sim - params.similarity_floor, 1e-3)
    tm = float(np.average(t, weights=w))
    rm = float(np.average(r, weights=w))
    var = float(np.average((t - tm) ** 2, weights=w))
    slope = ratio
    if t.size >= 3 and var > 1.0:
        slope = float(np.average((t - tm) * (r - rm), weights=w)) / var
        slope = min(max(slope, params.tempo_min), params.tempo_max)
    return slope, rm - slope * tm


def _resemblance(
    runs: list[_Run], n_windows: int, query_hop_s: float, params: AttributionParams
) -> float:
    """Quality-weighted share of the query the runs cover, see the module docstring."""
    covered = np.zeros(n_windows)
    for run in runs:
        span = covered[run.first : run.last + 1]
        mean_quality = sum(run.quality.values()) / span.size
        np.maximum(span, mean_quality, out=span)
    seconds = float(covered.sum()) * query_hop_s
    offered = n_windows * query_hop_s
    denominator = min(max(offered, params.min_evidence_s), params.full_coverage_s)
    return float(min(1.0, seconds / denominator))
