"""Alignment: top-k hits per catalogue track grouped into time-consistent runs.

Alignment
---------
A real use of a recording shows up as hits whose reference time follows the query time along
a line, ``reference = ratio * query + offset``, with ``ratio`` the tempo ratio (reference speed
over query speed) in ``[tempo_min, tempo_max]``. For each track (and query variant, e.g. one
transposition), hits are voted into a (ratio, offset) grid, one vote per query window,
weighted by similarity. The best cell's inliers (hits within ``offset_tolerance_s`` of the line)
are split into runs wherever the query skips more than ``max_gap_s``; runs of at least
``min_run_hits`` windows spanning at least ``min_run_s`` (or the whole query, where it is
shorter) become evidence. The inliers are removed and the search repeats (a track can be used
more than once). Hits scattered over a track (music that is merely similar) do not line up and
yield no runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.checks.attribution import score
from app.checks.attribution.params import AttributionParams

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
    closeness : the summed similarity above the similarity floor of those hits. Resemblance
        saturates (a verbatim source and a close setting of the same tune can both score 1);
        this does not, so it orders matches of equal resemblance, the closer first.
    """

    track: int
    resemblance: float
    evidence: tuple[Evidence, ...]
    hits: tuple[tuple[int, int], ...] = ()
    closeness: float = 0.0


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

    # Each hit's floor is its variant's (`AttributionParams.floor_for`): stricter in another key.
    # With the margin scaled by run length, hits in another key are kept from the base floor:
    # under a short run's raised floor they weigh nothing (`score.quality`), but they bridge
    # gaps inside a long transposed run. Keeping them only from the lowest floor the query's
    # span allows (`floor_for(variant, span)`) was measured: the refit use threshold rose
    # 0.516 -> 0.573 and transposed and re-instrumented queries lost one or two of 32 each.
    margin = 0.0 if params.transposition_margin_span_s > 0 else params.transposition_margin
    floors = params.similarity_floor + np.where(labels % 12 == 0, 0.0, margin)
    keep = (trk >= 0) & np.isfinite(sims) & (sims >= floors) & np.isfinite(ref)
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

    # A use of a recording is one alignment: a track scores by its best variant (one
    # transposition), never by runs of several variants stitched together, which is how
    # music that merely shares a style would add up coverage.
    best_of: dict[int, tuple[float, list[Run]]] = {}
    for g in np.split(np.arange(hits.group.size), bounds):
        key = int(hits.group[g[0]])
        if key not in viable:
            continue
        variant = int(values[key % n_var])
        runs = _find_runs(hits.take(g), q, ratios, window_s, query_duration_s, variant, params)
        if not runs:
            continue
        track = key // n_var
        resemblance = score.resemblance(runs, n, query_hop, window_s, params)
        if track not in best_of or resemblance > best_of[track][0]:
            best_of[track] = (resemblance, runs)

    matches: list[TrackMatch] = []
    for track, (resemblance, runs) in best_of.items():
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
                closeness=float(sum(sim - params.similarity_floor for sim, _ in best.values())),
            )
        )
    matches.sort(key=by_strength)
    return matches


def by_strength(match: TrackMatch) -> tuple[float, float, int]:
    """Sort key: the highest resemblance first, then the closest (in millionths, so that
    float rounding cannot reorder near-equal ones), then by track."""
    return -match.resemblance, -round(match.closeness, 6), match.track


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
class Run:
    evidence: Evidence
    first: int  # first query window index in the run
    last: int  # last query window index in the run
    quality: dict[int, float]  # query window -> quality of its inlier hit
    hits: dict[int, tuple[float, int]]  # query window -> (similarity, column) of that hit
    line: int  # which of the track's lines (alignments) it lies on, most votes first


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


def _find_runs(
    hits: _Hits,
    q: F64,
    ratios: F64,
    window_s: float,
    duration_s: float,
    variant: int,
    params: AttributionParams,
) -> list[Run]:
    """Runs of one group: the best line, its runs, then the best line of what is left..."""
    tol = params.offset_tolerance_s
    runs: list[Run] = []
    alive = np.ones(hits.window.size, dtype=bool)
    weight = np.maximum(score.quality(hits.sim, params, variant), 1e-3)
    n_q = int(q.size)
    for line_no in range(params.max_runs_per_track):
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
            hits.take(inliers),
            q,
            float(ratios[r_best]),
            window_s,
            duration_s,
            variant,
            params,
            line_no,
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
    line: int,
) -> list[Run]:
    # Best inlier hit per query window, in query order.
    order = np.lexsort((-inliers.sim, inliers.window))
    ranked = inliers.take(order)
    first_of_window = np.r_[True, ranked.window[1:] != ranked.window[:-1]]
    best = ranked.take(np.flatnonzero(first_of_window))
    refined = _subgrid_refs(ranked, best)
    t_all = q[best.window]
    gaps = np.flatnonzero(np.diff(t_all) > params.max_gap_s) + 1
    # A query too short to offer `min_run_s` is matched by a run across all of it.
    min_span = min(params.min_run_s, float(q[-1] - q[0]))
    runs: list[Run] = []
    for part in np.split(np.arange(best.window.size), gaps):
        run = best.take(part)
        t = q[run.window]
        if run.window.size < params.min_run_hits or t[-1] - t[0] < min_span:
            continue
        r_ratio, r_offset = _fit_line(t, refined[part], run.sim, ratio, params)
        q_start = float(t[0])
        q_end = min(float(t[-1]) + window_s, max(duration_s, q_start))
        ref_start = max(0.0, r_ratio * q_start + r_offset)
        ref_end = ref_start + r_ratio * (q_end - q_start)
        quality = score.quality(run.sim, params, variant, float(t[-1] - t[0]))
        windows = run.window.tolist()
        runs.append(
            Run(
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
                line=line,
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
