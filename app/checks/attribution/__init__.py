"""Attribution: align nearest-neighbour hits per catalogue track and score the resemblance.

Pure numpy, no HTTP or SQL. Two entry points:

* `attribute` works on search results already mapped to (track index, reference window
  start): top-k hits per query window in, scored tracks with evidence out.
* `attribute_vectors` is the whole check after embedding: it searches the query vectors (and
  their query-side transpositions) through a caller-supplied `search` function, calls
  `attribute`, then explains the sources it found away and searches again, so that a quieter
  second source of a mix is found too.

The parts, in the order a check runs them:

* `params`: the constants (`AttributionParams`), read from the calibration file;
* `search`: `attribute_vectors`, the whole check after embedding: the index proposes
  candidate tracks (a key scan finds the likely transpositions), each candidate is verified
  exactly against its own stored windows (octave views included), and the sources found are
  explained away before proposing again;
* `align`: `attribute`, top-k hits per track grouped into time-consistent runs (evidence);
* `score`: the resemblance of a track from its runs.
"""

from app.checks.attribution.align import Evidence, TrackMatch, attribute
from app.checks.attribution.params import AttributionParams, Calibration
from app.checks.attribution.search import (
    Search,
    TrackWindows,
    Transpose,
    Windows,
    attribute_vectors,
    residual_vectors,
)
from app.config import DEFAULT_CALIBRATION
from app.index.base import SearchResult

__all__ = [
    "DEFAULT_CALIBRATION",
    "AttributionParams",
    "Calibration",
    "Evidence",
    "Search",
    "SearchResult",
    "TrackMatch",
    "TrackWindows",
    "Transpose",
    "Windows",
    "attribute",
    "attribute_vectors",
    "residual_vectors",
]
