"""Timing (quarter lengths to seconds through a tempo map) and a minimal MIDI file writer."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.corpus.spec import MAX_PIECE_S, MIDI_TPQ, MIDI_US_PER_QUARTER, TICKS_PER_S

_MIDI_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15)  # 9 is percussion


def to_seconds(ql: np.ndarray, marks: Sequence[tuple[float, float]], qpm: float) -> np.ndarray:
    """Map quarter-length offsets to seconds through a piecewise-constant tempo map."""
    points = list(marks)
    if not points or points[0][0] > 0:
        points.insert(0, (0.0, qpm))
    bounds = np.array([p[0] for p in points])
    spq = np.array([60.0 / p[1] for p in points])
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(bounds) * spq[:-1])])
    index = np.clip(np.searchsorted(bounds, ql, side="right") - 1, 0, None)
    return np.asarray(cumulative[index] + (ql - bounds[index]) * spq[index])


@dataclass(frozen=True)
class Voicing:
    """A score at a base tempo with one General MIDI program per part."""

    key: str
    notes_file: str
    tempo: tuple[tuple[float, float], ...]
    qpm: float
    programs: tuple[int, ...]
    cap_s: float = MAX_PIECE_S


def timed_notes(voicing: Voicing) -> np.ndarray:
    """Notes as rows (onset s, offset s, pitch, velocity, part), cut at the voicing's cap."""
    data = json.loads(Path(voicing.notes_file).read_text(encoding="utf-8"))
    raw = np.asarray(data["notes"], dtype=np.float64).reshape(-1, 5)
    on = to_seconds(raw[:, 0], voicing.tempo, voicing.qpm)
    off = to_seconds(raw[:, 0] + raw[:, 1], voicing.tempo, voicing.qpm)
    off = np.minimum(np.maximum(off, on + 0.03), voicing.cap_s)
    keep = on < voicing.cap_s - 0.05
    out = np.stack([on, off, raw[:, 2], raw[:, 3], raw[:, 4]], axis=1)[keep]
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]], end_tick: int) -> bytes:
    """One MTrk chunk from (tick, order, message) events."""
    events.sort(key=lambda e: (e[0], e[1]))
    body = bytearray()
    last = 0
    for tick, _order, message in events:
        body += _vlq(tick - last) + message
        last = tick
    body += _vlq(max(end_tick - last, 0)) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def midi_bytes(notes: np.ndarray, programs: Sequence[int], end_s: float) -> bytes:
    """Standard MIDI file (format 1) for timed notes, one track and channel per part."""
    end_tick = round(end_s * TICKS_PER_S)
    tempo = b"\xff\x51\x03" + MIDI_US_PER_QUARTER.to_bytes(3, "big")
    tracks = [_track([(0, 0, tempo)], end_tick)]
    for part, program in enumerate(programs):
        channel = _MIDI_CHANNELS[part % len(_MIDI_CHANNELS)]
        events: list[tuple[int, int, bytes]] = [
            (0, 0, bytes([0xC0 | channel, program])),
            (0, 0, bytes([0xB0 | channel, 7, 100])),
        ]
        for on, off, pitch, velocity, _ in notes[notes[:, 4] == part]:
            vel = int(velocity) if velocity > 0 else (88 if part == 0 else 76)
            events.append((round(on * TICKS_PER_S), 2, bytes([0x90 | channel, int(pitch), vel])))
            events.append((round(off * TICKS_PER_S), 1, bytes([0x80 | channel, int(pitch), 0])))
        tracks.append(_track(events, end_tick))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), MIDI_TPQ)
    return header + b"".join(tracks)
