"""Alignment and scoring of nearest-neighbour hits, on hand-built hit tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.checks.attribution import (
    DEFAULT_CALIBRATION,
    AttributionParams,
    SearchResult,
    TrackMatch,
    TrackWindows,
    attribute,
    attribute_vectors,
    residual_vectors,
)

WINDOW_S = 4.0
QUERY_HOP_S = 0.5
CATALOGUE_HOP_S = 1.0
# Explicit, so the shipped calibration can change without changing what these tests mean.
PARAMS = AttributionParams(
    similarity_floor=0.5,
    similarity_full=0.9,
    full_coverage_s=16.0,
    min_evidence_s=0.0,
    abstain_threshold=0.0,
    quality_dilation_hops=0,
)


class HitTable:
    """Top-k search results for a query of `duration_s`, filled hit by hit."""

    def __init__(self, duration_s: float, *, k: int = 10) -> None:
        self.duration_s = duration_s
        self.starts = np.arange(0.0, duration_s - WINDOW_S + 1e-9, QUERY_HOP_S)
        n = self.starts.size
        self.sims = np.full((n, k), -np.inf, dtype=np.float32)
        self.tracks = np.full((n, k), -1, dtype=np.int64)
        self.refs = np.zeros((n, k), dtype=np.float32)
        self.used = np.zeros(n, dtype=int)

    def add(self, window: int, track: int, ref_start: float, sim: float) -> None:
        slot = self.used[window]
        self.sims[window, slot] = sim
        self.tracks[window, slot] = track
        self.refs[window, slot] = ref_start
        self.used[window] += 1

    def diagonal(
        self,
        track: int,
        *,
        offset: float,
        ratio: float = 1.0,
        sim: float = 0.85,
        q_from: float = 0.0,
        q_to: float | None = None,
        every: int = 1,
    ) -> None:
        """Hits on the catalogue window nearest to reference = ratio * query + offset."""
        q_to = self.duration_s if q_to is None else q_to
        for i, q in enumerate(self.starts):
            if q_from <= q and q + WINDOW_S <= q_to + 1e-9 and i % every == 0:
                ref = round((ratio * q + offset) / CATALOGUE_HOP_S) * CATALOGUE_HOP_S
                self.add(i, track, max(ref, 0.0), sim)

    def attribute(
        self, params: AttributionParams = PARAMS, variants: np.ndarray | None = None
    ) -> list[TrackMatch]:
        return attribute(
            query_starts=self.starts,
            window_s=WINDOW_S,
            query_duration_s=self.duration_s,
            similarities=self.sims,
            tracks=self.tracks,
            reference_starts=self.refs,
            params=params,
            variants=variants,
        )


def by_track(matches: list[TrackMatch]) -> dict[int, TrackMatch]:
    return {m.track: m for m in matches}


def test_consistent_diagonal_gives_one_run_with_its_times() -> None:
    table = HitTable(24.0)
    table.diagonal(7, offset=30.0, sim=0.85)

    matches = table.attribute()

    assert [m.track for m in matches] == [7]
    (run,) = matches[0].evidence
    assert run.query_start == pytest.approx(0.0)
    assert run.query_end == pytest.approx(24.0)
    assert run.reference_start == pytest.approx(30.0, abs=0.5)
    assert run.reference_end == pytest.approx(54.0, abs=0.75)
    assert run.similarity == pytest.approx(0.85, abs=1e-6)
    assert matches[0].resemblance > 0.8


def test_scattered_hits_of_one_track_make_no_strong_match() -> None:
    rng = np.random.default_rng(3)
    table = HitTable(24.0)
    for i in range(table.starts.size):
        table.add(i, 3, float(rng.integers(0, 180)), 0.85)
    table.diagonal(5, offset=12.0, sim=0.8)

    found = by_track(table.attribute())

    assert found[5].resemblance > 0.7
    scattered = found.get(3)
    assert scattered is None or scattered.resemblance < 0.2
    assert scattered is None or all(e.query_end - e.query_start < 10 for e in scattered.evidence)


@pytest.mark.parametrize("ratio", [0.87, 0.95, 1.05, 1.1, 1.14])
def test_tempo_scaled_diagonal_within_range_is_one_run(ratio: float) -> None:
    table = HitTable(30.0)
    table.diagonal(2, offset=40.0, ratio=ratio)

    matches = table.attribute()

    assert [m.track for m in matches] == [2]
    (run,) = matches[0].evidence
    assert run.query_end - run.query_start == pytest.approx(30.0)
    ref_span = run.reference_end - run.reference_start
    assert ref_span / (run.query_end - run.query_start) == pytest.approx(ratio, abs=0.03)
    assert run.reference_start == pytest.approx(40.0, abs=1.0)


def test_tempo_far_outside_range_is_not_one_long_run() -> None:
    table = HitTable(30.0)
    table.diagonal(2, offset=10.0, ratio=2.0)

    runs = [e for m in table.attribute() for e in m.evidence]

    # Short pieces of the line can still line up (as a re-arranged use would); a long run cannot.
    assert all(e.query_end - e.query_start < 12.0 for e in runs)
    for e in runs:
        ratio = (e.reference_end - e.reference_start) / (e.query_end - e.query_start)
        assert PARAMS.tempo_min - 1e-9 <= ratio <= PARAMS.tempo_max + 1e-9


def test_two_mixed_sources_are_both_found() -> None:
    table = HitTable(20.0)
    table.diagonal(1, offset=10.0, sim=0.8)
    table.diagonal(4, offset=55.0, sim=0.7)
    for i in range(table.starts.size):
        table.add(i, 9, float(7 * i % 100), 0.65)  # unrelated hits that do not line up

    found = by_track(table.attribute())

    assert {1, 4} <= set(found)
    assert found[1].resemblance > found[4].resemblance > 0.4
    assert found.get(9) is None or found[9].resemblance < 0.2


def test_two_sources_one_after_the_other_are_both_found_where_they_play() -> None:
    table = HitTable(40.0)
    table.diagonal(1, offset=10.0, q_to=20.0)
    table.diagonal(4, offset=80.0, q_from=20.0)

    found = by_track(table.attribute())

    (first,) = found[1].evidence
    (second,) = found[4].evidence
    assert (first.query_start, first.query_end) == pytest.approx((0.0, 20.0))
    assert (second.query_start, second.query_end) == pytest.approx((20.0, 40.0))
    assert second.reference_start == pytest.approx(100.0, abs=0.5)


def test_one_track_used_twice_gives_two_runs() -> None:
    table = HitTable(30.0)
    table.diagonal(6, offset=50.0, q_to=15.0)
    table.diagonal(6, offset=5.0, q_from=15.0)

    (match,) = table.attribute()

    assert len(match.evidence) == 2
    assert [e.reference_start for e in match.evidence] == pytest.approx([50.0, 20.0], abs=0.5)


def test_stretches_matched_at_other_places_of_a_track_count_at_other_line_weight() -> None:
    # Two halves of a query matched at two unrelated places of one track (music in one style
    # lines up by chance at one place, then another) against the same coverage on one line.
    stitched = HitTable(40.0)
    stitched.diagonal(6, offset=50.0, q_to=20.0)
    stitched.diagonal(6, offset=5.0, q_from=20.0)
    aligned = HitTable(40.0)
    aligned.diagonal(6, offset=50.0)

    def score(table: HitTable, weight: float) -> float:
        (match,) = table.attribute(replace(PARAMS, full_coverage_s=40.0, other_line_weight=weight))
        return match.resemblance

    both = score(stitched, 1.0)  # every line counted in full, as before the weight
    assert both > 0.85 * score(aligned, 1.0)
    # One line alone covers about half; the weaker adds half of what it covers beyond it.
    one_line = score(stitched, 0.0)
    assert one_line < 0.6 * both
    assert score(stitched, 0.5) == pytest.approx(one_line + 0.5 * (both - one_line), abs=0.02)
    # Where the other line covers the same windows (a passage the track repeats), nothing is lost.
    repeated = HitTable(40.0)
    repeated.diagonal(6, offset=50.0)
    repeated.diagonal(6, offset=120.0, sim=0.8)
    assert score(repeated, 0.0) == pytest.approx(score(aligned, 1.0), abs=1e-6)


def test_no_hits_give_no_match() -> None:
    table = HitTable(20.0)
    assert table.attribute() == []


def test_withdrawn_hits_are_skipped_and_cost_coverage() -> None:
    full = HitTable(20.0)
    full.diagonal(3, offset=8.0)
    holes = HitTable(20.0)
    holes.diagonal(3, offset=8.0)
    holes.tracks[1::3] = -1  # e.g. a withdrawn track's segments come back as -1

    (match_full,) = full.attribute()
    (match_holes,) = holes.attribute()

    assert match_holes.track == 3
    assert match_holes.resemblance < match_full.resemblance


def test_hits_below_the_similarity_floor_are_ignored() -> None:
    table = HitTable(20.0)
    table.diagonal(3, offset=8.0, sim=PARAMS.similarity_floor - 0.01)
    assert table.attribute() == []


def test_resemblance_is_in_unit_range_and_grows_with_coverage() -> None:
    values = []
    for covered in (4.0, 6.0, 10.0, 16.0, 24.0, 40.0, 60.0):
        table = HitTable(60.0)
        table.diagonal(1, offset=3.0, q_to=covered, sim=0.95)
        matches = table.attribute()
        values.append(matches[0].resemblance if matches else 0.0)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert values[0] < 0.4 < values[-1]


def test_resemblance_grows_with_similarity() -> None:
    values = []
    for sim in (0.55, 0.65, 0.75, 0.85, 0.95):
        table = HitTable(20.0)
        table.diagonal(1, offset=3.0, sim=sim)
        values.append(table.attribute()[0].resemblance)
    assert values == sorted(values)
    assert values[0] < values[-1]


def test_verbatim_reuse_scores_full_although_half_the_windows_fall_between_stored_ones() -> None:
    """The catalogue is stored at a 1 s hop and queried at 0.5 s: every other query window
    lies halfway between two stored windows and matches less well. Quality dilation gives it
    its aligned neighbour's, so verbatim reuse scores 1; without it, it would not."""
    table = HitTable(PARAMS.full_coverage_s)  # verbatim reuse of exactly full_coverage_s
    table.diagonal(1, offset=3.0, sim=0.95)
    table.sims[1::2, 0] = 0.8  # the windows between stored ones
    (dilated,) = table.attribute(replace(PARAMS, quality_dilation_hops=1))
    (plain,) = table.attribute(replace(PARAMS, quality_dilation_hops=0))
    assert dilated.resemblance == pytest.approx(1.0)
    assert plain.resemblance < 0.9


def test_borrowing_inside_a_longer_piece_still_scores_high() -> None:
    table = HitTable(60.0)
    table.diagonal(8, offset=70.0, q_from=20.0, q_to=40.0, sim=0.9)

    (match,) = table.attribute()

    assert match.resemblance > 0.8
    (run,) = match.evidence
    assert run.query_start == pytest.approx(20.0)
    assert run.query_end == pytest.approx(40.0)


def test_matches_below_the_abstain_threshold_are_dropped_and_order_is_by_resemblance() -> None:
    table = HitTable(30.0)
    table.diagonal(1, offset=3.0, sim=0.9)
    table.diagonal(2, offset=40.0, sim=0.7, q_to=12.0)
    table.diagonal(3, offset=90.0, sim=0.8, q_to=20.0)

    everything = table.attribute()
    strict = table.attribute(replace(PARAMS, abstain_threshold=everything[1].resemblance))

    assert [m.track for m in everything] == [1, 3, 2]
    assert [m.track for m in strict] == [1, 3]


def test_matches_of_equal_resemblance_are_ordered_closest_first() -> None:
    """A verbatim source and a close setting of the same tune both saturate at 1: the one
    whose windows match more closely comes first, whatever its track number."""
    table = HitTable(30.0)
    table.diagonal(2, offset=40.0, sim=0.93)  # the setting: every window above full quality
    table.diagonal(7, offset=3.0, sim=0.99)  # the source
    table.diagonal(4, offset=90.0, sim=0.95, q_to=14.0)  # closer, but covers less

    matches = table.attribute()

    assert [m.resemblance for m in matches[:2]] == [1.0, 1.0]
    assert [m.track for m in matches] == [7, 2, 4]
    assert matches[0].closeness > matches[1].closeness > 0.0
    n = len(matches[0].hits)
    assert matches[0].closeness == pytest.approx(n * (0.99 - PARAMS.similarity_floor), rel=1e-6)


def test_a_short_query_needs_min_evidence_for_full_resemblance() -> None:
    table = HitTable(10.0)  # 6 s of window starts
    table.diagonal(3, offset=20.0, sim=0.9)

    (lenient,) = table.attribute()
    (strict,) = table.attribute(replace(PARAMS, min_evidence_s=12.0))

    assert lenient.resemblance == pytest.approx(1.0)
    assert strict.resemblance == pytest.approx(6.5 / 12.0, abs=0.05)


def test_a_check_borrowed_whole_is_paid_from_nine_and_a_half_seconds() -> None:
    """With the shipped constants and the spectral embedder's 8 s windows, a check of 9.7 s
    that is one recording throughout (a 10 s excerpt played 3 % faster) scores 1 and is paid
    at the default threshold; of 9.2 s (three windows) it is scored by its share of the
    evidence asked for."""
    params = AttributionParams.load(DEFAULT_CALIBRATION)
    window_s = 8.0

    def whole(duration_s: float) -> TrackMatch:
        starts = np.arange(0.0, duration_s - window_s + 1e-9, params.query_hop_s)
        n = starts.size
        (match,) = attribute(
            query_starts=starts,
            window_s=window_s,
            query_duration_s=duration_s,
            similarities=np.full((n, 1), 0.95, dtype=np.float32),
            tracks=np.full((n, 1), 4, dtype=np.int64),
            reference_starts=(starts + 30.0).astype(np.float32).reshape(n, 1),
            params=params,
        )
        return match

    assert whole(9.7).resemblance == pytest.approx(1.0)
    assert whole(9.7).resemblance >= params.use_threshold
    three = whole(9.2).resemblance
    assert three == pytest.approx(1.5 / params.min_evidence_s)
    assert three < 1.0


def test_a_query_shorter_than_min_run_s_is_matched_by_a_run_across_all_of_it() -> None:
    table = HitTable(WINDOW_S + 1.5)  # four windows, 1.5 s of window starts
    table.diagonal(2, offset=40.0, sim=0.9)
    assert table.starts[-1] - table.starts[0] < PARAMS.min_run_s

    (match,) = table.attribute()

    assert match.track == 2
    assert match.resemblance == pytest.approx(1.0)
    (evidence,) = match.evidence
    assert evidence.reference_start == pytest.approx(40.0, abs=0.5)
    # Part of the query is not enough: three windows of a longer query stay below min_run_s.
    longer = HitTable(WINDOW_S + 6.0)
    longer.diagonal(2, offset=40.0, sim=0.9, q_to=WINDOW_S + 1.0)
    assert longer.attribute() == []


def test_runs_do_not_join_hits_of_different_variants() -> None:
    table = HitTable(20.0)
    table.diagonal(4, offset=30.0, sim=0.85)
    alternating = np.zeros(table.sims.shape, dtype=np.int64)
    alternating[1::2] = 2  # every other window found the track at another transposition

    (together,) = table.attribute()
    (apart,) = table.attribute(variants=alternating)

    assert apart.resemblance < together.resemblance
    assert {e.variant for e in apart.evidence} <= {0, 2}


@pytest.mark.parametrize("variant", [3, -5, 9])
def test_a_match_in_another_key_counts_from_a_raised_floor(variant: int) -> None:
    """Twelve keys searched give chance twelve tries: with a transposition margin a middling
    run found only after rotating the query scores less, a near-verbatim one as before, and
    neither the untransposed key nor whole octaves pay the margin."""
    margin = replace(PARAMS, transposition_margin=0.15)

    def score(sim: float, label: int, params: AttributionParams) -> float:
        table = HitTable(20.0)
        table.diagonal(6, offset=10.0, sim=sim)
        variants = np.full(table.sims.shape, label, dtype=np.int64)
        (match,) = table.attribute(params, variants=variants)
        assert {e.variant for e in match.evidence} == {label}
        return match.resemblance

    # PARAMS: floor 0.5, full 0.9. At 0.7 the quality falls from 0.5 to 0.2 in another key.
    plain = score(0.7, variant, PARAMS)
    assert plain == pytest.approx(score(0.7, 0, PARAMS))
    assert score(0.7, variant, margin) == pytest.approx(plain * 0.2 / 0.5, rel=0.02)
    assert score(0.7, 0, margin) == pytest.approx(score(0.7, 0, PARAMS))
    assert score(0.7, 12, margin) == pytest.approx(score(0.7, 0, PARAMS))
    assert score(0.95, variant, margin) == pytest.approx(score(0.95, 0, PARAMS))
    # Below the raised floor a run in another key is no match at all.
    table = HitTable(20.0)
    table.diagonal(6, offset=10.0, sim=0.6)
    assert table.attribute(margin, variants=np.full(table.sims.shape, variant)) == []
    with pytest.raises(ValueError, match="transposition_margin"):
        replace(PARAMS, transposition_margin=0.4)


@pytest.mark.parametrize("variant", [3, -5])
def test_a_long_run_in_another_key_pays_less_of_the_margin(variant: int) -> None:
    """Chance lines a query up with a track in one of twelve keys for a few seconds; a
    transposed reuse lines up for all of it. With `transposition_margin_span_s` a run in
    another key whose window starts span more than that has its margin scaled down by that
    share, so a whole transposed query counts from near the base floor, a short run as
    before, and the key the query is in is never touched."""
    constant = replace(PARAMS, transposition_margin=0.15)
    scaled = replace(constant, transposition_margin_span_s=4.0)

    def score(duration_s: float, sim: float, label: int, params: AttributionParams) -> float:
        table = HitTable(duration_s)
        table.diagonal(6, offset=10.0, sim=sim)
        variants = np.full(table.sims.shape, label, dtype=np.int64)
        matches = table.attribute(params, variants=variants)
        return matches[0].resemblance if matches else 0.0

    # 30 s: window starts span 26 s, so the margin is 0.15 * 4 / 26 and the floor 0.523.
    floor = PARAMS.similarity_floor + 0.15 * 4.0 / 26.0
    plain = score(30.0, 0.6, 0, PARAMS)
    assert score(30.0, 0.6, variant, constant) == 0.0  # under the raised floor (0.65)
    assert score(30.0, 0.6, variant, scaled) == pytest.approx(
        plain * ((0.6 - floor) / (0.9 - floor)) / 0.25, rel=0.02
    )
    assert score(30.0, 0.6, 0, scaled) == pytest.approx(plain)
    # 8 s: the starts span 4 s, no more than the span: the whole margin, as before.
    assert score(8.0, 0.7, variant, scaled) == pytest.approx(score(8.0, 0.7, variant, constant))
    assert score(8.0, 0.7, variant, scaled) < score(8.0, 0.7, 0, scaled)
    with pytest.raises(ValueError, match="transposition_margin_span_s"):
        replace(PARAMS, transposition_margin_span_s=-1.0)


def test_match_hits_point_at_the_inlier_hit_of_each_window() -> None:
    table = HitTable(16.0)
    for i in range(table.starts.size):
        table.add(i, 9, 100.0 + 7 * i, 0.6)  # a first column that does not line up
    table.diagonal(1, offset=5.0, sim=0.85)

    (match,) = [m for m in table.attribute() if m.track == 1]

    assert [w for w, _ in match.hits] == list(range(table.starts.size))
    assert all(table.tracks[w, c] == 1 for w, c in match.hits)


def test_residual_vectors_remove_the_explained_direction() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 16))
    b = rng.standard_normal((5, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    mix = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    refs = a.copy()
    refs[4] = 0.0  # the source does not cover the last window

    out = residual_vectors(mix.astype(np.float32), [refs.astype(np.float32)])

    np.testing.assert_allclose(np.sum(out[:4] * a[:4], axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[4], mix[4], atol=1e-6)
    assert np.all(np.sum(out[:4] * b[:4], axis=1) > np.sum(mix[:4] * b[:4], axis=1))


def attribute_tiny(vectors: np.ndarray, **kw: Any) -> list[TrackMatch]:
    """`attribute_vectors` on a query of one window a second from 0 s, as TinyCatalogue's
    tracks are laid out (window i starts at i seconds)."""
    n = len(vectors)
    return attribute_vectors(
        vectors=np.asarray(vectors, dtype=np.float32),
        query_starts=np.arange(n, dtype=np.float64),
        window_s=WINDOW_S,
        query_duration_s=n + WINDOW_S - 1,
        **kw,
    )


class TinyCatalogue:
    """Exact search over random unit vectors: track t, window j starts at j seconds.

    searched : the number of query rows of each `search` call, in order
    """

    def __init__(self, n_tracks: int = 6, length: int = 40, dim: int = 24, seed: int = 1):
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((n_tracks * length, dim))
        self.vectors = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        self.track_of = np.repeat(np.arange(n_tracks), length)
        self.start_of = np.tile(np.arange(length, dtype=np.float64), n_tracks)
        self.length = length
        self.searched: list[int] = []

    def window(self, track: int, start: int) -> np.ndarray:
        row: np.ndarray = self.vectors[track * self.length + start]
        return row

    def windows(self, tracks: Sequence[int]) -> dict[int, TrackWindows]:
        rows = {t: np.flatnonzero(self.track_of == t) for t in tracks}
        return {
            t: TrackWindows(starts=self.start_of[r], vectors=self.vectors[r])
            for t, r in rows.items()
        }

    def search(self, q: np.ndarray) -> SearchResult:
        self.searched.append(q.shape[0])
        sims = q @ self.vectors.T
        ids = np.argsort(-sims, axis=1)[:, :8]
        return SearchResult(
            similarities=np.take_along_axis(sims, ids, axis=1),
            tracks=self.track_of[ids],
            reference_starts=self.start_of[ids],
            segments=ids,
        )


def test_explaining_away_finds_the_quiet_source_of_a_mix() -> None:
    cat = TinyCatalogue()
    n = 20  # query windows at 1 s hop, so window i aligns with reference window i + offset
    loud = np.stack([cat.window(2, 5 + i) for i in range(n)])
    quiet = np.stack([cat.window(4, 12 + i) for i in range(n)])
    mix = loud + 0.3 * quiet
    mix = (mix / np.linalg.norm(mix, axis=1, keepdims=True)).astype(np.float32)
    params = replace(
        PARAMS, transpositions=(0,), query_hop_s=1.0, similarity_floor=0.3, similarity_full=0.9,
        abstain_threshold=0.3, explain_threshold=0.3,
    )  # fmt: skip

    read: list[int] = []

    def windows(tracks: Sequence[int]) -> dict[int, TrackWindows]:
        read.extend(tracks)
        return cat.windows(tracks)

    def run(passes: int) -> dict[int, float]:
        read.clear()
        matches = attribute_tiny(
            mix,
            search=cat.search,
            windows=windows,
            params=replace(params, residual_passes=passes),
        )
        return {m.track: m.resemblance for m in matches}

    without = run(0)
    assert len(cat.searched) == 1
    with_residual = run(1)
    # The index is asked twice (the query as is, then without the loud source); verifying
    # each source again with the other explained away needs no search. Each candidate's
    # stored windows are read once per check.
    assert len(cat.searched) == 1 + 2
    assert len(read) == len(set(read))
    assert {2, 4} <= set(read)

    assert 2 in without
    assert without.get(4, 0.0) < with_residual[4]
    assert with_residual[4] >= params.abstain_threshold
    assert set(with_residual) == {2, 4}


def test_a_second_pass_finds_the_third_source_behind_two_that_are_uses() -> None:
    cat = TinyCatalogue(dim=64)  # unrelated windows stay far below the floor
    n = 20
    first = np.stack([cat.window(1, 3 + i) for i in range(n)])
    second = np.stack([cat.window(3, 10 + i) for i in range(n)])
    third = np.stack([cat.window(5, 15 + i) for i in range(n)])
    # The second and third play in the first half only, the third the quietest: with the first
    # explained away it still sits below the similarity floor beside the second.
    half = (np.arange(n) < n // 2)[:, None]
    mix = first + half * (0.9 * second + 0.5 * third)
    mix = (mix / np.linalg.norm(mix, axis=1, keepdims=True)).astype(np.float32)
    params = replace(
        PARAMS, transpositions=(0,), query_hop_s=1.0, similarity_floor=0.5, similarity_full=0.9,
        abstain_threshold=0.3, explain_threshold=0.3,
    )  # fmt: skip

    def run(passes: int, again: float) -> dict[int, float]:
        cat.searched.clear()
        matches = attribute_tiny(
            mix,
            search=cat.search,
            windows=cat.windows,
            params=replace(params, residual_passes=passes, explain_again_threshold=again),
        )
        return {m.track: m.resemblance for m in matches}

    one_pass = run(1, 0.3)
    assert set(one_pass) == {1, 3}
    assert len(cat.searched) == 2
    second_resemblance = one_pass[3]
    assert 0.3 < second_resemblance < 0.8

    assert set(run(2, 0.3)) == {1, 3, 5}
    # The index asked once more, without the first two, in the windows the second covers
    # only: elsewhere what is left is what the first pass searched.
    assert cat.searched == [n, n, n // 2]
    # Behind a second source weaker than explain_again_threshold, no further pass is made.
    assert set(run(2, 0.8)) == {1, 3}
    assert len(cat.searched) == 2


def test_the_quiet_source_is_compared_by_its_part_the_loud_one_does_not_explain() -> None:
    """Two sources that share some direction (as music in one style shares harmony): once
    the loud one is explained away, what is left of the quiet one is its part outside the
    loud one, and its recording is compared by that same part (`unexplained_floor`)."""
    cat = TinyCatalogue()
    n = 20
    loud = np.stack([cat.window(2, 5 + i) for i in range(n)])
    # Track 4's aligned windows lean towards the loud source's: cos 0.5 window by window.
    own = np.stack([cat.window(4, 12 + i) for i in range(n)])
    own -= np.sum(own * loud, axis=1, keepdims=True) * loud
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    quiet = 0.5 * loud + np.sqrt(0.75) * own
    cat.vectors[4 * cat.length + 12 : 4 * cat.length + 12 + n] = quiet
    mix = loud + 0.3 * quiet  # resembles the quiet recording at cos 0.68
    mix = (mix / np.linalg.norm(mix, axis=1, keepdims=True)).astype(np.float32)
    params = replace(
        PARAMS, transpositions=(0,), query_hop_s=1.0, similarity_floor=0.8, similarity_full=0.99,
        abstain_threshold=0.1, explain_threshold=0.3,
    )  # fmt: skip

    def run(floor: float) -> dict[int, float]:
        matches = attribute_tiny(
            mix,
            search=cat.search,
            windows=cat.windows,
            params=replace(params, unexplained_floor=floor),
        )
        return {m.track: m.resemblance for m in matches}

    as_is, outside = run(1.0), run(0.5)
    # Compared as it is, the residual resembles the quiet recording at cos 0.87 (its part
    # outside the loud source is that much of it); compared by that part, at 1.
    assert outside[4] > as_is.get(4, 0.0) + 0.3
    assert outside[4] > 0.9
    assert outside[2] == pytest.approx(as_is[2])
    assert set(outside) == {2, 4}


def rotate(v: np.ndarray, semitones: int) -> np.ndarray:
    """Transposition of TinyCatalogue(dim=36) vectors: three blocks of twelve pitch classes."""
    out: np.ndarray = np.roll(v.reshape(len(v), 3, 12), semitones, axis=2).reshape(len(v), 36)
    return out


def test_query_side_transposition_labels_the_evidence() -> None:
    cat = TinyCatalogue(dim=36)

    n = 16
    query = rotate(np.stack([cat.window(1, 3 + i) for i in range(n)]), 2)  # "up 2 semitones"
    params = replace(PARAMS, transpositions=(-2, 0, 2), query_hop_s=1.0, abstain_threshold=0.3)

    matches = attribute_tiny(
        query,
        search=cat.search,
        windows=cat.windows,
        params=params,
        transpose=rotate,
    )

    assert matches[0].track == 1
    assert {e.variant for e in matches[0].evidence} == {-2}
    with pytest.raises(ValueError, match="transpose"):
        attribute_tiny(
            query,
            search=cat.search,
            windows=cat.windows,
            params=params,
        )


def test_the_key_scan_searches_fewer_vectors_and_finds_sources_in_two_keys() -> None:
    cat = TinyCatalogue(dim=36)

    n = 24
    # Track 2 transposed up 3 semitones (found at shift -3), track 4 down 5 (found at +5),
    # mixed at levels 3 dB apart.
    loud = rotate(np.stack([cat.window(2, 4 + i) for i in range(n)]), 3)
    quiet = rotate(np.stack([cat.window(4, 10 + i) for i in range(n)]), -5)
    mix = loud + 0.7 * quiet
    mix = (mix / np.linalg.norm(mix, axis=1, keepdims=True)).astype(np.float32)
    shifts = tuple(range(-5, 7))
    base = replace(
        PARAMS, transpositions=shifts, query_hop_s=1.0, similarity_floor=0.5, abstain_threshold=0.3,
        explain_threshold=0.3, residual_passes=1,
        propose_min_windows=8,  # more than the scan's six windows: the chosen keys must be right
        key_scan_stride=1,
    )  # fmt: skip

    def run(params: AttributionParams) -> dict[int, set[int]]:
        cat.searched.clear()
        matches = attribute_tiny(
            mix,
            search=cat.search,
            windows=cat.windows,
            params=params,
            transpose=rotate,
        )
        return {m.track: {e.variant for e in m.evidence} for m in matches}

    everywhere = run(base)
    searched_everywhere = sum(cat.searched)
    scanned = run(replace(base, key_scan_stride=4, scan_keys=2))

    assert everywhere == {2: {-3}, 4: {5}}
    assert scanned == everywhere
    # Two proposals, each 24 windows x 12 keys without the scan; with it, 6 windows x 12 keys
    # and the other 18 windows at two keys.
    assert searched_everywhere == 2 * n * len(shifts)
    assert sum(cat.searched) == 2 * (6 * len(shifts) + 18 * 2)


def test_an_octave_view_replaces_the_query_only_when_it_resembles_the_track_clearly_more() -> None:
    cat = TinyCatalogue()
    rng = np.random.default_rng(3)
    n = 20
    source = np.stack([cat.window(3, 6 + i) for i in range(n)])
    # As it is, the query has lost part of the source (notes out of range); its octave view
    # +1 holds all of it, as for a piece played an octave higher.
    blurred = source + 0.9 * rng.standard_normal(source.shape) / np.sqrt(source.shape[1])
    blurred = (blurred / np.linalg.norm(blurred, axis=1, keepdims=True)).astype(np.float32)
    params = replace(PARAMS, transpositions=(0,), query_hop_s=1.0, similarity_floor=0.3,
                     abstain_threshold=0.3, octave_views=(1,))  # fmt: skip

    def run(margin: float, views: dict[int, np.ndarray] | None) -> TrackMatch:
        matches = attribute_tiny(
            blurred,
            search=cat.search,
            windows=cat.windows,
            params=replace(params, octave_margin=margin),
            octave_views=views,
        )
        assert matches[0].track == 3
        return matches[0]

    plain = run(0.04, None)
    viewed = run(0.04, {1: source})
    unconvinced = run(1.0, {1: source})

    assert {e.variant for e in plain.evidence} == {0}
    assert {e.variant for e in viewed.evidence} == {-12}  # the piece sounds an octave higher
    assert viewed.evidence[0].similarity > plain.evidence[0].similarity + 0.2
    assert unconvinced.evidence == plain.evidence
    assert {e.variant for e in unconvinced.evidence} == {0}

    # Below the margin the view does not replace the query, but it names the octave when the
    # embedder's register cue names the same one; the scores stay the query's own.
    seen: list[tuple[int, int]] = []

    def cue(says: int) -> Any:
        def octave_apart(query: np.ndarray, reference: np.ndarray, semitones: int) -> int:
            assert query.shape == reference.shape
            assert query.shape[0] >= params.min_run_hits
            seen.append((query.shape[0], semitones))
            return says

        return octave_apart

    for says, variants in ((1, {-12}), (0, {0}), (-1, {0})):
        labelled = attribute_tiny(
            blurred,
            search=cat.search,
            windows=cat.windows,
            params=replace(params, octave_margin=1.0),
            octave_views={1: source},
            octave_apart=cue(says),
        )[0]
        assert {e.variant for e in labelled.evidence} == variants, says
        assert [e.similarity for e in labelled.evidence] == [
            e.similarity for e in unconvinced.evidence
        ]
    assert seen
    assert all(semitones == 0 for _, semitones in seen)
    with pytest.raises(ValueError, match="octave views"):
        attribute_tiny(
            blurred,
            search=cat.search,
            windows=cat.windows,
            params=params,
            octave_views={1: source[:-1]},
        )


def test_a_source_an_octave_away_is_proposed_through_the_octave_views() -> None:
    cat = TinyCatalogue(dim=64)  # unrelated windows stay far below the floor
    rng = np.random.default_rng(5)
    n = 20
    source = np.stack([cat.window(3, 6 + i) for i in range(n)])
    # As it is, the query has lost most of the source: each window resembles its source
    # window by 0.3 only, below the similarity floor, so the index never proposes it. Its
    # octave view +1 holds all of it.
    other = rng.standard_normal(source.shape)
    other -= np.sum(other * source, axis=1, keepdims=True) * source
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    lost = (0.3 * source + np.sqrt(1 - 0.3**2) * other).astype(np.float32)
    params = replace(PARAMS, transpositions=(0,), query_hop_s=1.0, similarity_floor=0.5,
                     abstain_threshold=0.3, octave_views=(1,))  # fmt: skip

    def run(stride: int) -> dict[int, set[int]]:
        cat.searched.clear()
        matches = attribute_tiny(
            lost,
            search=cat.search,
            windows=cat.windows,
            params=replace(params, propose_octave_stride=stride),
            octave_views={1: source},
        )
        return {m.track: {e.variant for e in m.evidence} for m in matches}

    assert 3 not in run(0)
    assert cat.searched[0] == n  # the query as it is, every window
    assert run(2)[3] == {-12}  # found, and in the octave it sounds
    assert cat.searched[0] == n + n // 2  # and the view on every other window, in the same call


def test_mismatched_shapes_are_rejected() -> None:
    table = HitTable(20.0)
    with pytest.raises(ValueError, match="same shape"):
        attribute(
            query_starts=table.starts,
            window_s=WINDOW_S,
            query_duration_s=20.0,
            similarities=table.sims,
            tracks=table.tracks[:, :3],
            reference_starts=table.refs,
            params=PARAMS,
        )


def test_params_load_reads_the_params_object_and_rejects_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"params": {"abstain_threshold": 0.42, "k": 12}, "provenance": {}}))
    params = AttributionParams.load(path)
    assert params.abstain_threshold == 0.42
    assert params.k == 12

    path.write_text(json.dumps({"params": {"abstain_threshold": 0.4, "treshold": 0.3}}))
    with pytest.raises(ValueError, match="treshold"):
        AttributionParams.load(path)


def test_invalid_params_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="tempo_min"):
        AttributionParams(tempo_min=1.2)
    with pytest.raises(ValueError, match=r"abstain_threshold=1\.5"):
        AttributionParams(abstain_threshold=1.5)


def test_shipped_calibration_loads() -> None:
    params = AttributionParams.load(DEFAULT_CALIBRATION)
    assert 0.0 < params.abstain_threshold < 1.0


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_tracks=st.integers(1, 6),
    duration=st.floats(5.0, 90.0),
    k=st.integers(1, 8),
)
def test_any_hit_table_gives_bounded_scores_and_sane_evidence(
    seed: int, n_tracks: int, duration: float, k: int
) -> None:
    rng = np.random.default_rng(seed)
    table = HitTable(duration, k=k)
    n = table.starts.size
    table.sims[:] = rng.uniform(0.3, 1.0, size=(n, k))
    table.tracks[:] = rng.integers(-1, n_tracks, size=(n, k))
    table.refs[:] = rng.integers(0, 60, size=(n, k))
    if rng.random() < 0.5:
        table.diagonal(0, offset=float(rng.uniform(0, 50)), ratio=float(rng.uniform(0.85, 1.15)))

    matches = table.attribute()

    assert len({m.track for m in matches}) == len(matches)
    assert [m.resemblance for m in matches] == sorted(
        (m.resemblance for m in matches), reverse=True
    )
    for m in matches:
        assert 0.0 <= m.resemblance <= 1.0
        assert m.evidence
        for e in m.evidence:
            assert 0.0 <= e.query_start < e.query_end <= duration + 1e-6
            assert 0.0 <= e.reference_start <= e.reference_end
            assert PARAMS.similarity_floor <= e.similarity <= 1.0


def test_reference_times_are_placed_between_catalogue_windows() -> None:
    """True reference = query + 10.4 s, query windows on whole seconds: every window's best
    hit is 0.4 s early on the catalogue's 1 s grid, its neighbour 0.6 s late and a little less
    similar. The neighbour pulls the estimate to the truth; the best hits alone would not.
    """
    table = HitTable(20.0)
    for i, q in enumerate(table.starts):
        if q % 1.0:
            continue
        true = q + 10.4
        low = float(np.floor(true))
        # Similarity falls off with the distance to the true start.
        table.add(i, 0, low, 0.88 - 0.05 * (true - low))
        table.add(i, 0, low + 1.0, 0.88 - 0.05 * (low + 1.0 - true))
    [match] = table.attribute()
    [run] = match.evidence
    assert abs(run.reference_start - (run.query_start + 10.4)) < 0.15
    assert abs(run.reference_end - (run.query_end + 10.4)) < 0.15
