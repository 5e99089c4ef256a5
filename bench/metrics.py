"""Attribution quality metrics, shared by the offline tuner and the end-to-end HTTP runner.

Inputs are plain values so either side can build them: the true sources of a query (from the
corpus manifest) and the ranked predictions (from `attribute` or from a check response).

    outcome = score_query(query.sources, predictions, threshold=abstain, use_threshold=use)
    best = best_score(negative_predictions)
    rows = [summarise_queries("clean", [outcome, ...]),
            summarise_negatives("negatives", [best, ...], threshold=abstain, use_threshold=use)]
    print(format_table(rows))

Two thresholds: the abstain threshold (a match below it is not reported) and the use threshold
(a reported match at or above it is a paid use). Per query:

* ``top1``: the best prediction at the abstain threshold is one of the query's sources.
* ``recall5``: share of the query's sources among the best five predictions.
* ``all_top3``: every source is among the best three (the bar for two-piece mixes).
* ``found``: every source is listed (at the abstain threshold).
* ``paid``: every source's resemblance reaches the use threshold (the headline metric), or,
  with a beside threshold, reaches that one beside a paid match at least as strong (the
  service's rule for the other sources of a mix, `paid_pieces`).
* ``sources_paid``: the share of the query's sources that do (a mix with two of three paid
  counts 2/3 here, 0 in ``paid``).
* ``located``: paid, and every source's evidence lies within ``LOCATED_S`` of the truth.
* ``key_right``: every found source's evidence (the run overlapping its query interval most)
  reports the shift the source was played at (``transpose``; a tritone either way, since
  +6 and -6 are one rotation); not judged when no found source has a run reporting one.
* ``time_error_s``: for each found source, the evidence run overlapping the source's query
  interval most is read at its midpoint; the error is the distance between the reference time
  it claims there and the true one. Median over the query's found sources.
* ``true_share``: sum of the sources' shares, share = resemblance / sum of the resemblances
  of all predictions at or above the abstain threshold.
* ``source_resemblance``: the lowest resemblance among the sources (0 for one not listed at
  all); summarised as min / p10 / median over the queries whose every source fills at least
  ``FULL_REUSE_S`` of the query: resemblance 1.0 means verbatim reuse of that much.
* a negative (music not in the catalogue) is a false positive at a threshold when any
  prediction reaches it; the rate is reported at both thresholds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class SourceLike(Protocol):
    """Where a catalogue piece appears in a query (bench.corpus.SourceSpan fits)."""

    @property
    def piece_id(self) -> str: ...
    @property
    def source_start_s(self) -> float: ...
    @property
    def source_end_s(self) -> float: ...
    @property
    def query_start_s(self) -> float: ...
    @property
    def query_end_s(self) -> float: ...
    @property
    def tempo_factor(self) -> float: ...
    @property
    def transpose(self) -> int: ...
    @property
    def repeat_offsets_s(self) -> Sequence[float]: ...


@dataclass(frozen=True, slots=True)
class Span:
    """One evidence run as the API reports it."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    similarity: float = 0.0
    transposition: int | None = None  # semitones the query sounds above the reference


@dataclass(frozen=True, slots=True)
class Prediction:
    """One matched catalogue piece, in ranking order."""

    piece_id: str
    resemblance: float
    evidence: tuple[Span, ...] = ()

    @classmethod
    def from_dict(cls, piece_id: str, data: Mapping[str, Any]) -> Prediction:
        """From a JSON match: {"resemblance": .., "evidence": [{"query_start": ..}, ..]}."""
        spans = tuple(
            Span(
                query_start=float(e["query_start"]),
                query_end=float(e["query_end"]),
                reference_start=float(e["reference_start"]),
                reference_end=float(e["reference_end"]),
                similarity=float(e.get("similarity", 0.0)),
                transposition=None if e.get("transposition") is None else int(e["transposition"]),
            )
            for e in data.get("evidence", ())
        )
        return cls(piece_id=piece_id, resemblance=float(data["resemblance"]), evidence=spans)


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    top1: bool
    recall5: float
    all_top3: bool
    found: bool  # every source listed at the abstain threshold
    time_error_s: float | None  # None when no source was found
    true_share: float
    n_predictions: int
    paid: bool = False  # every source at or above the use threshold
    sources_paid: float = 0.0  # share of the sources at or above the use threshold
    located: bool = False  # paid, with every source's evidence within LOCATED_S
    source_resemblance: float = 0.0  # lowest resemblance among the sources
    long: bool = False  # every source fills at least FULL_REUSE_S of the query
    key_right: bool | None = None  # found sources' evidence reports their shift; None: not judged


@dataclass
class Row:
    """Aggregate of one query set (a transformation, or the negatives)."""

    name: str
    n: int
    top1: float | None = None
    recall5: float | None = None
    all_top3: float | None = None
    found: float | None = None
    paid: float | None = None
    sources_paid: float | None = None  # share of all the set's sources paid (mixes: each one)
    located: float | None = None
    key_right: float | None = None  # share of the queries whose shift could be judged
    time_error_median_s: float | None = None
    time_error_p90_s: float | None = None
    true_share: float | None = None
    n_long: int | None = None  # queries whose sources each fill FULL_REUSE_S or more
    resemblance_min: float | None = None  # of the true sources, over the long queries
    resemblance_p10: float | None = None
    resemblance_median: float | None = None
    fpr: float | None = None  # negatives: at the abstain threshold
    fpr_use: float | None = None  # negatives: at the use threshold


FULL_REUSE_S = 16.0  # verbatim reuse of this long scores resemblance 1.0
LOCATED_S = 1.0  # evidence within this many seconds of the truth locates the source


def paid_pieces(
    predictions: Sequence[Prediction],
    *,
    use_threshold: float,
    beside_threshold: float | None,
    abstain_threshold: float = 0.0,
) -> set[str]:
    """The pieces a check pays, as the service decides (`app.checks.service._thresholds`):
    those at or above the use threshold (and the abstain threshold: a match not listed is not
    paid alone), and those under the use threshold, at or above the beside threshold, that
    are heard beside a paid match at least as strong."""
    floor = max(use_threshold, abstain_threshold)
    alone = [p.resemblance for p in predictions if p.resemblance >= floor]
    if not alone:
        return set()
    strongest = max(alone)
    lowest = use_threshold if beside_threshold is None else min(beside_threshold, use_threshold)
    return {
        p.piece_id
        for p in predictions
        if p.resemblance >= floor
        or (lowest <= p.resemblance < use_threshold and p.resemblance <= strongest)
    }


def beside_score(predictions: Sequence[Prediction], truth: set[str], use_threshold: float) -> float:
    """The best resemblance of a piece that is not a source, heard beside a paid match at
    least as strong (0 when none): what a beside threshold must reject. Only meaningful when
    the check pays something (`paid_pieces`)."""
    alone = [p.resemblance for p in predictions if p.resemblance >= use_threshold]
    strongest = max(alone, default=-1.0)
    return max(
        (p.resemblance for p in predictions
         if p.piece_id not in truth and p.resemblance <= strongest),
        default=0.0,
    )  # fmt: skip


def score_query(
    sources: Sequence[SourceLike],
    predictions: Sequence[Prediction],
    *,
    threshold: float,
    use_threshold: float | None = None,
    beside_threshold: float | None = None,
) -> QueryOutcome:
    """Score the ranked predictions of one query against its true sources.

    threshold : the abstain threshold; use_threshold : from which a match is a paid use
    (default: the abstain threshold); beside_threshold : from which a match heard beside a
    paid one at least as strong is paid too (default: none, `paid_pieces`)
    """
    use = threshold if use_threshold is None else use_threshold
    paying = paid_pieces(predictions, use_threshold=use, beside_threshold=beside_threshold,
                         abstain_threshold=threshold)  # fmt: skip
    # Listed, as the service lists them (`app.checks.service._ranked_uses`): from the abstain
    # threshold, and under it when paid beside a stronger use.
    kept = [p for p in predictions if p.resemblance >= threshold or p.piece_id in paying]
    truth = {s.piece_id for s in sources}
    ranked = [p.piece_id for p in kept]
    total = sum(p.resemblance for p in kept)
    by_piece = {p.piece_id: p for p in kept}
    source_errors = {
        s.piece_id: evidence_error(s, by_piece[s.piece_id].evidence)
        for s in sources
        if s.piece_id in by_piece
    }
    errors = [e for e in source_errors.values() if e is not None]
    keys = [
        key
        for s in sources
        if s.piece_id in by_piece
        and (key := _key_right(s, by_piece[s.piece_id].evidence)) is not None
    ]
    best = {p.piece_id: p.resemblance for p in reversed(predictions)}
    resemblances = [best.get(piece, 0.0) for piece in truth]
    paid_each = [piece in paying for piece in truth]
    paid = bool(paid_each) and all(paid_each)
    located = paid and all(
        (e := source_errors.get(piece)) is not None and e <= LOCATED_S for piece in truth
    )
    return QueryOutcome(
        top1=bool(ranked) and ranked[0] in truth,
        recall5=len(truth & set(ranked[:5])) / len(truth) if truth else 0.0,
        all_top3=bool(truth) and truth <= set(ranked[:3]),
        found=bool(truth) and truth <= set(ranked),
        time_error_s=_median(errors) if errors else None,
        true_share=(
            sum(p.resemblance for p in kept if p.piece_id in truth) / total if total > 0 else 0.0
        ),
        n_predictions=len(kept),
        paid=paid,
        sources_paid=sum(paid_each) / len(paid_each) if paid_each else 0.0,
        located=located,
        source_resemblance=min(resemblances, default=0.0),
        key_right=all(keys) if keys else None,
        long=bool(sources)
        and all(s.query_end_s - s.query_start_s >= FULL_REUSE_S - 1e-6 for s in sources),
    )


def evidence_error(source: SourceLike, evidence: Sequence[Span]) -> float | None:
    """Reference-time error (s) of the evidence for one source, None when none overlaps it.

    Among the runs covering at least half as much of the source's query interval as the
    best-covering run, the smallest error counts (several runs may align the same query
    passage); an error is measured to the true position or to any of its repeats
    (`repeat_offsets_s`, when the source records them), whichever is nearest.
    """
    overlaps = _overlaps(source, evidence)
    most = max((o for o, _ in overlaps), default=0.0)
    if most <= 0:
        return None
    shifts = [0.0, *source.repeat_offsets_s]
    errors = []
    for overlap, e in overlaps:
        if overlap < 0.5 * most:
            continue
        mid = 0.5 * (
            max(e.query_start, source.query_start_s) + min(e.query_end, source.query_end_s)
        )
        expected = source.source_start_s + (mid - source.query_start_s) * source.tempo_factor
        length = e.query_end - e.query_start
        slope = (e.reference_end - e.reference_start) / length if length > 0 else 1.0
        claimed = e.reference_start + (mid - e.query_start) * slope
        errors.append(min(abs(claimed - expected - d) for d in shifts))
    return min(errors)


def _overlaps(source: SourceLike, evidence: Sequence[Span]) -> list[tuple[float, Span]]:
    """(seconds of the source's query interval it covers, run) for each evidence run."""
    return [
        (min(e.query_end, source.query_end_s) - max(e.query_start, source.query_start_s), e)
        for e in evidence
    ]


def _key_right(source: SourceLike, evidence: Sequence[Span]) -> bool | None:
    """Whether the run overlapping the source's query interval most reports its shift (None:
    no overlapping run reports a shift)."""
    overlaps = [(o, e) for o, e in _overlaps(source, evidence) if e.transposition is not None]
    overlap, run = max(overlaps, key=lambda o: o[0], default=(0.0, None))
    if run is None or overlap <= 0 or run.transposition is None:  # (None: for the type checker)
        return None
    truth = source.transpose
    if abs(truth) == 6:  # a tritone: +6 and -6 are the same rotation
        return run.transposition % 12 == 6
    return run.transposition == truth


def summarise_queries(name: str, outcomes: Sequence[QueryOutcome]) -> Row:
    """Aggregate the outcomes of one query set."""
    n = len(outcomes)
    if n == 0:
        return Row(name=name, n=0)
    errors = sorted(o.time_error_s for o in outcomes if o.time_error_s is not None)
    long = sorted(o.source_resemblance for o in outcomes if o.long)
    keys = [o.key_right for o in outcomes if o.key_right is not None]
    return Row(
        name=name,
        n=n,
        top1=sum(o.top1 for o in outcomes) / n,
        recall5=sum(o.recall5 for o in outcomes) / n,
        all_top3=sum(o.all_top3 for o in outcomes) / n,
        found=sum(o.found for o in outcomes) / n,
        paid=sum(o.paid for o in outcomes) / n,
        sources_paid=sum(o.sources_paid for o in outcomes) / n,
        located=sum(o.located for o in outcomes) / n,
        key_right=sum(keys) / len(keys) if keys else None,
        time_error_median_s=_median(errors) if errors else None,
        time_error_p90_s=quantile(errors, 0.9) if errors else None,
        true_share=sum(o.true_share for o in outcomes) / n,
        n_long=len(long),
        resemblance_min=long[0] if long else None,
        resemblance_p10=quantile(long, 0.1) if long else None,
        resemblance_median=quantile(long, 0.5) if long else None,
    )


def best_score(predictions: Sequence[Prediction]) -> float:
    """Highest resemblance among the predictions (0 when there are none)."""
    return max((p.resemblance for p in predictions), default=0.0)


def summarise_negatives(
    name: str, scores: Sequence[float], *, threshold: float, use_threshold: float | None = None
) -> Row:
    """False-positive rates of one negative set at the abstain and the use threshold.

    scores : the best resemblance of each negative (`best_score`)
    """
    n = len(scores)
    use = threshold if use_threshold is None else use_threshold
    return Row(
        name=name,
        n=n,
        fpr=sum(s >= threshold for s in scores) / n if n else None,
        fpr_use=sum(s >= use for s in scores) / n if n else None,
    )


RESCORE_MARGIN = 1e-3
"""How far above the highest score it must reject a fitted threshold sits. The same check
scored on another machine differs in its last bits (BLAS rounds a product by its shape and the
CPU's kernels): a negative fitted 1e-6 under the threshold crossed it on the next machine. A
thousandth of resemblance is far above that noise and far below what separates a use from a
negative."""


def allowed_above(n: int, target_fpr: float) -> int:
    """How many of `n` negatives may reach a threshold fitted for `target_fpr` on music the
    fit never saw: the split-conformal order statistic.

    Rejecting every score up to the k-th smallest of n exchangeable scores lets a new one
    through with probability (n + 1 - k) / (n + 1), so k = ceil((n + 1)(1 - target_fpr))
    keeps that at or under the target whatever the scores' distribution. Letting through
    floor(target_fpr * n), the share asked for in-sample, overshoots it on new music: at 1 %
    of 246 negatives (2 through) the rate on new ones is 3 / 247 = 1.2 %, at 1 of 246 it is
    0.8 %. Below 1 / target_fpr - 1 negatives (99 at 1 %) none may pass.
    """
    keep = math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9)
    return max(0, n - keep)


def calibrate_threshold(
    scores: Iterable[float], *, target_fpr: float, margin: float = RESCORE_MARGIN
) -> float:
    """Lowest threshold, `margin` above the highest score that must be rejected, at which a
    negative the fit did not see reaches it with probability at most `target_fpr`
    (`allowed_above`).

    scores : the best resemblance of each negative (0 when it had no match at all)
    A negative is a false positive when its score >= threshold.
    """
    values = sorted(scores, reverse=True)
    if not values:
        raise ValueError("need at least one negative to calibrate")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    allowed = allowed_above(len(values), target_fpr)
    if allowed >= len(values):
        return 0.0
    rejected = values[allowed]  # the highest score that must stay below the threshold
    return float(math.nextafter(rejected + margin, math.inf))


def split_half(ids: Iterable[str], *, salt: str = "calibration") -> tuple[set[str], set[str]]:
    """Deterministic split into (calibration, held-out) halves by hashed id order."""
    ordered = sorted(ids, key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())
    return set(ordered[0::2]), set(ordered[1::2])


CURVE_STEP = 0.01  # resolution of the reported false-positive curve


@dataclass(frozen=True)
class Calibration:
    """Both thresholds, fitted on one half of the negatives, with their rates on both halves.

    The abstain threshold lets through a negative the fit did not see with probability at most
    `abstain_target_fpr`, the use threshold at most `target_fpr` (`allowed_above`); `curve`
    gives, for resemblance values r on a grid, the share of negatives whose best match reaches
    r on the calibration half (and `heldout_curve` on the held-out half).
    """

    threshold: float  # the abstain threshold
    target_fpr: float  # of the use threshold
    calibration_ids: frozenset[str]
    heldout_ids: frozenset[str]
    calibration_fpr: float  # at the abstain threshold
    heldout_fpr: float
    use_threshold: float = 0.0
    abstain_target_fpr: float = 0.0
    use_calibration_fpr: float = 0.0
    use_heldout_fpr: float = 0.0
    curve: tuple[tuple[float, float], ...] = ()
    heldout_curve: tuple[tuple[float, float], ...] = ()
    # Cross-fitted rates: each half judged at the thresholds fitted on the other half, pooled.
    # The honest estimate when the thresholds themselves are fitted on every negative.
    crossfit_fpr: float = 0.0
    use_crossfit_fpr: float = 0.0
    fitted_on: str = "half"  # "half": the calibration half; "all": every negative
    beside: BesideCalibration | None = None  # the threshold beside a paid use, when fitted

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "thresholds fitted on the calibration half of the negatives (split per "
            "kind by hashed id): abstain_threshold = lowest value a negative the fit did not "
            "see reaches with probability at most abstain_target_fpr (the split-conformal "
            "order statistic: of n negatives, n - ceil((n + 1)(1 - target)) may reach it), "
            "use_threshold the same for target_fpr (never below the abstain threshold); rates "
            "reported on both "
            "halves; with fitted_on 'all' the thresholds are fitted on every negative and the "
            "crossfit rates (each half at thresholds fitted on the other) are the honest "
            "ones; curve = [r, share of calibration-half negatives whose best match >= r]",
            "threshold": _round_up(self.threshold),
            "abstain_target_fpr": self.abstain_target_fpr,
            "use_threshold": _round_up(self.use_threshold),
            "target_fpr": self.target_fpr,
            "n_calibration": len(self.calibration_ids),
            "n_heldout": len(self.heldout_ids),
            "calibration_fpr": round(self.calibration_fpr, 4),
            "heldout_fpr": round(self.heldout_fpr, 4),
            "use_calibration_fpr": round(self.use_calibration_fpr, 4),
            "use_heldout_fpr": round(self.use_heldout_fpr, 4),
            "fitted_on": self.fitted_on,
            "crossfit_fpr": round(self.crossfit_fpr, 4),
            "use_crossfit_fpr": round(self.use_crossfit_fpr, 4),
            "curve": [[r, round(f, 4)] for r, f in self.curve],
            "heldout_curve": [[r, round(f, 4)] for r, f in self.heldout_curve],
        }
        if self.beside is not None:
            out["beside"] = self.beside.as_dict()
        return out

    def overall_curve(self) -> list[list[float]]:
        """The curve over every negative (both halves), as the service reads it."""
        n_fit, n_held = len(self.calibration_ids), len(self.heldout_ids)
        total = n_fit + n_held
        return [
            [r, round((f * n_fit + h * n_held) / total, 4) if total else 0.0]
            for (r, f), (_, h) in zip(self.curve, self.heldout_curve, strict=True)
        ]


def _round_up(value: float) -> float:
    """Up to 6 decimals, so a score the threshold was fitted to reject stays rejected."""
    return math.ceil(value * 1e6) / 1e6


def fpr_curve(scores: Sequence[float], grid: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """(r, share of `scores` >= r) for each r of the grid."""
    n = len(scores)
    return tuple((r, sum(s >= r for s in scores) / n if n else 0.0) for r in grid)


def calibrate(
    scores: Mapping[str, float],
    kinds: Mapping[str, str],
    *,
    target_fpr: float,
    abstain_fpr: float | None = None,
    min_threshold: float = 0.0,
    fit_on_all: bool = False,
) -> Calibration:
    """Fit the abstain and use thresholds on one half of the negatives, measure on the other.

    With `fit_on_all` the thresholds are fitted on every negative instead (a single split lets
    one or two outliers decide the threshold by the half they fall in), and the honest rates
    are the cross-fitted ones: each half at the thresholds fitted on the other half, pooled.

    scores : best resemblance of each negative (0 when nothing matched), by negative id
    kinds : each negative's kind (hard / other); each kind is split in half on its own
    target_fpr : of the use threshold; abstain_fpr : of the abstain threshold (default the
    same); both thresholds stay at or above `min_threshold`
    """
    abstain_fpr = target_fpr if abstain_fpr is None else abstain_fpr
    fit: set[str] = set()
    held: set[str] = set()
    for kind in sorted(set(kinds.values())):
        a, b = split_half(i for i, k in kinds.items() if k == kind)
        fit |= a
        held |= b

    def thresholds(ids: set[str]) -> tuple[float, float]:
        values = [scores[i] for i in sorted(ids)]
        abstain = max(calibrate_threshold(values, target_fpr=abstain_fpr), min_threshold)
        return abstain, max(calibrate_threshold(values, target_fpr=target_fpr), abstain)

    def fpr(ids: set[str], at: float) -> float:
        return sum(scores[i] >= at for i in ids) / len(ids) if ids else 0.0

    def crossfit(pick: int) -> float:
        """Each half at the threshold (0: abstain, 1: use) fitted on the other half."""
        if not fit or not held:
            return 0.0
        on_held, on_fit = thresholds(fit)[pick], thresholds(held)[pick]
        hits = sum(scores[i] >= on_held for i in held) + sum(scores[i] >= on_fit for i in fit)
        return hits / (len(fit) + len(held))

    fit_scores = [scores[i] for i in sorted(fit)]
    threshold, use = thresholds(fit | held if fit_on_all else fit)

    grid = [round(i * CURVE_STEP, 6) for i in range(round(1 / CURVE_STEP) + 1)]
    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        calibration_ids=frozenset(fit),
        heldout_ids=frozenset(held),
        calibration_fpr=fpr(fit, threshold),
        heldout_fpr=fpr(held, threshold),
        use_threshold=use,
        abstain_target_fpr=abstain_fpr,
        use_calibration_fpr=fpr(fit, use),
        use_heldout_fpr=fpr(held, use),
        curve=fpr_curve(fit_scores, grid),
        heldout_curve=fpr_curve([scores[i] for i in sorted(held)], grid),
        crossfit_fpr=crossfit(0),
        use_crossfit_fpr=crossfit(1),
        fitted_on="all" if fit_on_all else "half",
    )


@dataclass(frozen=True)
class BesideCalibration:
    """The beside threshold: from which a match heard beside a paid use is paid too.

    Fitted on the checks of true sources that pay something: in each, the best match that is
    not a source and sits beside a paid match at least as strong (`beside_score`). A check the
    fit did not see reaches the threshold with probability at most `target_fpr`
    (`allowed_above`); it stays between a floor (the calibration's least threshold) and the
    use threshold, and may lie under the abstain threshold: a match paid beside a stronger
    use is listed from it (`score_query`). `crossfit_fpr`: each half of the checks (by hashed
    id) judged at the threshold fitted on the other half, pooled.
    """

    threshold: float
    target_fpr: float
    n: int
    fpr: float  # in-sample, at the threshold
    crossfit_fpr: float
    curve: tuple[tuple[float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "beside_use_threshold = lowest value reached with probability at most "
            "target_fpr (split-conformal, as the use threshold) by the checks of true sources "
            "that pay something, counting in each the best match "
            "that is not a source and sits beside a paid match at least as strong (kept between "
            "the least threshold and the use threshold; a match paid beside a stronger use is "
            "listed from it, under the abstain threshold too); crossfit_fpr: each half of "
            "those checks at "
            "the threshold fitted on the other half; curve = [r, share of them reaching r]",
            "threshold": _round_up(self.threshold),
            "target_fpr": self.target_fpr,
            "n": self.n,
            "fpr": round(self.fpr, 4),
            "crossfit_fpr": round(self.crossfit_fpr, 4),
            "curve": [[r, round(f, 4)] for r, f in self.curve],
        }


def calibrate_beside(
    scores: Mapping[str, float], *, target_fpr: float, floor: float, ceiling: float
) -> BesideCalibration:
    """Fit the beside threshold on `scores` (check id -> `beside_score`, over the checks of
    true sources that pay something), kept within floor..ceiling (the least threshold the
    calibration sets and the use threshold)."""
    if not scores:
        raise ValueError("need at least one check with a paid use to calibrate beside it")

    def fit(ids: Iterable[str]) -> float:
        values = [scores[i] for i in ids]
        return min(max(calibrate_threshold(values, target_fpr=target_fpr), floor), ceiling)

    threshold = fit(sorted(scores))
    a, b = split_half(scores, salt="beside")
    crossfit = 0.0
    if a and b:
        on_a, on_b = fit(sorted(b)), fit(sorted(a))  # each half at the other half's fit
        hits = sum(scores[i] >= on_a for i in a) + sum(scores[i] >= on_b for i in b)
        crossfit = hits / len(scores)
    values = list(scores.values())
    grid = [round(i * CURVE_STEP, 6) for i in range(round(1 / CURVE_STEP) + 1)]
    return BesideCalibration(
        threshold=threshold,
        target_fpr=target_fpr,
        n=len(values),
        fpr=sum(v >= threshold for v in values) / len(values),
        crossfit_fpr=crossfit,
        curve=fpr_curve(values, grid),
    )


ROW_FIELDS = (
    "top1", "recall5", "all_top3", "found", "paid", "sources_paid", "located",
    "time_error_median_s", "time_error_p90_s", "true_share", "n_long", "resemblance_min",
    "resemblance_p10", "resemblance_median", "fpr", "fpr_use",
)  # fmt: skip


def row_json(row: Row) -> dict[str, float | int]:
    """The row's measured values, rounded, for JSON files (absent values left out)."""
    out: dict[str, float | int] = {"n": row.n}
    for name in ROW_FIELDS:
        value = getattr(row, name)
        if value is not None:
            out[name] = value if isinstance(value, int) else round(float(value), 4)
    return out


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of the rows.

    srcp: share of the sources paid (for mixes each source counts; "paid" needs all of them);
    key: share of the queries, among those judged, whose evidence reports the true shift;
    r-min / r-p10 / r-med: the true source's resemblance over the queries whose sources fill
    at least FULL_REUSE_S; FPR / FPRuse: negatives at the abstain / the use threshold.
    """
    head = (
        f"{'set':<14}{'n':>5}{'top1':>6}{'rec5':>6}{'top3':>6}{'found':>6}{'paid':>6}"
        f"{'srcp':>6}{'loc':>6}{'key':>6}{'err50':>6}{'err90':>6}{'share':>6}{'r-min':>6}{'r-p10':>6}{'r-med':>6}"
        f"{'FPR':>7}{'FPRuse':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<14}{r.n:>5}{_fmt(r.top1):>6}{_fmt(r.recall5):>6}{_fmt(r.all_top3):>6}"
            f"{_fmt(r.found):>6}{_fmt(r.paid):>6}{_fmt(r.sources_paid):>6}{_fmt(r.located):>6}"
            f"{_fmt(r.key_right):>6}"
            f"{_fmt(r.time_error_median_s, 1):>6}{_fmt(r.time_error_p90_s, 1):>6}"
            f"{_fmt(r.true_share):>6}{_fmt(r.resemblance_min):>6}{_fmt(r.resemblance_p10):>6}"
            f"{_fmt(r.resemblance_median):>6}{_fmt(r.fpr, 3):>7}{_fmt(r.fpr_use, 3):>7}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[float]) -> float:
    return quantile(sorted(values), 0.5)


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))
