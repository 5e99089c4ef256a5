"""Search, alignment and scoring constants, read from a calibration file."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from app.config import DEFAULT_CALIBRATION


@dataclass(frozen=True)
class AttributionParams:
    """Search, alignment and scoring constants; `load` reads a calibration file."""

    query_hop_s: float = 0.5  # hop between query windows
    # Semitone shifts the query is searched at: all twelve, since chroma fold octaves.
    transpositions: tuple[int, ...] = tuple(range(-5, 7))
    # Octave views of the query verification compares too (-1, 1: the pitch range moved an
    # octave down or up), for transpositions that carry notes out of the embedder's range.
    octave_views: tuple[int, ...] = (-1, 1)
    # How much better (mean best similarity per query window) an octave view must resemble a
    # track than the query as it is to replace it: the best of several views favours any
    # track a little (music not in the catalogue gains up to 0.04 with its best match, 99th
    # percentile), a piece played an octave away far more (0.13 - 0.19 at the 90th).
    octave_margin: float = 0.06
    k: int = 20  # neighbours per query window and shift in the proposal search
    propose_stride: int = 1  # the proposal search uses every n-th query window
    # The key scan: with a stride n > 1, the proposal searches every transposition on every
    # n-th window only, and the other windows at the `scan_keys` transpositions the scan found
    # strongest (1 searches every window at every transposition).
    key_scan_stride: int = 3
    scan_keys: int = 3
    # The proposal also searches the octave views (untransposed) on every n-th window: a
    # source an octave away can hide from the index in the query as it is (0: never). Every
    # 6th window costs 1/18 more searches than the key scan and finds all that every 3rd does.
    propose_octave_stride: int = 6
    propose_min_windows: int = 2  # query windows with hits that make a track a candidate
    max_candidates: int = 16  # candidates verified per proposal
    verify_k: int = 3  # reference windows per query window a verification keeps
    # Window similarity from which a window counts towards a use (quality 0 here, 1 at
    # similarity_full); 0.61 with note chroma kept the cross-fitted false-positive rate 0.8 %.
    similarity_floor: float = 0.61
    similarity_full: float = 0.9
    # How much higher the similarity floor is for a match in another key (a transposition
    # that is not a whole number of octaves). Searching twelve keys gives music not in the
    # catalogue twelve chances to meet a track by chance, so a match found only after
    # rotating the query must be closer to count: its quality runs from the raised floor to
    # similarity_full. A real transposed reuse matches near similarity_full and loses little;
    # a chance run at 0.7-0.8 loses most (the shipped calibration sets 0.1; README, "Any key").
    transposition_margin: float = 0.0
    # With a value > 0, a run in another key longer than this (seconds of window starts)
    # has its margin scaled down by this / its length: a chance alignment in one of twelve
    # keys is short, a transposed reuse covers the whole query (0: the margin is constant;
    # the shipped calibration sets 8 s, a 16 s run; README, "Any key").
    transposition_margin_span_s: float = 0.0
    tempo_min: float = 0.85
    tempo_max: float = 1.15
    tempo_step: float = 0.02  # log-spaced ratio grid step
    offset_tolerance_s: float = 1.5
    max_gap_s: float = 4.0
    min_run_s: float = 2.0
    min_run_hits: int = 3
    max_runs_per_track: int = 4
    # A use is one alignment of query and track: the runs of the line that covers most count in
    # full, those of its other lines (the same track matched at other places, as music in one
    # style does by chance) count this much where they cover what that line does not.
    other_line_weight: float = 0.5
    full_coverage_s: float = 16.0
    quality_dilation_hops: int = 1  # each query window takes the best quality this many hops near
    # Seconds of window centres a query must offer to be scored as a whole: a shorter one
    # covers at most its share of this. 2 s is four windows at the 0.5 s hop, so a check
    # of 9.5 s or more (8 s windows) made wholly of one recording can score 1. At 4 s (11.5 s)
    # verbatim excerpts of 9-11 s scored 0.38-0.88; at 2 s the calibrated use threshold and
    # its false-positive rate did not move (README, "Short queries").
    min_evidence_s: float = 2.0
    residual_passes: int = 2  # explain-away rounds in `attribute_vectors`; 0 turns it off
    explain_threshold: float = 0.1  # resemblance from which a match is explained away
    # After the first pass, a further source is explained away (and the index asked again for
    # what is left) only from this resemblance: a third source is looked for behind a second
    # that is more than a faint match (at 1M segments, in one pair of runs, a second pass at
    # 0.1 cost checks 28 ms at the median; at 0.15, 15 ms at the 95th percentile only).
    explain_again_threshold: float = 0.15
    # On what is left once sources are explained away, a reference window is compared by its
    # own part those sources do not account for: its similarity is divided by the length of
    # that part, floored at this (1 compares the reference as it is).
    unexplained_floor: float = 0.5
    abstain_threshold: float = 0.3  # resemblance from which a match is reported
    # The default license threshold: resemblance from which a match is a paid use, where a
    # catalogue's terms do not say (calibrated for a false-positive rate of at most 1 %).
    use_threshold: float = 0.5
    # A match heard beside a stronger paid use of the same piece (another source of a mix) is
    # paid from this resemblance where a catalogue has the default threshold, and from its own
    # threshold scaled by beside_use_threshold / use_threshold where it set one
    # (`beside_threshold`). Calibrated on the spurious matches that sit beside true uses: at
    # most 1 % of the checks with a paid use gain a spurious second source (README,
    # "Calibration"). At or above use_threshold (and where a file does not set it), a mix's
    # sources are judged as if heard alone.
    beside_use_threshold: float = 0.5

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in (
            "k",
            "propose_stride",
            "key_scan_stride",
            "scan_keys",
            "propose_min_windows",
            "max_candidates",
            "verify_k",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.propose_octave_stride < 0:
            problems.append(f"propose_octave_stride={self.propose_octave_stride} must be >= 0")
        if not self.transpositions or len(set(self.transpositions)) != len(self.transpositions):
            problems.append(f"transpositions={self.transpositions} must be distinct, not empty")
        if any(o not in (-1, 1) for o in self.octave_views) or len(set(self.octave_views)) != len(
            self.octave_views
        ):
            problems.append(f"octave_views={self.octave_views} must be distinct, from -1 and 1")
        if not 0.0 <= self.octave_margin <= 1.0:
            problems.append(f"octave_margin={self.octave_margin} must be in 0..1")
        if not -1.0 <= self.similarity_floor < self.similarity_full <= 1.0:
            problems.append(
                f"need -1 <= similarity_floor ({self.similarity_floor}) < similarity_full "
                f"({self.similarity_full}) <= 1"
            )
        if not (
            math.isfinite(self.transposition_margin_span_s)
            and self.transposition_margin_span_s >= 0
        ):
            problems.append(
                f"transposition_margin_span_s={self.transposition_margin_span_s} must be >= 0"
            )
        if not 0.0 <= self.transposition_margin < self.similarity_full - self.similarity_floor:
            problems.append(
                f"transposition_margin={self.transposition_margin} must be >= 0 and leave the "
                "raised floor below similarity_full"
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
        if self.quality_dilation_hops < 0:
            problems.append(f"quality_dilation_hops={self.quality_dilation_hops} must be >= 0")
        if self.max_runs_per_track < 1:
            problems.append(f"max_runs_per_track={self.max_runs_per_track} must be >= 1")
        if self.residual_passes < 0:
            problems.append(f"residual_passes={self.residual_passes} must be >= 0")
        if not 0.0 <= self.other_line_weight <= 1.0:
            problems.append(f"other_line_weight={self.other_line_weight} must be in 0..1")
        if not 0.0 < self.unexplained_floor <= 1.0:
            problems.append(f"unexplained_floor={self.unexplained_floor} must be in (0, 1]")
        if not 0.0 <= self.explain_threshold <= 1.0:
            problems.append(f"explain_threshold={self.explain_threshold} must be in 0..1")
        if not 0.0 <= self.explain_again_threshold <= 1.0:
            problems.append(
                f"explain_again_threshold={self.explain_again_threshold} must be in 0..1"
            )
        for name in ("abstain_threshold", "use_threshold", "beside_use_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in 0..1")
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
        # A file from before the beside threshold judges a mix's sources as if heard alone.
        values.setdefault("beside_use_threshold", values.get("use_threshold", cls.use_threshold))
        return cls(**values)

    def floor_for(self, variant: int, span_s: float = 0.0) -> float:
        """The similarity floor of a match at `variant` (semitones the query was rotated by,
        octaves included): raised by `transposition_margin` in another key, less for a run
        whose window starts span more than `transposition_margin_span_s`."""
        if variant % 12 == 0:
            return self.similarity_floor
        margin = self.transposition_margin
        if self.transposition_margin_span_s > 0 and span_s > self.transposition_margin_span_s:
            margin *= self.transposition_margin_span_s / span_s
        return self.similarity_floor + margin

    @property
    def report_floor(self) -> float:
        """Resemblance from which a check keeps a match at all: the abstain threshold, or the
        beside threshold where that is lower. A match heard beside a stronger paid use is
        paid (and so reported) from the beside threshold, which is calibrated on what sits
        beside true uses, not on music alone (README, "Calibration"); the others are
        reported from the abstain threshold (`app.checks.service._ranked_uses`). A catalogue
        whose own threshold scales its beside threshold under this floor is paid from the
        floor."""
        return min(self.abstain_threshold, self.beside_use_threshold)

    def beside_threshold(self, threshold: float) -> float:
        """The threshold of a match heard beside a stronger paid use, for a catalogue whose
        own threshold is `threshold`: scaled by beside_use_threshold / use_threshold, so the
        default threshold maps to the calibrated beside_use_threshold exactly."""
        if self.beside_use_threshold >= self.use_threshold:
            return threshold
        scaled = threshold * (self.beside_use_threshold / self.use_threshold)
        # In millionths, as resemblances are compared (rounded up: never pays below the scale).
        return math.ceil(round(scaled * 1e6, 3)) / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values (recorded with every check)."""
        out = asdict(self)
        out["transpositions"] = list(self.transpositions)
        out["octave_views"] = list(self.octave_views)
        return out


@dataclass(frozen=True)
class Calibration:
    """The parameters a check runs with, and what a resemblance means.

    curve : (resemblance r, false-positive rate) pairs, r increasing: the share of checks of
        music not in the catalogue whose best match reaches r, measured on held-out negatives
        (``python -m bench.attribution --calibrate``). Empty when the file has none.
    fitted_for : (name, version) of the embedder the thresholds were fitted with (the file's
        ``provenance.embedder``), None when the file does not say
    beside_curve : the same for a match heard beside a stronger paid use: the share of checks
        with a true paid use in which a track that is not a source reaches r beside it
        (``beside_use_threshold``). Empty when the file has none.
    """

    params: AttributionParams
    curve: tuple[tuple[float, float], ...] = ()
    fitted_for: tuple[str, str] | None = None
    beside_curve: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        for name, curve in (("curve", self.curve), ("beside_curve", self.beside_curve)):
            rs = [r for r, _ in curve]
            if rs != sorted(rs) or len(set(rs)) != len(rs):
                raise ValueError(f"calibration {name}: resemblances must increase")
            if any(not 0.0 <= f <= 1.0 for _, f in curve):
                raise ValueError(f"calibration {name}: false-positive rates must be within 0..1")

    @classmethod
    def load(cls, path: Path = DEFAULT_CALIBRATION) -> Calibration:
        """Read a calibration file: ``params`` and, if present, ``curve`` and
        ``beside_curve``."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        curves = {}
        for name in ("curve", "beside_curve"):
            raw_curve = data.get(name, [])
            if not isinstance(raw_curve, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)
                for p in raw_curve
            ):
                raise ValueError(f"{path}: '{name}' must be a list of [resemblance, fpr] pairs")
            curves[name] = tuple((float(r), float(f)) for r, f in raw_curve)
        provenance = data.get("provenance")
        embedder = provenance.get("embedder") if isinstance(provenance, dict) else None
        fitted_for = (
            (str(embedder["name"]), str(embedder["version"]))
            if isinstance(embedder, dict) and {"name", "version"} <= embedder.keys()
            else None
        )
        return cls(
            params=AttributionParams.load(path),
            curve=curves["curve"],
            fitted_for=fitted_for,
            beside_curve=curves["beside_curve"],
        )

    def fitted_for_another(self, name: str, version: str) -> bool:
        """Whether the thresholds were fitted with another embedder (or version) than this:
        its resemblances then mean other false-positive rates, and it must be calibrated."""
        return self.fitted_for is not None and self.fitted_for != (name, version)

    def expected_fpr(self, resemblance: float, *, beside: bool = False) -> float | None:
        """The false-positive rate at this resemblance: the share of negatives whose best
        match reaches it, or with `beside`, of checks with a paid use in which a track that
        is not a source reaches it beside that use. Conservative between grid points (the
        rate at the grid point below); None without the curve."""
        curve = self.beside_curve if beside else self.curve
        if not curve:
            return None
        at_or_below = [f for r, f in curve if r <= resemblance + 1e-12]
        return at_or_below[-1] if at_or_below else curve[0][1]
