"""A small run of the attribution evaluation on real music, so a collapse in quality fails CI.

The corpus (a dozen catalogue pieces rendered from music21 scores with FluidSynth, with query
sets per transformation and negatives) is built once into .echoledger/corpus-small and reused.
The full run and its bars live in `python -m bench.attribution --size full` (README).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.checks.attribution import DEFAULT_CALIBRATION, AttributionParams
from bench.corpus import (  # imports music21 only when building
    DEFAULT_SOUNDFONT,
    Manifest,
    build_corpus,
    check_tools,
    load_manifest,
)

pytestmark = pytest.mark.slow

CORPUS = Path(os.environ.get("ECHOLEDGER_TEST_CORPUS", ".echoledger/corpus-small"))
SOUNDFONT = Path(os.environ.get("ECHOLEDGER_SOUNDFONT") or DEFAULT_SOUNDFONT)

# Collapse detectors, set below what the small corpus scores (2-3 queries per set, 8
# negatives), only for sets the attribution handles today: the bars themselves are for the
# full run (python -m bench.attribution --size full), whose numbers are in the README.
FLOORS = {
    ("clean", "gain", "noise20", "noise10", "lossy", "noise15", "verbatim16", "phone",
     "reverb"): 0.9,
    ("tempo+5", "tempo-5", "tempo+10", "tempo-10", "tempo+8", "tempo-8"): 0.8,
    ("transpose+1", "transpose-1", "transpose+2", "transpose-2", "transpose+12",
     "transpose-12"): 0.6,
    ("reinstrument", "soundfont2", "mix2", "embedded"): 0.6,
}  # fmt: skip
MAX_FALSE_POSITIVES = 1


def _skip_without_renderer() -> None:
    pytest.importorskip("music21", reason="the eval extra (music21) is not installed")
    try:
        check_tools(SOUNDFONT)
    except RuntimeError as missing:
        pytest.skip(f"cannot render the corpus: {missing}")


def _small_corpus() -> Manifest:
    """The cached small corpus, rebuilt when missing or written by another manifest version."""
    if (CORPUS / "manifest.json").exists():
        try:
            return load_manifest(CORPUS)
        except ValueError:  # an older manifest version
            pass
    return build_corpus(CORPUS, size="small", seed=0)


def test_small_corpus_through_the_service_keeps_its_quality(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_without_renderer()
    from bench import attribution, metrics

    monkeypatch.setenv("DATABASE_URL", database_url)  # the run's scratch database goes there
    manifest = _small_corpus()
    outcome = attribution.run_service(manifest, calibration=DEFAULT_CALIBRATION, workers=2)
    assert outcome.ledger_ok is True
    threshold = AttributionParams.load(DEFAULT_CALIBRATION).abstain_threshold
    rows = {
        r.name: r
        for r in attribution.evaluate(manifest, outcome, threshold=threshold, held_out=None)
    }

    for sets, floor in FLOORS.items():
        scored = [rows[s] for s in sets if s in rows]  # soundfont2 needs a second soundfont
        assert scored, f"none of {sets} in the corpus"
        top1 = sum((r.top1 or 0.0) * r.n for r in scored) / sum(r.n for r in scored)
        table = metrics.format_table(list(rows.values()))
        assert top1 >= floor, f"top-1 on {', '.join(sets)} fell to {top1:.2f}:\n{table}"
    false_positives = round((rows["negatives"].fpr or 0.0) * rows["negatives"].n)
    assert false_positives <= MAX_FALSE_POSITIVES, metrics.format_table(list(rows.values()))
    # Evidence points at the right place in the source.
    exact = [rows[s] for s in ("clean", "gain", "noise20", "lossy", "verbatim16", "noise15")]
    assert all(r.time_error_median_s is not None and r.time_error_median_s < 1.0 for r in exact)
