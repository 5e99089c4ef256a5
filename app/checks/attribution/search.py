"""The whole check after embedding: search every variant, align, explain sources away.

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

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from app.checks.attribution.align import F64, I64, FloatArray, TrackMatch, attribute
from app.checks.attribution.params import AttributionParams
from app.index.base import SearchResult

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
