"""What a corpus is made of: score collections, instrument palettes, size presets, query sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Size = Literal["small", "full"]
Role = Literal["catalogue", "other"]

EXTRACT_VERSION = 1
RENDER_VERSION = 1
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# A second General MIDI soundfont (Debian timgm6mb-soundfont): the `soundfont2` set re-renders
# catalogue excerpts with it, since generated audio never shares the catalogue's exact timbre.
SECOND_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")

MIN_PIECE_S = 25.0  # scores shorter than this (at their chosen tempo) are skipped
MAX_PIECE_S = 240.0  # longer scores are cut here (the small preset cuts earlier)
TAIL_S = 2.0  # release and reverb tail rendered after the last note
FLUID_BLOCK = 64  # FluidSynth processes MIDI events on this sample grid
MIDI_TPQ = 9600
MIDI_US_PER_QUARTER = 500_000
TICKS_PER_S = MIDI_TPQ * 1_000_000 / MIDI_US_PER_QUARTER
EXCERPT_S = (10.0, 30.0)
EMBED_EXCERPT_S = (10.0, 20.0)
EMBED_TOTAL_S = 60.0
EMBED_RAMP_S = 0.25
EMBED_FILLER_PARTS = 3
FILLER_XFADE_S = 1.0
MIN_COVERAGE = 0.9  # fraction of an excerpt in which some note sounds
MIX_LEVEL_DB = 6.0  # the pieces of a mix lie within this many dB of each other
VERBATIM_S = 16.0  # length of the `verbatim16` excerpts: resemblance 1.0 means this much reuse
EMBED_BORROW_S = 15.0  # the borrowed excerpt of `embedded-6db`
EMBED_UNDER_DB = -6.0  # its level under the other music
PHONE_BAND_HZ = (300.0, 3400.0)
REVERB_RT60_S = (0.9, 1.5)  # synthetic room: decay time drawn per query (about 1.2 s)
REVERB_WET = (0.35, 0.6)  # share of the reverberant signal in the wet/dry mix
QUOTE_S = 15.0  # source seconds of melody a quotation borrows (about eight bars)
QUOTE_TEMPO = (0.05, 0.15)  # a quotation's tempo differs from the source's by this much
QUOTE_MIN_NOTES = 12  # melody notes a quotation's window should hold

TEMPO_FACTORS = {
    "tempo+5": 1.05, "tempo-5": 0.95, "tempo+10": 1.10, "tempo-10": 0.90,
    "tempo+8": 1.08, "tempo-8": 0.92,
}  # fmt: skip
TRANSPOSITIONS = {
    "transpose+1": 1, "transpose-1": -1, "transpose+2": 2, "transpose-2": -2,
    "transpose+3": 3, "transpose-3": -3, "transpose+4": 4, "transpose-4": -4,
    "transpose+5": 5, "transpose-5": -5, "transpose+6": 6, "transpose-6": -6,
    "transpose+12": 12, "transpose-12": -12,
}  # fmt: skip
# The first sixteen sets are the original ones, in their original order (their seeds depend on
# the position); newer sets follow.
TRANSFORMATIONS: tuple[str, ...] = (
    "clean", "gain", "noise20", "noise10", "lossy",
    "tempo+5", "tempo-5", "tempo+10", "tempo-10",
    "transpose+1", "transpose-1", "transpose+2", "transpose-2",
    "reinstrument", "mix2", "embedded",
    "noise15", "phone", "reverb", "verbatim16", "tempo+8", "tempo-8",
    "transpose+3", "transpose-3", "transpose+4", "transpose-4",
    "transpose+5", "transpose-5", "transpose+6", "transpose-6",
    "transpose+12", "transpose-12",
    "mix3", "embedded-6db", "soundfont2", "quotation",
)  # fmt: skip
ORIGINAL_SETS = 16
RENDERED_SETS = {*TEMPO_FACTORS, *TRANSPOSITIONS, "reinstrument", "soundfont2"}
LOSSY_SETS = {"lossy", "phone"}
MIX_SIZES = {"mix2": 2, "mix3": 3}
# Negatives found to share a melody with a catalogue piece become queries of this set.
RELATED = "related"
NEGATIVE_KINDS = ("hard_negative", "other_negative")

# General MIDI programs (0-based) per ensemble; a palette lists programs from the top voice down.
PALETTES: dict[str, dict[str, tuple[int, ...]]] = {
    "chorale": {
        "organ": (19,),
        "strings": (40, 40, 41, 42),
        "choir": (52,),
        "brass": (56, 60, 57, 58),
        "woodwinds": (73, 68, 71, 70),
        "string-ensemble": (48,),
    },
    "polyphony": {
        "choir": (52,),
        "voice-oohs": (53,),
        "organ": (19,),
        "reed-organ": (20,),
        "recorders": (74, 74, 74, 70),
        "viols": (40, 41, 42, 43),
    },
    "folk": {
        "fiddle": (110,),
        "violin": (40,),
        "flute": (73,),
        "piano": (0,),
        "nylon-guitar": (24,),
        "steel-guitar": (25,),
        "accordion": (21,),
        "harmonica": (22,),
        "banjo": (105,),
        "clarinet": (71,),
    },
    "quartet": {
        "string-quartet": (40, 40, 41, 42),
        "string-ensemble": (48, 48, 49, 49),
        "piano": (0,),
        "winds": (73, 68, 71, 70),
        "brass": (56, 56, 60, 57),
    },
    "keyboard": {
        "piano": (0,),
        "harpsichord": (6,),
        "electric-piano": (4,),
        "vibraphone": (11,),
        "chamber": (73, 40, 42, 0),
    },
}


@dataclass(frozen=True)
class CollectionSpec:
    """A group of music21 corpus files rendered alike."""

    name: str
    composer: str
    roots: tuple[str, ...]
    ensemble: str
    qpm: tuple[float, float]
    role: Role
    weight: float
    split_abc: bool = True
    trust_titles: bool = True  # False where the scores' title metadata is unusable
    include: str = r""
    exclude: str = r"^$"


COLLECTIONS: tuple[CollectionSpec, ...] = (
    # Catalogue collections: the catalogue and the hard negatives are drawn from these.
    CollectionSpec("bach-chorales", "Johann Sebastian Bach", ("bach",), "chorale", (60, 76),
                   "catalogue", 0.30, include=r"^bach/bwv[^/]*$", exclude=r"bwv846"),
    CollectionSpec("palestrina", "Giovanni Pierluigi da Palestrina", ("palestrina",), "polyphony",
                   (112, 144), "catalogue", 0.20),
    CollectionSpec("monteverdi", "Claudio Monteverdi", ("monteverdi",), "polyphony", (100, 132),
                   "catalogue", 0.08, trust_titles=False),
    CollectionSpec("oneills1850", "traditional (O'Neill's Music of Ireland)", ("oneills1850",),
                   "folk", (100, 132), "catalogue", 0.17),
    CollectionSpec("ryansMammoth", "traditional (Ryan's Mammoth Collection)", ("ryansMammoth",),
                   "folk", (100, 132), "catalogue", 0.17),
    CollectionSpec("string-quartets", "various", ("haydn", "mozart/k155", "mozart/k156",
                   "mozart/k458", "mozart/k80", "beethoven", "schumann_robert/opus41no1"),
                   "quartet", (96, 132), "catalogue", 0.08, include=r"/movement\d"),
    # Other music: other negatives and the background of embedded queries.
    CollectionSpec("essenFolksong", "traditional (Essen folksong collection)", ("essenFolksong",),
                   "folk", (84, 120), "other", 0.30, exclude=r"/test"),
    CollectionSpec("trecento", "various (trecento)", ("trecento",), "polyphony", (100, 132),
                   "other", 0.20),
    CollectionSpec("airdsAirs", "traditional (Aird's Airs)", ("airdsAirs",), "folk", (90, 120),
                   "other", 0.15),
    CollectionSpec("miscFolk", "traditional", ("miscFolk", "nottingham-dataset"), "folk",
                   (100, 132), "other", 0.10),
    CollectionSpec("josquin", "Josquin des Prez", ("josquin",), "polyphony", (110, 140), "other",
                   0.05, split_abc=False),
    CollectionSpec("miscellany", "various", ("beach", "chopin", "ciconia", "corelli", "cpebach",
                   "handel", "johnson_j_r", "joplin", "leadSheet", "liliuokalani", "luca",
                   "lusitano", "schubert", "schumann_clara", "verdi", "weber", "mozart/k545",
                   "schumann_robert/dichterliebe_no2.xml", "schumann_robert/opus48no2.mxl"),
                   "keyboard", (80, 120), "other", 0.20),
)  # fmt: skip


@dataclass(frozen=True)
class SizePreset:
    """How many pieces, queries and negatives a corpus has."""

    catalogue: int
    queries_per_transformation: int
    hard_negatives: int
    other_negatives: int
    fillers: int
    max_piece_s: float = MAX_PIECE_S  # catalogue pieces are cut at this length
    newer_queries: int | None = None  # queries per set added after the first sixteen

    def queries_for(self, index: int) -> int:
        """Number of queries of the set at `index` in TRANSFORMATIONS."""
        if index >= ORIGINAL_SETS and self.newer_queries is not None:
            return self.newer_queries
        return self.queries_per_transformation


SIZES: dict[str, SizePreset] = {
    "small": SizePreset(catalogue=12, queries_per_transformation=3, hard_negatives=4,
                        other_negatives=4, fillers=4, max_piece_s=75.0, newer_queries=2),
    # 36 sets of 32 queries and 250 negatives: build and run through the service in about
    # half an hour on two cores.
    "full": SizePreset(catalogue=300, queries_per_transformation=32, hard_negatives=125,
                       other_negatives=125, fillers=24),
}  # fmt: skip
