"""Reproducible evaluation corpus: real scores from music21 rendered to audio with FluidSynth.

From a seed this builds a catalogue of rendered pieces, query sets derived from them (one per
transformation, each with its true time alignment to the catalogue) and negatives, and writes
them with a ``manifest.json`` into an output directory::

    python -m bench.corpus --size full --out .echoledger/corpus --seed 0

Renderings are cached on disk (keyed on score, tempo, transposition, programs and sample rate),
so a rebuild with the same seed only re-assembles the query files.

The package follows the build: `spec` (collections, palettes, sizes, query sets), `manifest`
(the JSON record), `scores` (music21 discovery and note extraction), `midi` (timing and the
MIDI writer), `render` (FluidSynth and the worker pool), `selection` (which scores are used),
`melody` (top voices, shared tunes, repeats, accompaniments for quotations), `planning` (what
each query is made of), `execute` (the transformations applied), `build` (the orchestration),
`check` (the self-check) and `cli`. music21 is imported only when a corpus is built.

Query sets (`spec.TRANSFORMATIONS`): verbatim edits (clean, verbatim16, gain, noise20/15/10,
lossy, phone, reverb), tempo (+/-5, 8, 10 %), transpositions (+/-1..6 semitones, octaves),
reinstrument and soundfont2 (same notes, other timbre), mixes (mix2, mix3), embedded and
embedded-6db (an excerpt inside 60 s of other music), quotation (a melody in a new
arrangement) and related (negatives found to carry a catalogue tune).
"""

from bench.corpus.build import build_corpus, check_tools, summarize
from bench.corpus.check import check_corpus, format_check
from bench.corpus.cli import main
from bench.corpus.manifest import (
    MANIFEST_VERSION,
    CataloguePiece,
    Manifest,
    Negative,
    Query,
    SourceSpan,
    load_manifest,
)
from bench.corpus.render import fluidsynth_version, render
from bench.corpus.spec import (
    COLLECTIONS,
    DEFAULT_SOUNDFONT,
    NEGATIVE_KINDS,
    SIZES,
    TRANSFORMATIONS,
    CollectionSpec,
    SizePreset,
)

__all__ = [
    "COLLECTIONS",
    "DEFAULT_SOUNDFONT",
    "MANIFEST_VERSION",
    "NEGATIVE_KINDS",
    "SIZES",
    "TRANSFORMATIONS",
    "CataloguePiece",
    "CollectionSpec",
    "Manifest",
    "Negative",
    "Query",
    "SizePreset",
    "SourceSpan",
    "build_corpus",
    "check_corpus",
    "check_tools",
    "fluidsynth_version",
    "format_check",
    "load_manifest",
    "main",
    "render",
    "summarize",
]
