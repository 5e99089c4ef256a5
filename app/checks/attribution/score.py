"""Scoring: how much of the query a track's runs cover, and how well.

Scoring
-------
Each query window's best inlier similarity ``s`` maps to a quality
``u = clip((s - similarity_floor) / (similarity_full - similarity_floor), 0, 1)`` (in another
key the floor is ``transposition_margin`` higher: twelve keys searched are twelve chances); query
windows inside a run's span without an inlier count as 0. Each window then takes the best
quality within ``quality_dilation_hops`` of it in its run: the catalogue is stored at a coarser
hop than the query, so every other window of a verbatim reuse lies between two stored windows
and would otherwise score below its aligned neighbours. A run covers the windows of its span
with its mean quality; where runs overlap the best counts. A track's runs lie on one or more
lines (alignments, `align`): the line that covers most counts in full, and the others add
``other_line_weight`` of what they cover beyond it. A repeated passage matched at each of its
places adds nothing and loses nothing; stretches of the query matched at unrelated places of
one track, which is how music in the same style adds up by chance, count less than one
consistent borrowing. Each window stands for one query hop
of time (its centre slot), so the query offers ``offered = n_windows * hop`` seconds to cover,
its duration minus about one window. Then

    full = full_coverage_s - window + hop        (what a full_coverage_s borrowing offers)
    resemblance = min(1, covered / clip(offered, min_evidence_s, full))

* ``full_coverage_s`` is the length of audio that full resemblance asks for: verbatim reuse of
  ``full_coverage_s`` seconds or more, inside a piece of any length, scores 1 when every
  window of it matches at full quality; shorter borrowings score in proportion to their
  length, and a query shorter than ``full_coverage_s`` needs to be covered whole.
* ``min_evidence_s`` keeps a very short query, where one chance run can cover everything, from
  reaching full resemblance on little evidence.
* Counting window centres rather than whole windows keeps short runs from claiming a whole
  window length each.

Tracks below ``abstain_threshold`` are dropped; the threshold is calibrated on music that is
not in the catalogue (``python -m bench.attribution --calibrate``, written to calibration.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from app.checks.attribution.params import AttributionParams

if TYPE_CHECKING:
    from app.checks.attribution.align import Run

F64 = npt.NDArray[np.float64]


def quality(sim: F64, params: AttributionParams, variant: int = 0, span_s: float = 0.0) -> F64:
    """Window quality of similarities found at `variant` by a run spanning `span_s` seconds of
    window starts (its floor: `floor_for`)."""
    floor = params.floor_for(variant, span_s)
    out: F64 = np.clip((sim - floor) / (params.similarity_full - floor), 0.0, 1.0)
    return out


def resemblance(
    runs: list[Run], n_windows: int, query_hop_s: float, window_s: float, params: AttributionParams
) -> float:
    """Quality-weighted share of the query the runs cover, see the module docstring."""
    per_line: dict[int, F64] = {}
    hops = params.quality_dilation_hops
    for run in runs:
        covered = per_line.setdefault(run.line, np.zeros(n_windows))
        span = covered[run.first : run.last + 1]
        per_window = np.zeros(span.size)
        for w, u in run.quality.items():
            per_window[w - run.first] = u
        if hops:
            # A query window between two stored windows (the catalogue is stored at a coarser
            # hop) matches less well than its aligned neighbours: each window takes the best
            # quality within `hops` of it, inside the run.
            padded = np.pad(per_window, hops)
            per_window = np.max([padded[i : i + span.size] for i in range(2 * hops + 1)], axis=0)
        np.maximum(span, float(per_window.mean()), out=span)
    if not per_line:
        return 0.0
    lines = list(per_line.values())
    best = max(lines, key=lambda c: float(c.sum()))
    union = np.max(lines, axis=0)
    covered = best + params.other_line_weight * (union - best)
    seconds = float(covered.sum()) * query_hop_s
    offered = n_windows * query_hop_s
    full = max(params.full_coverage_s - window_s, 0.0) + query_hop_s
    denominator = min(max(offered, params.min_evidence_s), max(full, params.min_evidence_s))
    return float(min(1.0, seconds / denominator))
