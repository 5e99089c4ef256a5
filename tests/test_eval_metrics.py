"""The evaluation's own arithmetic (bench/metrics.py): the numbers in the README rest on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bench import metrics
from bench.metrics import Prediction, Span


@dataclass(frozen=True)
class Source:
    piece_id: str
    source_start_s: float = 10.0
    source_end_s: float = 30.0
    query_start_s: float = 0.0
    query_end_s: float = 20.0
    tempo_factor: float = 1.0
    repeat_offsets_s: tuple[float, ...] = ()
    transpose: int = 0


def test_a_query_is_scored_on_rank_share_and_evidence_time() -> None:
    sources = [Source("a"), Source("b", query_start_s=5.0, query_end_s=20.0)]
    predictions = [
        Prediction("a", 0.6, (Span(0.0, 20.0, 11.0, 31.0),)),  # 1 s late
        Prediction("x", 0.3),
        Prediction("b", 0.1, (Span(5.0, 20.0, 10.0, 25.0),)),  # on time
        Prediction("y", 0.05),  # below the threshold: ignored
    ]
    outcome = metrics.score_query(sources, predictions, threshold=0.08)
    assert outcome.top1 is True
    assert outcome.all_top3 is True
    assert outcome.recall5 == 1.0
    assert outcome.n_predictions == 3
    assert outcome.true_share == pytest.approx(0.7 / 1.0)
    assert outcome.time_error_s == pytest.approx(0.5)  # median of 1.0 and 0.0

    higher = metrics.score_query(sources, predictions, threshold=0.2)
    assert higher.found is False  # "b" is no longer listed
    assert higher.all_top3 is False


def test_paid_needs_every_source_at_the_use_threshold() -> None:
    sources = [Source("a"), Source("b", query_start_s=5.0, query_end_s=20.0)]
    predictions = [
        Prediction("a", 0.95, (Span(0.0, 20.0, 10.0, 30.0),)),
        Prediction("b", 0.6, (Span(5.0, 20.0, 13.0, 28.0),)),  # 3 s off
    ]
    listed = metrics.score_query(sources, predictions, threshold=0.1, use_threshold=0.7)
    assert listed.found is True
    assert listed.paid is False  # "b" is listed but below the use threshold
    assert listed.sources_paid == 0.5  # "a" is paid
    assert listed.source_resemblance == 0.6
    both = metrics.score_query(sources, predictions, threshold=0.1, use_threshold=0.5)
    assert both.paid is True
    assert both.sources_paid == 1.0
    unlisted = metrics.score_query(sources, predictions, threshold=0.7, use_threshold=0.5)
    assert unlisted.sources_paid == 0.5  # "b" is not even reported at this abstain threshold
    row = metrics.summarise_queries("mix", [listed, both, unlisted])
    assert row.paid == 1 / 3
    assert row.sources_paid == (0.5 + 1.0 + 0.5) / 3
    assert both.located is False  # "b"'s evidence is 3 s away from the truth
    alone = metrics.score_query(sources[:1], predictions, threshold=0.1, use_threshold=0.5)
    assert alone.located is True
    assert alone.long is True  # 20 s of the query
    assert both.long is False  # "b" fills 15 s


def test_a_match_beside_a_paid_use_is_paid_from_the_beside_threshold() -> None:
    """The service's rule (`app.checks.service._thresholds`), as the evaluation counts it: a
    quieter source is paid from the beside threshold only beside a paid match at least as
    strong; alone, it needs the use threshold."""
    mix = [Prediction("a", 0.9), Prediction("b", 0.3), Prediction("c", 0.2)]
    assert metrics.paid_pieces(mix, use_threshold=0.5, beside_threshold=None) == {"a"}
    assert metrics.paid_pieces(mix, use_threshold=0.5, beside_threshold=0.25) == {"a", "b"}
    assert metrics.paid_pieces(mix, use_threshold=0.5, beside_threshold=0.2) == {"a", "b", "c"}
    nothing_paid = [Prediction("b", 0.45), Prediction("c", 0.3)]
    assert metrics.paid_pieces(nothing_paid, use_threshold=0.5, beside_threshold=0.25) == set()
    # A beside threshold above the use threshold changes nothing.
    assert metrics.paid_pieces(mix, use_threshold=0.5, beside_threshold=0.8) == {"a"}

    sources = [Source("a"), Source("b")]
    plain = metrics.score_query(sources, mix, threshold=0.1, use_threshold=0.5)
    beside = metrics.score_query(
        sources, mix, threshold=0.1, use_threshold=0.5, beside_threshold=0.25
    )
    assert (plain.paid, plain.sources_paid) == (False, 0.5)
    assert (beside.paid, beside.sources_paid) == (True, 1.0)
    # Under the abstain threshold, paid (and listed) beside the use all the same; under the
    # beside threshold too, neither.
    under = metrics.score_query(
        sources, mix, threshold=0.35, use_threshold=0.5, beside_threshold=0.25
    )
    assert (under.sources_paid, under.found, under.n_predictions) == (1.0, True, 2)
    hidden = metrics.score_query(
        sources, mix, threshold=0.35, use_threshold=0.5, beside_threshold=0.32
    )
    assert (hidden.sources_paid, hidden.found, hidden.n_predictions) == (0.5, False, 1)
    # What a beside threshold must reject: the best non-source beside a paid match.
    assert metrics.beside_score(mix, {"a", "b"}, 0.5) == 0.2
    assert metrics.beside_score(mix, {"a"}, 0.5) == 0.3
    assert metrics.beside_score([Prediction("a", 0.6), Prediction("x", 0.7)], {"a"}, 0.5) == 0.7
    assert metrics.beside_score([Prediction("a", 0.6), Prediction("x", 0.4)], {"a"}, 0.65) == 0.0


def test_a_source_under_the_abstain_threshold_counts_when_paid_beside_a_use() -> None:
    """As the service lists them: a beside threshold under the abstain threshold lists and
    pays a mix's quieter source from it; heard alone it is not even listed."""
    mix = [Prediction("a", 0.9), Prediction("b", 0.25), Prediction("x", 0.2)]
    fit = {"threshold": 0.26, "use_threshold": 0.5, "beside_threshold": 0.24}
    both = metrics.score_query([Source("a"), Source("b")], mix, **fit)
    assert (both.found, both.paid, both.n_predictions) == (True, True, 2)
    alone = metrics.score_query([Source("b")], mix[1:], **fit)
    assert (alone.found, alone.paid, alone.n_predictions) == (False, False, 0)


def test_the_beside_threshold_is_fitted_on_spurious_matches_beside_true_uses() -> None:
    """`bench.attribution.calibrate`: after the use threshold, the beside threshold is fitted
    on the checks that pay a true source, from the best other match beside it; checks that
    pay no true source take no part."""
    from types import SimpleNamespace
    from typing import Any

    from bench import attribution

    negatives = [SimpleNamespace(id=f"n{i}", kind="hard_negative") for i in range(200)]
    queries = [
        SimpleNamespace(id=f"q{i}", transformation="clean", sources=[Source(f"p{i}")])
        for i in range(300)
    ]
    # Negatives put the use threshold just above 0.55 (one in 200 above), the abstain at 0.1.
    predictions: dict[str, list[Prediction]] = {
        n.id: [Prediction("p0", 0.6 if i == 0 else 0.55 if i == 1 else 0.1)]
        for i, n in enumerate(negatives)
    }
    for i, q in enumerate(queries):
        # Two checks in 300 meet another piece at 0.45, two at 0.35, the rest at 0.05.
        spurious = 0.45 if i < 2 else 0.35 if i < 4 else 0.05
        predictions[q.id] = [Prediction(f"p{i}", 0.9), Prediction("other", spurious)]
    # A check whose source is not paid: its 0.48 must not move the fit.
    queries.append(SimpleNamespace(id="weak", transformation="clean", sources=[Source("w")]))
    predictions["weak"] = [Prediction("other", 0.48), Prediction("w", 0.2)]
    manifest: Any = SimpleNamespace(
        negatives=negatives,
        queries=queries,
        queries_for=lambda t: [q for q in queries if q.transformation == t],
    )
    outcome = attribution.Outcome(predictions=predictions)

    cal = attribution.calibrate(
        manifest, outcome, target_fpr=0.01, abstain_fpr=0.05, min_threshold=0.02
    )
    assert cal.beside is not None
    assert cal.beside.n == 300
    # Of 300 checks, two may reach a 1 % threshold (allowed_above): above the 0.35s, under
    # the 0.45s.
    assert 0.35 < cal.beside.threshold < 0.45
    assert cal.beside.fpr == pytest.approx(2 / 300)
    assert cal.beside.threshold <= cal.use_threshold
    assert dict(cal.beside.curve)[0.4] == pytest.approx(2 / 300)
    assert cal.as_dict()["beside"]["threshold"] == pytest.approx(cal.beside.threshold, abs=1e-6)
    # Kept between the abstain and the use threshold.
    floor = metrics.calibrate_beside(
        {"a": 0.9, "b": 0.1}, target_fpr=0.01, floor=0.2, ceiling=0.5
    ).threshold
    assert floor == 0.5
    rows = {
        r.name: r
        for r in attribution.evaluate(
            manifest, outcome, threshold=0.02, use_threshold=0.5, beside_threshold=0.3
        )
    }
    assert rows[attribution.BESIDE_ROW].fpr_use == pytest.approx(4 / 300)


def test_a_set_reports_the_true_sources_resemblance_over_long_queries() -> None:
    long_source = [Source("a")]  # 20 s
    short_source = [Source("a", query_end_s=10.0)]
    outcomes = [
        metrics.score_query(long_source, [Prediction("a", r)], threshold=0.1, use_threshold=0.9)
        for r in (0.5, 0.92, 0.95, 0.97, 1.0)
    ] + [
        metrics.score_query(short_source, [Prediction("a", 0.2)], threshold=0.1, use_threshold=0.9)
    ]
    row = metrics.summarise_queries("clean", outcomes)
    assert row.n == 6
    assert row.n_long == 5
    assert row.resemblance_min == 0.5  # the short query's 0.2 is not held to the scale
    assert row.resemblance_median == 0.95
    assert row.paid == pytest.approx(4 / 6)


def test_evidence_at_a_repeat_of_the_passage_counts_as_right() -> None:
    # The passage at 10..30 s recurs at 50..70 s: evidence there points at the same music.
    source = Source("a", repeat_offsets_s=(40.0,))
    assert metrics.evidence_error(source, [Span(0.0, 20.0, 50.0, 70.0)]) == pytest.approx(0.0)
    assert metrics.evidence_error(Source("a"), [Span(0.0, 20.0, 50.0, 70.0)]) == 40.0
    # Of two runs over the same query passage, the better one counts.
    runs = [Span(0.0, 20.0, 45.0, 65.0), Span(0.0, 20.0, 10.5, 30.5)]
    assert metrics.evidence_error(Source("a"), runs) == pytest.approx(0.5)


def test_the_shift_the_evidence_reports_is_judged_against_the_edit() -> None:
    def key(source: Source, *runs: Span) -> bool | None:
        outcome = metrics.score_query([source], [Prediction("a", 1.0, runs)], threshold=0.1)
        return outcome.key_right

    up_four = Source("a", transpose=4)
    assert key(up_four, Span(0.0, 20.0, 10.0, 30.0, transposition=4)) is True
    assert key(up_four, Span(0.0, 20.0, 10.0, 30.0, transposition=-8)) is False  # not mod 12
    assert key(Source("a", transpose=12), Span(0.0, 20.0, 10.0, 30.0, transposition=0)) is False
    assert key(Source("a", transpose=-6), Span(0.0, 20.0, 10.0, 30.0, transposition=6)) is True
    # The run that overlaps the source most is the one read; runs without a shift are not.
    runs = (
        Span(0.0, 4.0, 10.0, 14.0, transposition=0),
        Span(4.0, 20.0, 14.0, 30.0, transposition=4),
    )
    assert key(up_four, *runs) is True
    assert key(up_four, Span(0.0, 20.0, 10.0, 30.0)) is None
    row = metrics.summarise_queries(
        "transpose+4",
        [metrics.score_query([up_four], [Prediction("a", 1.0, r)], threshold=0.1)
         for r in (runs, runs[:1], (), ())],
    )  # fmt: skip
    assert row.key_right == 0.5  # two judged (one right), two not found


def test_negatives_are_counted_at_both_thresholds() -> None:
    row = metrics.summarise_negatives("negatives", [0.0, 0.2, 0.4, 0.8], threshold=0.3,
                                      use_threshold=0.5)  # fmt: skip
    assert row.fpr == 0.5
    assert row.fpr_use == 0.25


def test_evidence_error_follows_the_tempo_of_the_source() -> None:
    source = Source("a", source_start_s=10.0, tempo_factor=1.1)
    # Query 0..10 s plays the source from 10 s at 1.1x: reference 10..21 s.
    assert metrics.evidence_error(source, [Span(0.0, 10.0, 10.0, 21.0)]) == pytest.approx(0.0)
    assert metrics.evidence_error(source, [Span(0.0, 10.0, 12.0, 23.0)]) == pytest.approx(2.0)
    assert metrics.evidence_error(source, [Span(40.0, 50.0, 0.0, 10.0)]) is None


def test_threshold_lets_through_what_new_negatives_would_reach_at_most_the_target() -> None:
    # 250 negatives at 1 %: ceil(251 * 0.99) = 249 must be rejected, so one may pass (the
    # plug-in share, floor(2.5), would let two through).
    scores = [0.0] * 240 + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    t = metrics.calibrate_threshold(scores, target_fpr=0.01)
    # Only the 0.95 may reach it; the rejected 0.9, scored again elsewhere a little
    # differently (1e-6 higher), stays rejected.
    assert 0.9 + metrics.RESCORE_MARGIN <= t <= 0.9011
    assert sum(s >= t for s in scores) == 1
    assert metrics.calibrate_threshold(scores, target_fpr=0.01, margin=0.0) <= 0.9000001
    assert metrics.calibrate_threshold(scores, target_fpr=0.0) > 0.95
    # 100 negatives cannot show a 1 % rate with one through (2 / 101 > 1 %): none may pass.
    assert metrics.calibrate_threshold(scores[-100:], target_fpr=0.01) > 0.95
    allowed = [metrics.allowed_above(n, 0.01) for n in (98, 99, 100, 199, 246, 492)]
    assert allowed == [0, 0, 0, 1, 1, 3]
    assert metrics.allowed_above(492, 0.05) == 23
    with pytest.raises(ValueError, match="at least one negative"):
        metrics.calibrate_threshold([], target_fpr=0.01)


def test_threshold_holds_its_rate_on_negatives_the_fit_did_not_see() -> None:
    """Fitted on 246 negatives at 1 %, the rate on new ones stays at or under 1 % on average
    over many draws. Scores are uniform on 0..1, so a threshold t lets through exactly
    1 - t of new negatives; letting through floor(1 % of 246) = 2 of the fit's gives 1.2 %."""
    rng = np.random.default_rng(3)
    rates = [
        1.0 - metrics.calibrate_threshold(rng.random(246).tolist(), target_fpr=0.01, margin=0.0)
        for _ in range(4000)
    ]
    assert float(np.mean(rates)) <= 0.01
    assert float(np.mean(rates)) == pytest.approx(2 / 247, rel=0.05)


def test_calibration_fits_on_one_half_of_each_kind_and_reports_the_other() -> None:
    kinds = {f"h{i}": "hard" for i in range(40)} | {f"o{i}": "other" for i in range(40)}
    # Nothing to reject: the floor holds, and the split is there to read.
    quiet = metrics.calibrate(dict.fromkeys(kinds, 0.0), kinds, target_fpr=0.01, min_threshold=0.1)
    assert quiet.threshold == 0.1
    fit, held = quiet.calibration_ids, quiet.heldout_ids
    assert fit.isdisjoint(held)
    assert fit | held == set(kinds)
    for kind in ("hard", "other"):
        assert len([i for i in fit if kinds[i] == kind]) == 20
    assert len(held) == 40

    # Three high-scoring negatives in the held-out half only: the fit does not see them, the
    # held-out rate does.
    unseen = sorted(held)[:3]
    scores = {i: (0.5 if i in unseen else 0.0) for i in kinds}
    cal = metrics.calibrate(scores, kinds, target_fpr=0.0, min_threshold=0.1)
    assert (cal.calibration_ids, cal.heldout_ids) == (fit, held)  # a hash, not a random draw
    assert cal.threshold == 0.1
    assert cal.calibration_fpr == 0.0
    assert cal.heldout_fpr == 3 / 40

    # The same three in the calibration half: the threshold rises above them.
    seen = sorted(fit)[:3]
    scores = {i: (0.5 if i in seen else 0.0) for i in kinds}
    cal = metrics.calibrate(scores, kinds, target_fpr=0.0, min_threshold=0.1)
    assert cal.threshold > 0.5
    assert cal.calibration_fpr == 0.0
    assert cal.heldout_fpr == 0.0


def test_calibration_fits_the_use_threshold_and_reports_the_curve() -> None:
    kinds = {f"h{i}": "hard" for i in range(100)} | {f"o{i}": "other" for i in range(100)}
    ids = sorted(kinds)
    scores = {i: round(0.005 * n, 3) for n, i in enumerate(ids)}  # 0.0 .. 0.995
    cal = metrics.calibrate(scores, kinds, target_fpr=0.01, abstain_fpr=0.05)
    fit = sorted(scores[i] for i in cal.calibration_ids)
    # Of 100 negatives, none may reach a 1 % threshold and four a 5 % one (allowed_above).
    assert sum(s >= cal.use_threshold for s in fit) == 0
    assert cal.use_threshold <= max(fit) + 2 * metrics.RESCORE_MARGIN  # no higher than needed
    assert sum(s >= cal.threshold for s in fit) == 4
    assert cal.threshold < cal.use_threshold
    assert cal.use_calibration_fpr <= 0.01
    curve = dict(cal.curve)
    assert curve[0.0] == 1.0
    assert curve[0.5] == pytest.approx(sum(s >= 0.5 for s in fit) / len(fit))
    assert [f for _, f in cal.curve] == sorted((f for _, f in cal.curve), reverse=True)
    held = dict(cal.heldout_curve)
    assert held[0.5] == pytest.approx(
        sum(scores[i] >= 0.5 for i in cal.heldout_ids) / len(cal.heldout_ids)
    )
    written = cal.as_dict()
    assert written["use_threshold"] >= cal.use_threshold
    assert written["curve"][50] == [0.5, round(curve[0.5], 4)]
    overall = dict(cal.overall_curve())
    assert overall[0.5] == pytest.approx(sum(s >= 0.5 for s in scores.values()) / len(scores))


def test_fitting_on_every_negative_reports_the_cross_fitted_rate() -> None:
    kinds = {f"h{i}": "hard" for i in range(200)} | {f"o{i}": "other" for i in range(200)}
    half = metrics.calibrate(dict.fromkeys(kinds, 0.0), kinds, target_fpr=0.01)
    fit, held = sorted(half.calibration_ids), sorted(half.heldout_ids)
    # Four outliers, two in each half: fitted on the calibration half alone (200 negatives,
    # one may pass at 1 %), the use threshold must rise above its second; fitted on all 400
    # (three may pass), above the fourth.
    scores = dict.fromkeys(kinds, 0.0) | {fit[0]: 0.6, fit[1]: 0.5, held[0]: 0.3, held[1]: 0.2}
    on_half = metrics.calibrate(scores, kinds, target_fpr=0.01, min_threshold=0.1)
    on_all = metrics.calibrate(scores, kinds, target_fpr=0.01, min_threshold=0.1, fit_on_all=True)
    assert on_half.fitted_on == "half"
    assert on_all.fitted_on == "all"
    assert 0.5 < on_half.use_threshold <= 0.6
    assert 0.2 < on_all.use_threshold <= 0.3
    # Cross-fitted: the held-out half at the calibration half's threshold (> 0.5) lets nothing
    # through; the calibration half at the held-out half's threshold (above 0.2) lets both
    # of its outliers through: 2 of 400.
    assert on_all.use_crossfit_fpr == pytest.approx(2 / 400)
    assert on_half.use_crossfit_fpr == on_all.use_crossfit_fpr  # it does not depend on the fit
    assert on_all.as_dict()["use_crossfit_fpr"] == 0.005


def test_negatives_pooled_from_other_corpora_take_part_in_the_calibration() -> None:
    """`bench.attribution --calibrate --pool-negatives`: other draws' negatives are fitted on
    beside the corpus's own, so one music the corpus's draw missed moves the thresholds."""
    from types import SimpleNamespace
    from typing import Any

    from bench import attribution

    kinds = ("hard_negative", "other_negative")
    negatives = [SimpleNamespace(id=f"n{i}", kind=kinds[i % 2]) for i in range(100)]
    manifest: Any = SimpleNamespace(negatives=negatives, queries=[])
    outcome = attribution.Outcome(predictions={n.id: [Prediction("p", 0.2)] for n in negatives})
    fit = {"target_fpr": 0.01, "abstain_fpr": 0.05, "min_threshold": 0.1}

    alone = attribution.calibrate(manifest, outcome, **fit)
    # Another draw whose music meets the catalogue more often: 5 of its 100 negatives at 0.8.
    scores = {f"seed7/n{i}": 0.8 if i < 5 else 0.1 for i in range(100)}
    more = {key: kinds[i % 2] for i, key in enumerate(scores)}
    pooled = attribution.calibrate(manifest, outcome, pooled=(scores, more), **fit)

    assert alone.use_threshold < 0.8 < pooled.use_threshold
    assert len(pooled.calibration_ids) + len(pooled.heldout_ids) == 200
    assert pooled.overall_curve() != alone.overall_curve()
