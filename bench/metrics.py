"""Attribution quality metrics, shared by the offline tuner and the end-to-end HTTP runner.

Inputs are plain values so either side can build them: the true sources of a query (from the
corpus manifest) and the ranked predictions (from `attribute` or from a check response).

    outcome = score_query(query.sources, predictions, threshold=params.abstain_threshold)
    fp = is_false_positive(negative_predictions, threshold=params.abstain_threshold)
    rows = [summarise_queries("clean", [outcome, ...]), summarise_negatives("negatives", [fp, ...])]
    print(format_table(rows))

Definitions (per query, at the abstain threshold; predictions below it are ignored):

* ``top1``: the best prediction is one of the query's sources.
* ``recall5``: share of the query's sources among the best five predictions.
* ``all_top3``: every source is among the best three (the bar for two-piece mixes).
* ``time_error_s``: for each found source, the evidence run overlapping the source's query
  interval most is read at its midpoint; the error is the distance between the reference time
  it claims there and the true one. Median over the query's found sources.
* ``true_share``: sum of the sources' shares, share = resemblance / sum of the resemblances
  of all predictions at or above the threshold.
* a negative (music not in the catalogue) is a false positive when any prediction reaches
  the threshold.
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


@dataclass(frozen=True, slots=True)
class Span:
    """One evidence run as the API reports it."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    similarity: float = 0.0


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
            )
            for e in data.get("evidence", ())
        )
        return cls(piece_id=piece_id, resemblance=float(data["resemblance"]), evidence=spans)


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    top1: bool
    recall5: float
    all_top3: bool
    found: float  # share of the sources predicted at any rank
    time_error_s: float | None  # None when no source was found
    true_share: float
    n_predictions: int


@dataclass
class Row:
    """Aggregate of one query set (a transformation, or the negatives)."""

    name: str
    n: int
    top1: float | None = None
    recall5: float | None = None
    all_top3: float | None = None
    found: float | None = None
    time_error_median_s: float | None = None
    time_error_p90_s: float | None = None
    true_share: float | None = None
    fpr: float | None = None


def _kept(predictions: Sequence[Prediction], threshold: float) -> list[Prediction]:
    return [p for p in predictions if p.resemblance >= threshold]


def score_query(
    sources: Sequence[SourceLike], predictions: Sequence[Prediction], *, threshold: float
) -> QueryOutcome:
    """Score the ranked predictions of one query against its true sources."""
    kept = _kept(predictions, threshold)
    truth = {s.piece_id for s in sources}
    ranked = [p.piece_id for p in kept]
    total = sum(p.resemblance for p in kept)
    by_piece = {p.piece_id: p for p in kept}
    errors = [
        err
        for s in sources
        if s.piece_id in by_piece
        for err in [evidence_error(s, by_piece[s.piece_id].evidence)]
        if err is not None
    ]
    return QueryOutcome(
        top1=bool(ranked) and ranked[0] in truth,
        recall5=len(truth & set(ranked[:5])) / len(truth) if truth else 0.0,
        all_top3=bool(truth) and truth <= set(ranked[:3]),
        found=len(truth & set(ranked)) / len(truth) if truth else 0.0,
        time_error_s=_median(errors) if errors else None,
        true_share=(
            sum(p.resemblance for p in kept if p.piece_id in truth) / total if total > 0 else 0.0
        ),
        n_predictions=len(kept),
    )


def is_false_positive(predictions: Sequence[Prediction], *, threshold: float) -> bool:
    """A negative query is a false positive when any prediction reaches the threshold."""
    return bool(_kept(predictions, threshold))


def evidence_error(source: SourceLike, evidence: Sequence[Span]) -> float | None:
    """Reference-time error (s) of the run that overlaps the source's query interval most."""
    best: Span | None = None
    best_overlap = 0.0
    for e in evidence:
        overlap = min(e.query_end, source.query_end_s) - max(e.query_start, source.query_start_s)
        if overlap > best_overlap:
            best, best_overlap = e, overlap
    if best is None:
        return None
    mid = 0.5 * (
        max(best.query_start, source.query_start_s) + min(best.query_end, source.query_end_s)
    )
    expected = source.source_start_s + (mid - source.query_start_s) * source.tempo_factor
    length = best.query_end - best.query_start
    slope = (best.reference_end - best.reference_start) / length if length > 0 else 1.0
    claimed = best.reference_start + (mid - best.query_start) * slope
    return abs(claimed - expected)


def summarise_queries(name: str, outcomes: Sequence[QueryOutcome]) -> Row:
    """Aggregate the outcomes of one query set."""
    n = len(outcomes)
    if n == 0:
        return Row(name=name, n=0)
    errors = sorted(o.time_error_s for o in outcomes if o.time_error_s is not None)
    return Row(
        name=name,
        n=n,
        top1=sum(o.top1 for o in outcomes) / n,
        recall5=sum(o.recall5 for o in outcomes) / n,
        all_top3=sum(o.all_top3 for o in outcomes) / n,
        found=sum(o.found for o in outcomes) / n,
        time_error_median_s=_median(errors) if errors else None,
        time_error_p90_s=quantile(errors, 0.9) if errors else None,
        true_share=sum(o.true_share for o in outcomes) / n,
    )


def summarise_negatives(name: str, false_positives: Sequence[bool]) -> Row:
    """False-positive rate of one negative set."""
    n = len(false_positives)
    return Row(name=name, n=n, fpr=sum(false_positives) / n if n else None)


def calibrate_threshold(scores: Iterable[float], *, target_fpr: float) -> float:
    """Lowest threshold at which at most `target_fpr` of the negatives' best scores reach it.

    scores : the best resemblance of each negative (0 when it had no match at all)
    A negative is a false positive when its score >= threshold, so the result sits just
    above the highest score that must be rejected.
    """
    values = sorted(scores, reverse=True)
    if not values:
        raise ValueError("need at least one negative to calibrate")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    allowed = math.floor(target_fpr * len(values) + 1e-9)
    if allowed >= len(values):
        return 0.0
    rejected = values[allowed]  # the highest score that must stay below the threshold
    return float(math.nextafter(rejected, math.inf))


def split_half(ids: Iterable[str], *, salt: str = "calibration") -> tuple[set[str], set[str]]:
    """Deterministic split into (calibration, held-out) halves by hashed id order."""
    ordered = sorted(ids, key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())
    return set(ordered[0::2]), set(ordered[1::2])


@dataclass(frozen=True)
class Calibration:
    """An abstain threshold and the false-positive rates it gives on both halves."""

    threshold: float
    target_fpr: float
    calibration_ids: frozenset[str]
    heldout_ids: frozenset[str]
    calibration_fpr: float
    heldout_fpr: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "method": "abstain_threshold = lowest value at which at most target_fpr of the "
            "calibration half of the negatives reach it (negatives split per kind by hashed "
            "id); the false-positive rate is reported on the held-out half",
            "threshold": math.ceil(self.threshold * 1e6) / 1e6,
            "target_fpr": self.target_fpr,
            "n_calibration": len(self.calibration_ids),
            "n_heldout": len(self.heldout_ids),
            "calibration_fpr": round(self.calibration_fpr, 4),
            "heldout_fpr": round(self.heldout_fpr, 4),
        }


def calibrate(
    scores: Mapping[str, float],
    kinds: Mapping[str, str],
    *,
    target_fpr: float,
    min_threshold: float = 0.0,
) -> Calibration:
    """Fit the abstain threshold on one half of the negatives, measure it on the other.

    scores : best resemblance of each negative (0 when nothing matched), by negative id
    kinds : each negative's kind (hard / other); each kind is split in half on its own
    """
    fit: set[str] = set()
    held: set[str] = set()
    for kind in sorted(set(kinds.values())):
        a, b = split_half(i for i, k in kinds.items() if k == kind)
        fit |= a
        held |= b
    threshold = max(
        calibrate_threshold([scores[i] for i in sorted(fit)], target_fpr=target_fpr),
        min_threshold,
    )

    def fpr(ids: set[str]) -> float:
        return sum(scores[i] >= threshold for i in ids) / len(ids) if ids else 0.0

    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        calibration_ids=frozenset(fit),
        heldout_ids=frozenset(held),
        calibration_fpr=fpr(fit),
        heldout_fpr=fpr(held),
    )


def row_json(row: Row) -> dict[str, float | int]:
    """The row's measured values, rounded, for JSON files (absent values left out)."""
    out: dict[str, float | int] = {"n": row.n}
    for name in ("top1", "recall5", "all_top3", "found", "time_error_median_s", "true_share",
                 "fpr"):  # fmt: skip
        value = getattr(row, name)
        if value is not None:
            out[name] = round(float(value), 4)
    return out


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of the rows."""
    head = (
        f"{'set':<16}{'n':>5}{'top1':>7}{'rec@5':>7}{'both@3':>8}{'found':>7}"
        f"{'err50':>7}{'err90':>7}{'share':>7}{'FPR':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<16}{r.n:>5}{_fmt(r.top1):>7}{_fmt(r.recall5):>7}{_fmt(r.all_top3):>8}"
            f"{_fmt(r.found):>7}{_fmt(r.time_error_median_s, 1):>7}"
            f"{_fmt(r.time_error_p90_s, 1):>7}{_fmt(r.true_share):>7}{_fmt(r.fpr, 3):>7}"
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
