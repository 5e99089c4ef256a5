"""Attribution: align nearest-neighbour hits per catalogue track and score the resemblance.

Pure numpy, no HTTP or SQL. The caller embeds the query, searches the index (top-k per query
window) and maps each hit to (track index, reference window start); `attribute` does the rest.

Alignment
---------
A real use of a recording shows up as hits whose reference time follows the query time along
a line, ``reference = ratio * query + offset``, with ``ratio`` the tempo ratio (reference speed
over query speed) in ``[tempo_min, tempo_max]``. For each track, hits are voted into a
(ratio, offset) grid, one vote per query window, weighted by similarity. The best cell's
inliers (hits within ``offset_tolerance_s`` of the line) are split into runs wherever the
query skips more than ``max_gap_s``; runs of at least ``min_run_hits`` windows spanning at least
``min_run_s`` become evidence.
The inliers are removed and the search repeats (a track can be used more than once).
Hits scattered over a track (music that is merely similar) do not line up, and yield no runs.

Scoring
-------
Each query window's best inlier similarity ``s`` maps to a quality
``u = clip((s - similarity_floor) / (similarity_full - similarity_floor), 0, 1)``; query
windows inside a run's span without an inlier count as 0. A run covers the windows of its span
with its mean quality; where runs overlap the best counts. Each window stands for one query hop
of time (its centre slot), so the query offers ``n_windows * hop`` seconds to cover, about its
duration minus one window. Then

    resemblance = min(1, covered_seconds / min(n_windows * hop, full_coverage_s))

Measuring coverage against ``full_coverage_s`` rather than the whole query keeps a borrowing of
``full_coverage_s + window`` seconds or more inside a longer piece at full strength; shorter
borrowings score in proportion to their length. Counting window centres rather than whole
windows keeps short, scattered runs from claiming the window length each. Tracks below
``abstain_threshold`` are dropped (the threshold is calibrated on music that is not in the
catalogue).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration.json")

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64] | npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One time-consistent run: query interval, matching reference interval, mean similarity."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    similarity: float


@dataclass(frozen=True, slots=True)
class TrackMatch:
    """A catalogue track the query resembles, with its runs sorted by query time."""

    track: int
    resemblance: float
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class AttributionParams:
    """Alignment and scoring constants; `load` reads a calibration file."""

    query_hop_s: float = 0.5
    k: int = 20
    similarity_floor: float = 0.5
    similarity_full: float = 0.9
    tempo_min: float = 0.85
    tempo_max: float = 1.15
    tempo_step: float = 0.02
    offset_tolerance_s: float = 1.5
    max_gap_s: float = 4.0
    min_run_s: float = 2.0
    min_run_hits: int = 3
    max_runs_per_track: int = 4
    full_coverage_s: float = 16.0
    abstain_threshold: float = 0.3

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.k < 1:
            problems.append(f"k={self.k} must be >= 1")
        if not -1.0 <= self.similarity_floor < self.similarity_full <= 1.0:
            problems.append(
                f"need -1 <= similarity_floor ({self.similarity_floor}) < similarity_full "
                f"({self.similarity_full}) <= 1"
            )
        if not 0 < self.tempo_min <= 1.0 <= self.tempo_max:
            problems.append(
                f"need 0 < tempo_min <= 1 <= tempo_max, got {self.tempo_min}..{self.tempo_max}"
            )
        for name in (
            "query_hop_s",
            "tempo_step",
            "offset_tolerance_s",
            "max_gap_s",
            "full_coverage_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name}={value} must be positive")
        if self.min_run_s < 0:
            problems.append(f"min_run_s={self.min_run_s} must be >= 0")
        if self.min_run_hits < 2:
            problems.append(f"min_run_hits={self.min_run_hits} must be >= 2")
        if self.max_runs_per_track < 1:
            problems.append(f"max_runs_per_track={self.max_runs_per_track} must be >= 1")
        if not 0.0 <= self.abstain_threshold <= 1.0:
            problems.append(f"abstain_threshold={self.abstain_threshold} must be in 0..1")
        if problems:
            raise ValueError("invalid attribution parameters: " + "; ".join(problems))

    @classmethod
    def load(cls, path: Path = DEFAULT_CALIBRATION) -> AttributionParams:
        """Read the ``params`` object of a calibration file; unknown names are an error."""
        data = json.loads(path.read_text())
        raw = data.get("params", data) if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object with a 'params' object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttributionParams:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown attribution parameters: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(cls, name)
            if isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"attribution parameter {name}={value!r} must be an int")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"attribution parameter {name}={value!r} must be a number")
            values[name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, float | int]:
        """The parameters as JSON-ready values (recorded with every check)."""
        return dict(asdict(self))


def attribute(
    *,
    query_starts: FloatArray,
    window_s: float,
    query_duration_s: float,
    similarities: FloatArray,
    tracks: IntArray,
    reference_starts: FloatArray,
    params: AttributionParams,
) -> list[TrackMatch]:
    """Group top-k hits per track into time-consistent runs and score each track.

    query_starts : np.ndarray [shape=(n,)], query window start times in seconds
    window_s : window length in seconds (query and reference windows alike)
    query_duration_s : length of the query audio in seconds
    similarities : np.ndarray [shape=(n, k)], cosine similarity of each hit
    tracks : np.ndarray [shape=(n, k)], track index of each hit; -1 where there is no hit
    reference_starts : np.ndarray [shape=(n, k)], start of the hit's reference window (s)

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
    trk = trk_raw.astype(np.int64, copy=False)
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be positive, got {window_s}")
    if not (math.isfinite(query_duration_s) and query_duration_s > 0):
        raise ValueError(f"query_duration_s must be positive, got {query_duration_s}")
    if n == 0:
        return []
    if n > 1 and not np.all(np.diff(q) > 0):
        raise ValueError("query_starts must be strictly increasing")

    qi = np.broadcast_to(np.arange(n)[:, None], sims.shape)
    keep = (trk >= 0) & np.isfinite(sims) & (sims >= params.similarity_floor) & np.isfinite(ref)
    if not keep.any():
        return []
    hit_track = trk[keep].astype(np.int64)
    hit_q = qi[keep]
    hit_ref = ref[keep]
    hit_sim = sims[keep]
    order = np.argsort(hit_track, kind="stable")
    hit_track = hit_track[order]
    hit_q = hit_q[order]
    hit_ref = hit_ref[order]
    hit_sim = hit_sim[order]
    ratios = _ratio_grid(params)
    viable = _viable_tracks(hit_track, hit_q, hit_ref, q, ratios, params)
    bounds = np.flatnonzero(np.diff(hit_track)) + 1
    groups = [g for g in np.split(np.arange(hit_track.size), bounds) if hit_track[g[0]] in viable]

    query_hop = float(np.median(np.diff(q))) if n > 1 else window_s
    matches: list[TrackMatch] = []
    for g in groups:
        track = int(hit_track[g[0]])
        runs = _find_runs(
            q_index=hit_q[g],
            ref=hit_ref[g],
            sim=hit_sim[g],
            q=q,
            ratios=ratios,
            window_s=window_s,
            duration_s=query_duration_s,
            params=params,
        )
        if not runs:
            continue
        resemblance = _resemblance(runs, n, query_hop, params)
        if resemblance < params.abstain_threshold:
            continue
        evidence = tuple(sorted((r.evidence for r in runs), key=lambda e: e.query_start))
        matches.append(TrackMatch(track=track, resemblance=resemblance, evidence=evidence))
    matches.sort(key=lambda m: (-m.resemblance, m.track))
    return matches


@dataclass(frozen=True, slots=True)
class _Run:
    evidence: Evidence
    first: int  # first query window index in the run
    last: int  # last query window index in the run
    quality: dict[int, float]  # query window index -> quality of its inlier hit


def _viable_tracks(
    track: npt.NDArray[np.int64],
    q_index: npt.NDArray[np.int_],
    ref: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
    ratios: npt.NDArray[np.float64],
    params: AttributionParams,
) -> set[int]:
    """Tracks with at least `min_run_hits` distinct query windows near one line.

    A vectorised pre-pass over all tracks at once: most tracks get a few stray hits, and only
    the few that can hold a run go through the per-track search (long queries on a large
    catalogue stay fast). A hit votes for its offset bin and the one below, so any hits within
    ``offset_tolerance_s`` of a line at a grid ratio share a cell.
    """
    n = q.size
    t_ids, t_rank = np.unique(track, return_inverse=True)
    offsets = ref[None, :] - ratios[:, None] * q[q_index][None, :]  # [R, m]
    bins = np.floor(offsets / params.offset_tolerance_s).astype(np.int64)
    bins -= int(bins.min()) - 1
    n_bins = int(bins.max()) + 1
    r_idx = np.arange(ratios.size)[:, None]
    cells = (t_rank[None, :] * ratios.size + r_idx) * n_bins + bins
    cells = np.concatenate([cells, cells - 1]).ravel()
    windows = np.tile(q_index, 2 * ratios.size)
    cell_of_pair = _distinct(cells * n + windows) // n  # sorted
    starts = np.flatnonzero(np.r_[True, cell_of_pair[1:] != cell_of_pair[:-1]])
    cell_ids = cell_of_pair[starts]
    counts = np.diff(np.r_[starts, cell_of_pair.size])
    best = np.zeros(t_ids.size, dtype=np.int64)
    np.maximum.at(best, cell_ids // (ratios.size * n_bins), counts)
    return set(t_ids[best >= params.min_run_hits].tolist())


def _distinct(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted distinct values (sorting beats numpy's hash-based unique on these sizes)."""
    ordered = np.sort(values, axis=None)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _ratio_grid(params: AttributionParams) -> npt.NDArray[np.float64]:
    lo = math.log(params.tempo_min)
    hi = math.log(params.tempo_max)
    count = max(1, math.ceil((hi - lo) / params.tempo_step) + 1)
    grid = np.exp(np.linspace(lo, hi, count)) if count > 1 else np.array([1.0])
    # 1.0 exactly, so that unchanged tempo aligns without a rounding drift.
    return np.unique(np.append(grid, 1.0))


def _quality(sim: npt.NDArray[np.float64], params: AttributionParams) -> npt.NDArray[np.float64]:
    span = params.similarity_full - params.similarity_floor
    return np.clip((sim - params.similarity_floor) / span, 0.0, 1.0)


def _find_runs(
    *,
    q_index: npt.NDArray[np.int_],
    ref: npt.NDArray[np.float64],
    sim: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
    ratios: npt.NDArray[np.float64],
    window_s: float,
    duration_s: float,
    params: AttributionParams,
) -> list[_Run]:
    tol = params.offset_tolerance_s
    runs: list[_Run] = []
    alive = np.ones(q_index.size, dtype=bool)
    weight = np.maximum(_quality(sim, params), 1e-3)
    n_q = int(q.size)
    for _ in range(params.max_runs_per_track):
        idx = np.flatnonzero(alive)
        if idx.size < 2:
            break
        qt = q[q_index[idx]]
        offsets = ref[idx][None, :] - ratios[:, None] * qt[None, :]  # [R, m]
        bins = np.floor(offsets / tol).astype(np.int64)
        b0 = int(bins.min())
        n_bins = int(bins.max()) - b0 + 2
        # One vote per (ratio, bin, query window): the best hit of that window.
        r_idx = np.broadcast_to(np.arange(ratios.size)[:, None], bins.shape)
        cell = (r_idx * n_bins + (bins - b0)) * n_q + q_index[idx][None, :]
        w = np.broadcast_to(weight[idx][None, :], bins.shape).ravel()
        flat = cell.ravel()
        order = np.lexsort((-w, flat))  # by cell, best hit first
        flat, w = flat[order], w[order]
        first = np.r_[True, flat[1:] != flat[:-1]]
        votes = np.bincount(flat[first] // n_q, weights=w[first], minlength=ratios.size * n_bins)
        votes = votes.reshape(ratios.size, n_bins)
        # Adjacent bins together, so a line near a bin edge is not split in two.
        paired = votes[:, :-1] + votes[:, 1:]
        r_best, bin_best = np.unravel_index(int(np.argmax(paired)), paired.shape)
        ratio = float(ratios[r_best])
        centre = (bin_best + b0 + 1) * tol
        dev = offsets[r_best] - centre
        near = np.abs(dev) <= tol
        if not near.any():
            break
        offset = float(np.median(offsets[r_best][near]))
        inl_mask = np.abs(offsets[r_best] - offset) <= tol
        inliers = idx[inl_mask]
        alive[inliers] = False
        found = _split_runs(
            inliers, q_index, ref, sim, q, ratio, offset, window_s, duration_s, params
        )
        if not found:
            # Best remaining line has no run long enough: nothing better can follow.
            break
        runs.extend(found)
    return runs


def _split_runs(
    inliers: npt.NDArray[np.int_],
    q_index: npt.NDArray[np.int_],
    ref: npt.NDArray[np.float64],
    sim: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
    ratio: float,
    offset: float,
    window_s: float,
    duration_s: float,
    params: AttributionParams,
) -> list[_Run]:
    # Best inlier hit per query window.
    order = np.lexsort((-sim[inliers], q_index[inliers]))
    inl = inliers[order]
    first_of_window = np.ones(inl.size, dtype=bool)
    first_of_window[1:] = q_index[inl][1:] != q_index[inl][:-1]
    inl = inl[first_of_window]
    qw = q_index[inl]
    qt = q[qw]
    gaps = np.flatnonzero(np.diff(qt) > params.max_gap_s) + 1
    runs: list[_Run] = []
    for part in np.split(np.arange(inl.size), gaps):
        hits = inl[part]
        t = q[q_index[hits]]
        if t[-1] - t[0] < params.min_run_s or hits.size < params.min_run_hits:
            continue
        r_ratio, r_offset = _fit_line(t, ref[hits], sim[hits], ratio, offset, params)
        q_start = float(t[0])
        q_end = min(float(t[-1]) + window_s, max(duration_s, q_start))
        ref_start = max(0.0, r_ratio * q_start + r_offset)
        ref_end = ref_start + r_ratio * (q_end - q_start)
        quality = _quality(sim[hits], params)
        runs.append(
            _Run(
                evidence=Evidence(
                    query_start=q_start,
                    query_end=q_end,
                    reference_start=float(ref_start),
                    reference_end=float(ref_end),
                    similarity=float(np.mean(sim[hits])),
                ),
                first=int(q_index[hits[0]]),
                last=int(q_index[hits[-1]]),
                quality={int(i): float(u) for i, u in zip(q_index[hits], quality, strict=True)},
            )
        )
    return runs


def _fit_line(
    t: npt.NDArray[np.float64],
    r: npt.NDArray[np.float64],
    sim: npt.NDArray[np.float64],
    ratio: float,
    offset: float,
    params: AttributionParams,
) -> tuple[float, float]:
    """Weighted least-squares line through a run's hits, ratio kept in the tempo range."""
    w = np.maximum(sim - params.similarity_floor, 1e-3)
    tm = float(np.average(t, weights=w))
    rm = float(np.average(r, weights=w))
    var = float(np.average((t - tm) ** 2, weights=w))
    if t.size >= 3 and var > 1.0:
        slope = float(np.average((t - tm) * (r - rm), weights=w)) / var
        slope = min(max(slope, params.tempo_min), params.tempo_max)
    else:
        slope = ratio
    return slope, rm - slope * tm


def _resemblance(
    runs: list[_Run], n_windows: int, query_hop_s: float, params: AttributionParams
) -> float:
    """Quality-weighted share of the query windows the runs cover, see the module docstring."""
    covered = np.zeros(n_windows)
    for run in runs:
        span = covered[run.first : run.last + 1]
        mean_quality = sum(run.quality.values()) / span.size
        np.maximum(span, mean_quality, out=span)
    seconds = float(covered.sum()) * query_hop_s
    denominator = min(n_windows * query_hop_s, params.full_coverage_s)
    return float(min(1.0, seconds / denominator))
