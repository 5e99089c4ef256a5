"""The whole check after embedding: the index proposes, exact comparison decides.

Proposal and verification
-------------------------
Searching a million segments is approximate and crowded: in a query window's top-k, the true
reference window of a quiet source (the second piece of a mix, a re-instrumented passage)
competes with every other window that resembles the blend, and often loses. So the index only
*proposes* tracks: query windows are searched as they are and at the transpositions of
``params.transpositions`` (all twelve by default: chroma fold octaves, so twelve rotations
cover every key), and the tracks with hits in at least ``propose_min_windows`` query windows are
candidates, ranked by how much of the query their hits touch (at most ``max_candidates``).
Searching every window in twelve keys is most of a check's cost, so a *key scan* searches every
``key_scan_stride``-th window in all of them (one batched call), picks the ``scan_keys`` keys of
the (track, key) pairs with the most evidence, and searches the other windows in those only
(a second call). A piece played an octave away can hide from the index in the query as it
is (its notes out of the embedder's range; see the octave views below), so the scan also
searches the query's octave views, untransposed, on every ``propose_octave_stride``-th window.

Each candidate is then *verified* exactly: its stored windows are read (a few hundred vectors),
every query window is compared with every one of them at each transposition the candidate was
proposed at, and the best ``verify_k`` reference windows per query window become the hits the
alignment (`align.attribute`) groups into time-consistent runs. The similarities are exact and
complete for the candidate, whatever else the catalogue holds, so coverage and resemblance
depend on the query and the track alone, not on the size of the index. Rotation cannot bring
back notes a transposition carried out of the embedder's pitch range, so the query's *octave
views* (its windows read an octave lower or higher, ``octave_views``) are compared too, and one
is kept for a track when it resembles it clearly better (``octave_margin``) than the query as
it is.

Explaining away
---------------
In a mix of two recordings every window vector is a blend, and the quieter source's similarity
sits near the level of unrelated music. Once a source is found (resemblance at or above
``explain_threshold``, set below the abstain threshold), the component along its aligned
reference vector is removed from each query window it covers (a projection), the rest is
renormalised, and the index is asked again for proposals with the explained tracks excluded; the
new candidates and the ones already found are verified on what is left, and a track keeps its
best score over the passes. On what is left, a reference window is compared by its own part
outside the explained directions (``unexplained_floor``): sources of one mix often share
harmony, and what is left of the quieter one is only its part the louder one does not
account for, so the whole of its recording would resemble it less than its music does.
Each pass explains away the strongest source not yet explained (greedy, like matching
pursuit: removing a quieter source at the same time would also remove what the search looks
for); passes after the first need that source at ``explain_again_threshold``, so a third
source is looked for behind a second one, not behind every faint match, and they search only
the windows that source covers (elsewhere nothing changed since the pass before). What is left of a
single-source query is noise that matches nothing consistently; what is left of a mix is
mostly the other sources. With two or more sources found, each is verified once more with all
the others explained away (no index search: verification needs only the track's own windows).
The abstain threshold filters only the final scores, so calibrating it on a run with the
threshold at zero is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from app.checks.attribution.align import F64, I64, FloatArray, TrackMatch, attribute, by_strength
from app.checks.attribution.params import AttributionParams
from app.index.base import SearchResult

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class TrackWindows:
    """A catalogue track's stored windows, in start order.

    starts : np.ndarray [shape=(m,)], window start times (s)
    vectors : np.ndarray [shape=(m, d), dtype=float32], the stored (L2-normalised) vectors
    """

    starts: FloatArray
    vectors: F32


Search = Callable[[F32], SearchResult]
Windows = Callable[[Sequence[int]], Mapping[int, TrackWindows]]
Transpose = Callable[[F32, int], F32]
# (query windows, the reference windows aligned with them, semitones the query sounds above
# them in pitch class) -> octaves it sounds above them beyond those semitones.
OctaveApart = Callable[[F32, F32, int], int]
# What one proposal search covers: query window numbers, the transposition they are searched
# at, and the octave view they are read from (0: the query itself).
Block = tuple[I64, int, int]


@dataclass(slots=True)
class _Verified:
    """The exact hits of one verification, as `attribute` reads them, plus where each came
    from: hit (i, j) is reference window `window[i, j]` of track `tracks[i, j]`."""

    similarities: F64
    tracks: I64
    reference_starts: F64
    variants: I64
    window: I64


@dataclass(frozen=True, slots=True)
class _Hits:
    """Proposal-search hits above the similarity floor, one entry per hit: the track, the
    query window it answered, the transposition it was searched at, the similarity."""

    track: I64
    window: I64
    variant: I64
    sim: F64

    @staticmethod
    def concat(parts: Sequence[_Hits]) -> _Hits:
        return _Hits(
            track=np.concatenate([p.track for p in parts]),
            window=np.concatenate([p.window for p in parts]),
            variant=np.concatenate([p.variant for p in parts]),
            sim=np.concatenate([p.sim for p in parts]),
        )


def _keys(hits: _Hits, count: int, floor: float) -> list[int]:
    """The transpositions the key scan found strongest: (track, transposition) pairs ranked by
    their summed similarity above the floor (each query window counted once, at its best hit),
    and the transpositions of the best pairs taken in that order until there are `count`.

    Ranking pairs rather than summing per transposition keeps a mix of two sources in
    different keys from being decided by how much of the catalogue shares the louder one's
    key. When the scan found fewer than `count`, transposition 0 is added if missing: an
    untransposed reuse is the commonest.
    """
    keys: list[int] = []
    if hits.track.size:
        order = np.lexsort((-hits.sim, hits.window, hits.variant, hits.track))
        t, v, w, s = hits.track[order], hits.variant[order], hits.window[order], hits.sim[order]
        first = np.r_[True, (t[1:] != t[:-1]) | (v[1:] != v[:-1]) | (w[1:] != w[:-1])]
        pairs: dict[tuple[int, int], float] = {}
        for track, shift, sim in zip(t[first].tolist(), v[first].tolist(), s[first].tolist(),
                                     strict=True):  # fmt: skip
            pairs[(track, shift)] = pairs.get((track, shift), 0.0) + sim - floor + 1e-3
        for (_, shift), _ in sorted(pairs.items(), key=lambda x: (-x[1], x[0])):
            if shift not in keys:
                keys.append(shift)
                if len(keys) == count:
                    return keys
    if 0 not in keys:
        keys.append(0)
    return keys


def attribute_vectors(
    *,
    vectors: F32,
    query_starts: FloatArray,
    window_s: float,
    query_duration_s: float,
    search: Search,
    windows: Windows,
    params: AttributionParams,
    transpose: Transpose | None = None,
    octave_views: Mapping[int, F32] | None = None,
    octave_apart: OctaveApart | None = None,
) -> list[TrackMatch]:
    """Propose, verify, align and score the window vectors of one query.

    vectors : np.ndarray [shape=(n, d), dtype=float32], L2-normalised query window vectors
    query_starts : np.ndarray [shape=(n,)], their start times (s)
    search : vectors [m, d] -> SearchResult with k = params.k columns (track numbers)
    windows : track numbers -> their stored windows (`TrackWindows`)
    transpose : (vectors, semitones) -> the vectors of the query transposed by that much;
        needed when params.transpositions is not (0,) (SpectralEmbedder.transpose)
    octave_views : octave -> the query's windows with its pitch range moved by that many
        octaves (`SpectralEmbedder.embed_octaves`, rows as `vectors`): verification compares
        each candidate with these too, and keeps the view that resembles it most
    octave_apart : the embedder's register cue (`SpectralEmbedder.octave_apart`); with it, an
        octave view that fits a track best but not by ``params.octave_margin`` still labels
        the evidence with its octave when the cue names the same octave

    Returns the tracks at or above ``params.report_floor`` (the abstain threshold, or the
    beside threshold where that is lower: a caller reports a match under the abstain
    threshold only when it is paid beside a stronger use), best first. Evidence ``variant``
    is the transposition (semitones) the run was found at.
    """
    shifts = params.transpositions
    if shifts != (0,) and transpose is None:
        raise ValueError(f"transpositions {shifts} need a transpose function")
    base = np.ascontiguousarray(vectors, dtype=np.float32)
    if base.ndim != 2 or base.shape[0] != np.shape(query_starts)[0]:
        raise ValueError(
            f"vectors {base.shape} and query_starts {np.shape(query_starts)} do not match"
        )
    views = {o: np.ascontiguousarray(v, dtype=np.float32)
             for o, v in (octave_views or {}).items() if o != 0}  # fmt: skip
    if any(v.shape != base.shape for v in views.values()):
        raise ValueError("octave views must have the shape of the query's vectors")
    check = _Check(base, query_starts, window_s, query_duration_s, search, windows, params,
                   transpose, views, octave_apart)  # fmt: skip
    return check.run()


class _Check:
    """One query's passes; holds what the passes share (windows read, matches found)."""

    def __init__(
        self,
        base: F32,
        query_starts: FloatArray,
        window_s: float,
        duration_s: float,
        search: Search,
        windows: Windows,
        params: AttributionParams,
        transpose: Transpose | None,
        octave_views: dict[int, F32],
        octave_apart: OctaveApart | None = None,
    ) -> None:
        self.base = base
        self.octave_views = octave_views
        self.octave_apart = octave_apart
        self.query_starts = query_starts
        self.window_s = window_s
        self.duration_s = duration_s
        self.search = search
        self.windows = windows
        self.params = params
        self.transpose = transpose
        # Scores do not depend on the abstain threshold; it filters the final list only.
        self.scoring = replace(params, abstain_threshold=0.0)
        self.cache: dict[int, TrackWindows] = {}
        self.found: dict[int, tuple[TrackMatch, _Verified]] = {}
        self.rotations: dict[int, set[int]] = {}  # track -> transpositions it was proposed at

    def run(self) -> list[TrackMatch]:
        params = self.params
        self.verify(self.base, self.propose(self.base, exclude=set()))
        explained: list[int] = []
        for n in range(params.residual_passes):
            # The first pass looks for a second source behind any plausible first one; later
            # passes look for one more only behind a source that is more than a faint match.
            bar = params.explain_threshold if n == 0 else params.explain_again_threshold
            waiting = [
                t for t, (m, _) in self.found.items() if t not in explained and m.resemblance >= bar
            ]
            if not waiting:
                break
            newest = max(waiting, key=lambda t: (self.found[t][0].resemblance, -t))
            explained.append(newest)
            rest, basis = self.residual(explained)
            # Where the newest source covers nothing, what is left is what the pass before
            # searched already: later passes search only the windows it covers.
            only = None if n == 0 else np.flatnonzero(self.aligned(newest).any(axis=1))
            proposed = self.propose(rest, exclude=set(explained), only=only)
            # Tracks found before are scored again on what is left too: in a mix, the louder
            # source masked their hits in the first pass.
            again = {t for t in self.found if t not in explained} | proposed
            self.verify(rest, again, basis)
        self.score_conditionally()
        matches = [m for m, _ in self.found.values() if m.resemblance >= params.report_floor]
        matches.sort(key=by_strength)
        return matches

    def score_conditionally(self) -> None:
        """Each source's final score, given the sources stronger than it.

        A track that resembles the true source (a setting of the same hymn, a passage in the
        same style) matches the query too, and as strongly as it resembles the source; with
        the source explained away it has nothing left to match. So sources are ranked by
        `TrackMatch.closeness` (which, unlike resemblance, does not saturate) and each is
        verified again with every stronger source explained away (the strongest on the query
        as is), and, for mixes, with every other source explained away; it keeps the better
        of the two.
        """
        strong = self.params.explain_threshold
        ranked = sorted(
            (t for t, (m, _) in self.found.items() if m.resemblance >= strong),
            key=lambda t: (-self.found[t][0].closeness, t),
        )
        if len(ranked) < 2:
            return
        residuals: dict[tuple[int, ...], tuple[F32, list[F64]]] = {}
        final: dict[int, tuple[TrackMatch, _Verified] | None] = {}
        for i, track in enumerate(ranked):
            best: tuple[TrackMatch, _Verified] | None = None
            stronger = tuple(ranked[:i])
            others = tuple(t for t in ranked if t != track)
            for removed in dict.fromkeys([stronger, others]):
                if removed not in residuals:
                    residuals[removed] = self.residual(removed) if removed else (self.base, [])
                rest, basis = residuals[removed]
                found = self._verify(rest, {track}, basis).get(track)
                if found is not None and (
                    best is None or found[0].resemblance > best[0].resemblance
                ):
                    best = found
            final[track] = best
        for track, outcome in final.items():
            if outcome is None:
                del self.found[track]
            else:
                self.found[track] = outcome

    # -- proposal --------------------------------------------------------------------------

    def propose(self, q: F32, *, exclude: set[int], only: I64 | None = None) -> set[int]:
        """Candidate tracks for `q`: hits in enough query windows, the most covering first.

        Records, per candidate, the transpositions its hits came at. With
        ``params.key_scan_stride`` > 1, every transposition is searched on every n-th window
        only (the key scan), and the other windows at the ``params.scan_keys`` transpositions
        the scan found strongest (`_keys`). `only`: search these query windows alone.
        """
        params = self.params
        shifts = params.transpositions
        rows = np.arange(0, q.shape[0], params.propose_stride)
        if only is not None:
            rows = np.intersect1d(rows, only)
            if rows.size == 0:
                return set()
        # A source an octave away can hide from the index (notes carried out of the
        # embedder's range); the octave views, searched as they are, bring it back.
        octaves: list[Block] = []
        if q is self.base and params.propose_octave_stride > 0:
            sparse = rows[:: params.propose_octave_stride]
            octaves = [(sparse, 0, o) for o in sorted(self.octave_views)]
        if params.key_scan_stride > 1 and len(shifts) > params.scan_keys:
            scan = rows[:: params.key_scan_stride]
            hits = self._search(q, [(scan, s, 0) for s in shifts] + octaves, exclude)
            rest = np.setdiff1d(rows, scan)
            keys = _keys(hits, params.scan_keys, params.similarity_floor)
            if rest.size:
                more = self._search(q, [(rest, s, 0) for s in keys], exclude)
                hits = _Hits.concat([hits, more])
        else:
            hits = self._search(q, [(rows, s, 0) for s in shifts] + octaves, exclude)
        if hits.track.size == 0:
            return set()
        # Per track: the query windows its hits touch, each counted once at its best hit.
        order = np.lexsort((-hits.sim, hits.window, hits.track))
        t, w, s = hits.track[order], hits.window[order], hits.sim[order]
        first = np.r_[True, (t[1:] != t[:-1]) | (w[1:] != w[:-1])]
        ids, counts = np.unique(t[first], return_counts=True)
        mass = np.bincount(
            np.searchsorted(ids, t[first]), weights=s[first] - params.similarity_floor + 1e-3
        )
        keep = counts >= params.propose_min_windows
        ranked = sorted(zip(ids[keep].tolist(), mass[keep].tolist(), strict=True),
                        key=lambda x: (-x[1], x[0]))  # fmt: skip
        chosen = {track for track, _ in ranked[: params.max_candidates]}
        for track, shift in set(zip(hits.track.tolist(), hits.variant.tolist(), strict=True)):
            if track in chosen:
                self.rotations.setdefault(track, set()).add(shift)
        return chosen

    def _search(self, q: F32, blocks: list[Block], exclude: set[int]) -> _Hits:
        """One batched index call for `blocks` of (query window numbers, transposition,
        octave view: 0 for `q` itself); the hits at or above the similarity floor, tracks in
        `exclude` left out. A hit's variant is the block's transposition: verification
        compares every candidate in each octave view anyway."""
        params = self.params
        views = []
        for w, s, o in blocks:
            v = self.octave_views[o][w] if o else q[w]
            views.append(v if s == 0 or self.transpose is None else self.transpose(v, s))
        found = self.search(np.ascontiguousarray(np.concatenate(views), dtype=np.float32))
        tracks = np.asarray(found.tracks, dtype=np.int64)
        sims = np.asarray(found.similarities, dtype=np.float64)
        window = np.concatenate([w for w, _, _ in blocks]).astype(np.int64)[:, None]
        variant = np.concatenate([np.full(w.size, s, dtype=np.int64) for w, s, _ in blocks])
        variant = variant[:, None]
        ok = (tracks >= 0) & np.isfinite(sims) & (sims >= params.similarity_floor)
        if exclude:
            ok &= ~np.isin(tracks, np.fromiter(exclude, dtype=np.int64))
        return _Hits(
            track=tracks[ok],
            window=np.broadcast_to(window, tracks.shape)[ok],
            variant=np.broadcast_to(variant, tracks.shape)[ok],
            sim=sims[ok],
        )

    # -- verification ----------------------------------------------------------------------

    def verify(self, q: F32, candidates: set[int], basis: Sequence[F64] = ()) -> None:
        """Verify candidates on `q`; each track keeps its best score over the passes."""
        for track, outcome in self._verify(q, candidates, basis).items():
            if track not in self.found or outcome[0].resemblance > self.found[track][0].resemblance:
                self.found[track] = outcome

    def _verify(
        self, q: F32, candidates: set[int], basis: Sequence[F64] = ()
    ) -> dict[int, tuple[TrackMatch, _Verified]]:
        """Compare `q` exactly with each candidate's stored windows and align.

        basis : when `q` is a residual, the orthonormal directions explained away from each of
            its windows (`residual`); reference windows are then compared by their part
            outside them (``params.unexplained_floor``)
        """
        if not candidates:
            return {}
        missing = [t for t in sorted(candidates) if t not in self.cache]
        if missing:
            self.cache.update(self.windows(missing))
        # With octave views, the query as it is is compared in each octave view too.
        octaves = self.octave_views if q is self.base else {}
        views: dict[tuple[int, int], F32] = {}

        def view(octave: int, shift: int) -> F32:
            if (octave, shift) not in views:
                v = octaves[octave] if octave else q
                views[octave, shift] = (
                    v if shift == 0 or self.transpose is None else self.transpose(v, shift)
                )
            return views[octave, shift]

        # The explained directions, stacked [sources * n, d], in the key of each shift (once
        # per shift, not per candidate); none when references are compared as they are.
        compare_outside = bool(basis) and self.params.unexplained_floor < 1.0
        explained: dict[int, F32] = {}

        def explained_at(shift: int) -> F32:
            if shift not in explained:
                stacked = np.concatenate([np.asarray(u, dtype=np.float32) for u in basis])
                explained[shift] = (
                    stacked if shift == 0 or self.transpose is None
                    else self.transpose(stacked, shift)
                )  # fmt: skip
            return explained[shift]

        blocks: list[_Verified] = []
        for track in sorted(candidates):
            stored = self.cache.get(track)
            if stored is None or stored.vectors.shape[0] == 0:
                continue
            shifts = sorted(self.rotations.get(track, {0}))
            groups = [
                [(s, view(0, s))] + [(s - 12 * o, view(o, s)) for o in sorted(octaves)]
                for s in shifts
            ]
            directions = [explained_at(s) for s in shifts] if compare_outside else None
            blocks.extend(self._compare(track, groups, stored, directions))
        if not blocks:
            return {}
        hits = _Verified(
            similarities=np.concatenate([b.similarities for b in blocks], axis=1),
            tracks=np.concatenate([b.tracks for b in blocks], axis=1),
            reference_starts=np.concatenate([b.reference_starts for b in blocks], axis=1),
            variants=np.concatenate([b.variants for b in blocks], axis=1),
            window=np.concatenate([b.window for b in blocks], axis=1),
        )
        matches = attribute(
            query_starts=self.query_starts,
            window_s=self.window_s,
            query_duration_s=self.duration_s,
            similarities=hits.similarities,
            tracks=hits.tracks,
            reference_starts=hits.reference_starts,
            params=self.scoring,
            variants=hits.variants,
        )
        return {m.track: (m, hits) for m in matches}

    def _octave_label(
        self, group: list[tuple[int, F32]], view: int, block: F32, stored: TrackWindows
    ) -> int | None:
        """The variant of octave view `view` when the register cue agrees that the query
        sounds that octave away from the track (None: keep the query's own).

        Note chroma hardly change with the octave, so a view that fits best by less than the
        margin may be chance; the windows' spectral-band levels (`octave_apart`) are the
        second opinion. Judged on the query windows whose best match in that view reaches
        the similarity floor, against those matches.
        """
        if self.octave_apart is None:
            return None
        shift = group[0][0]
        octave = (shift - group[view][0]) // 12
        best = block.max(axis=1)
        rows = np.flatnonzero(best >= self.params.similarity_floor)
        if rows.size < self.params.min_run_hits:
            return None
        matched = stored.vectors[block[rows].argmax(axis=1)]
        # The query as it is sounds -shift semitones above the track (up to octaves).
        if self.octave_apart(group[0][1][rows], matched, -shift) != octave:
            return None
        return group[view][0]

    def _compare(
        self,
        track: int,
        groups: list[list[tuple[int, F32]]],
        stored: TrackWindows,
        directions: Sequence[F32] | None = None,
    ) -> list[_Verified]:
        """The best `verify_k` windows of one track for each query window, per group of
        (variant, query view) options.

        A group holds one transposition's views (the query, then its octave views); the
        option whose windows resemble the track most on average (their best similarity,
        averaged over the query's windows) is kept, an octave view only when it beats the query
        as it is by ``params.octave_margin``, and its variant (semitones, octaves included)
        labels its hits. With `directions` (per group, the directions explained away from the
        query, `_verify`), the query as it is is compared with each reference window's part
        outside them (`_unexplained_norm`).
        """
        n = groups[0][0][1].shape[0]
        k = min(self.params.verify_k, stored.vectors.shape[0])
        out: list[_Verified] = []
        for g, group in enumerate(groups):
            # One product per option, not one for all: BLAS rounds a product's last bits by
            # its shape, and the query as it is must score alike with or without views.
            blocks = [v @ stored.vectors.T for _, v in group]  # each [n, m]
            if directions is not None:
                norm = _unexplained_norm(directions[g], n, stored, self.params.unexplained_floor)
                blocks[0] = (blocks[0] / norm).astype(np.float32)
            fit = [float(b.max(axis=1).mean()) for b in blocks]
            best_fit = max(range(len(group)), key=lambda i: (fit[i], -i))
            fit[1:] = [f - self.params.octave_margin for f in fit[1:]]
            pick = max(range(len(group)), key=lambda i: (fit[i], -i))
            block = blocks[pick]
            label = group[pick][0]
            if pick == 0 and best_fit != 0:
                named = self._octave_label(group, best_fit, blocks[best_fit], stored)
                label = label if named is None else named
            if k < block.shape[1]:
                top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(block.shape[1]), (n, k))
            out.append(
                _Verified(
                    similarities=np.take_along_axis(block, top, axis=1).astype(np.float64),
                    tracks=np.full((n, k), track, dtype=np.int64),
                    reference_starts=np.asarray(stored.starts, dtype=np.float64)[top],
                    variants=np.full((n, k), label, dtype=np.int64),
                    window=np.asarray(top, dtype=np.int64),
                )
            )
        return out

    # -- explaining away -------------------------------------------------------------------

    def residual(self, sources: Sequence[int]) -> tuple[F32, list[F64]]:
        """The query with every source in `sources` explained away, and the orthonormal
        directions removed from each window (one [n, d] array per source, zero rows where it
        covers nothing)."""
        basis = _orthonormal_basis([self.aligned(t) for t in sorted(sources)])
        return _remove(self.base, basis), basis

    def aligned(self, track: int) -> F32:
        """The stored vector each covered query window aligned with, in the query's key."""
        match, hits = self.found[track]
        out = np.zeros(self.base.shape, dtype=np.float32)
        if not match.hits:
            return out
        rows = np.array([i for i, _ in match.hits], dtype=np.int64)
        cols = np.array([j for _, j in match.hits], dtype=np.int64)
        stored = self.cache[track].vectors[hits.window[rows, cols]]
        shift = hits.variants[rows, cols]
        for s in np.unique(shift):
            pick = shift == s
            # A hit at transposition s matched transpose(query, s): undo it on the reference.
            vecs = stored[pick]
            if s != 0 and self.transpose is not None:
                vecs = self.transpose(np.ascontiguousarray(vecs), -int(s))
            out[rows[pick]] = vecs
        return out


def _unexplained_norm(directions: F32, n: int, stored: TrackWindows, floor: float) -> F64:
    """[n, m]: the length of each reference window's part outside the directions explained
    away from each of the n query windows, at least `floor`.

    directions : [sources * n, d], orthonormal per window (zero rows where nothing was), in
        the key the query is compared in

    The residual r of a window is orthogonal to those directions, so r·s equals r·s' for the
    part s' of a reference window s outside them, and r·s / |s'| is the cosine of r and s'. In
    a mix, what is left once the louder source is explained away is the quieter one's part
    outside the louder one; compared with that same part of its recording, it resembles it as
    a source heard alone does.
    """
    along = directions @ stored.vectors.T  # [sources * n, m]
    explained = np.square(along, dtype=np.float64).reshape(-1, n, along.shape[1]).sum(axis=0)
    norm: F64 = np.sqrt(np.clip(1.0 - explained, floor * floor, 1.0))
    return norm


def residual_vectors(vectors: F32, references: list[F32]) -> F32:
    """Remove from each row of `vectors` its components along the rows of `references`.

    vectors : np.ndarray [shape=(n, d)], L2-normalised
    references : arrays [n, d], one per explained source, all-zero rows where the source does
        not cover that window
    Returns [n, d] float32 rows, renormalised (rows with nothing left stay zero).
    """
    return _remove(vectors, _orthonormal_basis(references))


def _orthonormal_basis(references: Sequence[F32]) -> list[F64]:
    """Per row, orthonormal directions spanning the rows of `references` (Gram-Schmidt, so
    overlapping sources are removed once): one [n, d] array per reference, zero rows where it
    adds nothing."""
    basis: list[F64] = []
    for ref in references:
        u = np.array(ref, dtype=np.float64)
        for b in basis:
            u -= np.sum(u * b, axis=1, keepdims=True) * b
        norm = np.linalg.norm(u, axis=1, keepdims=True)
        basis.append(np.divide(u, norm, out=np.zeros_like(u), where=norm > 1e-6))
    return basis


def _remove(vectors: F32, basis: Sequence[F64]) -> F32:
    out = np.array(vectors, dtype=np.float64)
    for u in basis:
        out -= np.sum(out * u, axis=1, keepdims=True) * u
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    result: F32 = np.divide(out, norm, out=np.zeros_like(out), where=norm > 1e-6).astype(np.float32)
    return result
