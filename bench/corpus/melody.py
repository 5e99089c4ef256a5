"""Melodies from timed notes: the top voice, shared tunes, and new accompaniments for quotations.

Notes are rows (onset s, offset s, MIDI pitch, velocity, part) as `midi.timed_notes` gives them.
Two uses:

* `SharedMelodyIndex` finds negatives that carry a catalogue piece's tune (the same hymn tune in
  another harmonisation, a folk tune filed twice): their top voices share a long run of pitch
  intervals, compared transposition-invariantly, with proportional note durations.
* `accompany` writes a simple new accompaniment (block chords or arpeggios on the harmony the
  melody implies), so a quotation carries a catalogue melody and nothing else of the piece.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ONSET_TOLERANCE_S = 0.02  # notes starting this close together sound as one chord
GRAM = 5  # pitch intervals per n-gram of the shared-melody index
SHORT_NOTE = 0.6  # notes shorter than this share of the median are ornaments
# Whole melodies are compared: stepwise lines share runs of ten-odd intervals by chance, a
# tune sung to other words or harmonised again shares most of its length.
MIN_SHARED = 16  # intervals a shared run needs at least ...
MIN_SHARED_SHARE = 0.5  # ... and this share of the shorter of the two melodies
MAX_DIAGONAL_DRIFT = 2  # notes inserted or dropped (ornaments) along one shared run
MAX_GAP = 2 * GRAM  # n-gram positions between two hits of one run (a variant note or two)
RHYTHM_TOLERANCE = 0.25  # log2 deviation of a note's duration ratio from the run's ...
MIN_RHYTHM_AGREEMENT = 0.75  # ... within which this share of the run's notes must lie

# Krumhansl-Kessler key profiles, tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Diatonic triads as (root offset from the tonic, quality), with a prior favouring I, IV, V.
_TRIADS = {
    "major": ((0, "maj", 0.3), (5, "maj", 0.2), (7, "maj", 0.2), (9, "min", 0.1), (2, "min", 0.05),
              (4, "min", 0.0)),
    "minor": ((0, "min", 0.3), (5, "min", 0.2), (7, "maj", 0.2), (8, "maj", 0.1), (3, "maj", 0.05),
              (10, "maj", 0.0)),
}  # fmt: skip
_QUALITY = {"maj": (0, 4, 7), "min": (0, 3, 7)}


def top_voice(notes: np.ndarray) -> np.ndarray:
    """The melody: the highest-sounding part, one note at a time (the highest of a chord).

    notes : np.ndarray [shape=(n, 5)]
    Returns rows of the same layout sorted by onset, each note cut where the next one starts.
    """
    if notes.ndim != 2 or notes.shape[1] != 5:
        raise ValueError(f"expected note rows of 5 columns, got shape={notes.shape}")
    if notes.shape[0] == 0:
        return notes.copy()
    parts = np.unique(notes[:, 4])
    means = [float(notes[notes[:, 4] == p, 2].mean()) for p in parts]
    top = notes[notes[:, 4] == parts[int(np.argmax(means))]]
    top = top[np.lexsort((-top[:, 2], top[:, 0]))]  # by onset, highest first within an onset
    keep = np.ones(top.shape[0], dtype=bool)
    keep[1:] = np.diff(top[:, 0]) > ONSET_TOLERANCE_S
    melody = top[keep].copy()
    melody[:-1, 1] = np.minimum(melody[:-1, 1], melody[1:, 0])
    return melody


def skeleton(melody: np.ndarray) -> np.ndarray:
    """The melody without its short notes (passing tones, ornaments), repeats merged.

    Two harmonisations of one tune differ mostly there: a note shorter than
    `SHORT_NOTE` of the median note is dropped, and the note before it lasts until the next.
    """
    if melody.shape[0] < 3:
        return merged(melody)
    length = melody[:, 1] - melody[:, 0]
    kept = melody[length >= SHORT_NOTE * float(np.median(length))].copy()
    if kept.shape[0] > 1:
        kept[:-1, 1] = kept[1:, 0]
    return merged(kept)


def merged(melody: np.ndarray) -> np.ndarray:
    """Repeated pitches merged into one note (an ornament or a tie written another way)."""
    if melody.shape[0] == 0:
        return melody
    keep = np.ones(melody.shape[0], dtype=bool)
    keep[1:] = np.diff(melody[:, 2]) != 0
    out = melody[keep].copy()
    ends = np.append(np.flatnonzero(keep)[1:] - 1, melody.shape[0] - 1)
    out[:, 1] = melody[ends, 1]
    return out


@dataclass(frozen=True)
class SharedMelody:
    """A run of a query's melody found in a catalogue piece's melody."""

    piece: int  # index of the catalogue piece given to `SharedMelodyIndex`
    intervals: int  # pitch intervals in the shared run
    share: float  # of the shorter melody's intervals
    query_start_s: float
    query_end_s: float
    source_start_s: float
    source_end_s: float
    transpose: int  # semitones from the source's pitch to the query's

    @property
    def tempo_factor(self) -> float:
        """Query tempo / source tempo inside the run."""
        return (self.source_end_s - self.source_start_s) / (self.query_end_s - self.query_start_s)


class SharedMelodyIndex:
    """Interval n-grams of catalogue melodies, to find the catalogue tunes a query carries."""

    def __init__(self, melodies: Sequence[np.ndarray]) -> None:
        self.melodies = [skeleton(m) for m in melodies]
        self._grams: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
        for piece, melody in enumerate(self.melodies):
            steps = np.diff(melody[:, 2]).astype(int)
            for pos in range(steps.size - GRAM + 1):
                self._grams[tuple(steps[pos : pos + GRAM])].append((piece, pos))

    def find(self, melody: np.ndarray) -> SharedMelody | None:
        """The longest catalogue run this melody shares, if long enough to be the same tune.

        melody : np.ndarray [shape=(n, 5)], a whole melody (`top_voice` of a piece)
        """
        query = skeleton(melody)
        steps = np.diff(query[:, 2]).astype(int)
        if steps.size < MIN_SHARED:
            return None
        hits: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for pos in range(steps.size - GRAM + 1):
            for piece, src in self._grams.get(tuple(steps[pos : pos + GRAM]), ()):
                hits[piece].append((pos, src))
        best: SharedMelody | None = None
        for piece, pairs in hits.items():
            run = _longest_run(pairs)
            if len(run) < 2:
                continue
            found = self._describe(piece, query, run, steps.size)
            if found is not None and (best is None or found.intervals > best.intervals):
                best = found
        return best

    def _describe(
        self, piece: int, query: np.ndarray, run: list[tuple[int, int]], n_steps: int
    ) -> SharedMelody | None:
        """Check a run's length and rhythm; its time spans in query and source."""
        covered = len({q + k for q, _ in run for k in range(GRAM)})
        source = self.melodies[piece]
        shorter = min(n_steps, source.shape[0] - 1)
        if covered < MIN_SHARED or covered < MIN_SHARED_SHARE * shorter:
            return None
        q_idx = np.array(sorted({q + k for q, _ in run for k in range(GRAM + 1)}))
        s_of = dict(itertools.chain.from_iterable(
            ((q + k, s + k) for k in range(GRAM + 1)) for q, s in run
        ))  # fmt: skip
        s_idx = np.array([s_of[i] for i in q_idx])
        q_on, s_on = query[q_idx, 0], source[s_idx, 0]
        q_gap, s_gap = np.diff(q_on), np.diff(s_on)
        ok = (q_gap > 0) & (s_gap > 0)
        if ok.sum() < MIN_SHARED // 2:
            return None
        ratios = np.log2(s_gap[ok] / q_gap[ok])
        agreement = np.mean(np.abs(ratios - np.median(ratios)) <= RHYTHM_TOLERANCE)
        if agreement < MIN_RHYTHM_AGREEMENT:
            return None
        return SharedMelody(
            piece=piece,
            intervals=covered,
            share=covered / shorter,
            query_start_s=float(q_on[0]),
            query_end_s=float(query[q_idx[-1], 1]),
            source_start_s=float(s_on[0]),
            source_end_s=float(source[s_idx[-1], 1]),
            transpose=int(query[q_idx[0], 2] - source[s_idx[0], 2]),
        )


def _longest_run(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest chain of n-gram hits moving forward together along nearly one diagonal."""
    pairs = sorted(set(pairs))
    best: list[tuple[int, int]] = []
    for start in range(len(pairs)):
        chain = [pairs[start]]
        for q, s in pairs[start + 1 :]:
            last_q, last_s = chain[-1]
            drift = abs((s - q) - (last_s - last_q))
            if 0 < q - last_q <= MAX_GAP and s > last_s and drift <= MAX_DIAGONAL_DRIFT:
                chain.append((q, s))
        if len(chain) > len(best):
            best = chain
    return best


def estimate_key(melody: np.ndarray) -> tuple[int, str]:
    """(tonic pitch class, "major" or "minor") by correlation with the key profiles."""
    histogram = np.zeros(12)
    np.add.at(histogram, melody[:, 2].astype(int) % 12, melody[:, 1] - melody[:, 0])
    best = (-2.0, 0, "major")
    for tonic in range(12):
        for mode, profile in (("major", _MAJOR), ("minor", _MINOR)):
            r = float(np.corrcoef(histogram, np.roll(profile, tonic))[0, 1])
            if np.isfinite(r) and r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def implied_chords(
    melody: np.ndarray, tonic: int, mode: str, span_s: float, end_s: float
) -> list[tuple[float, int, str]]:
    """A diatonic triad per span of `span_s` seconds: (start s, root pitch class, quality).

    Each span takes the triad covering most of the melody sounding in it (weighted by time),
    with a small preference for the primary chords; an empty span keeps the previous chord.
    """
    chords: list[tuple[float, int, str]] = []
    previous = (tonic, "maj" if mode == "major" else "min")
    for start in np.arange(0.0, end_s, span_s):
        stop = start + span_s
        weight = np.zeros(12)
        overlap = np.minimum(melody[:, 1], stop) - np.maximum(melody[:, 0], start)
        np.add.at(weight, melody[:, 2].astype(int) % 12, np.clip(overlap, 0.0, None))
        choice = previous
        if weight.sum() > 0:
            weight /= weight.sum()
            scored = []
            for offset, quality, prior in _TRIADS[mode]:
                root = (tonic + offset) % 12
                tones = [(root + i) % 12 for i in _QUALITY[quality]]
                fit = weight[tones].sum() + 0.2 * weight[root] + prior
                scored.append((fit, (root, quality) == previous, root, quality))
            _, _, root, quality = max(scored)
            choice = (root, quality)
        chords.append((float(start), *choice))
        previous = choice
    return chords


def accompany(
    chords: Sequence[tuple[float, int, str]],
    span_s: float,
    end_s: float,
    style: str,
    *,
    chord_part: int = 1,
    bass_part: int = 2,
) -> np.ndarray:
    """Notes of an accompaniment on `chords`: "block" chords or "arpeggio" eighths, plus a bass.

    Returns rows (onset s, offset s, pitch, velocity, part) ending by `end_s`.
    """
    if style not in ("block", "arpeggio"):
        raise ValueError(f"style={style!r} must be 'block' or 'arpeggio'")
    rows: list[list[float]] = []
    for start, root, quality in chords:
        stop = min(start + span_s, end_s)
        if stop - start < 0.05:
            continue
        bass = 36 + (root - 36) % 12  # C2..B2
        rows.append([start, stop, bass, 72, bass_part])
        tones = [48 + (root + i - 48) % 12 for i in _QUALITY[quality]]  # C3..B3 upwards
        tones = sorted(tones)
        if style == "block":
            rows += [[start, stop, t + 12, 60, chord_part] for t in tones]
        else:
            pattern = [tones[0], tones[2], tones[1] + 12, tones[2]]
            step = span_s / 4
            for i, onset in enumerate(np.arange(start, stop - 0.02, step)):
                rows.append([onset, min(onset + step, stop), pattern[i % 4] + 12, 62, chord_part])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


REPEAT_MATCH = 0.9  # share of a span's notes that must recur for the span to repeat
REPEAT_ONSET_S = 0.03


def repeat_offsets(notes: np.ndarray, start_s: float, end_s: float) -> list[float]:
    """Shifts d != 0 at which the notes of [start_s, end_s) recur in the piece (a repeat).

    notes : np.ndarray [shape=(n, 5)] of the whole piece, at its own tempo
    Evidence pointing at a repeat of the borrowed passage points at the same music, so the
    evaluation accepts it. Returns the shifts in seconds, sorted.
    """
    inside = notes[(notes[:, 0] >= start_s) & (notes[:, 0] < end_s)]
    if inside.shape[0] < 4:
        return []
    end = float(notes[:, 1].max())
    keys = np.round(notes[:, 0] / REPEAT_ONSET_S).astype(np.int64) * 128 + notes[:, 2]
    index = set(keys.tolist())
    first = inside[0]
    same = notes[(notes[:, 2] == first[2]) & (np.abs(notes[:, 0] - first[0]) > 1.0)]
    found: list[float] = []
    for onset in same[:, 0]:
        d = float(onset - first[0])
        if start_s + d < -REPEAT_ONSET_S or end_s + d > end + REPEAT_ONSET_S:
            continue
        if any(abs(d - f) < 0.5 for f in found):
            continue
        hits = 0
        for on, pitch in inside[:, [0, 2]]:
            slot = round((on + d) / REPEAT_ONSET_S)
            hits += any((slot + k) * 128 + int(pitch) in index for k in (-1, 0, 1))
        if hits >= REPEAT_MATCH * inside.shape[0]:
            found.append(round(d, 6))
    return sorted(found)
