"""Query execution: render or cut the planned takes and apply the transformations."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import _audio_transforms as au
from bench.corpus.manifest import Negative, Query, SourceSpan
from bench.corpus.melody import accompany, estimate_key, implied_chords, top_voice
from bench.corpus.midi import timed_notes
from bench.corpus.planning import Job, Take
from bench.corpus.render import RenderContext, render, synthesize
from bench.corpus.selection import piece_composer, piece_title, stable_rng
from bench.corpus.spec import (
    EMBED_RAMP_S,
    EMBED_TOTAL_S,
    FILLER_XFADE_S,
    LOSSY_SETS,
    MIX_SIZES,
    NEGATIVE_KINDS,
    PHONE_BAND_HZ,
    RELATED,
    RENDERED_SETS,
    TAIL_S,
    TEMPO_FACTORS,
    TRANSPOSITIONS,
)

_PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _read_take(take: Take, sr: int, margin: int = 0) -> np.ndarray:
    """Samples of a catalogue take (with `margin` extra samples each side)."""
    assert take.audio is not None
    x, _ = au.read_mono(Path(take.audio), take.start - margin, take.start + take.length + margin)
    return x


def _render_take(
    take: Take,
    ctx: RenderContext,
    factor: float = 1.0,
    transpose: int = 0,
    programs: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Render a take symbolically; returns (audio, start, length) in rendered-tempo samples."""
    start = round(take.start / factor)
    length = round(take.length / factor)
    path = render(
        take.piece.voicing,
        ctx,
        factor=factor,
        transpose=transpose,
        programs=programs,
        window=(start, length),
    )
    x, _ = au.read_mono(path)
    return x, start, length


def _span(
    piece_id: str,
    src_start: float,
    src_end: float,
    q_start: float,
    q_end: float,
    factor: float = 1.0,
    transpose: int = 0,
) -> SourceSpan:
    """SourceSpan with times rounded to microseconds."""
    return SourceSpan(
        piece_id,
        round(src_start, 6),
        round(src_end, 6),
        round(q_start, 6),
        round(q_end, 6),
        factor,
        transpose,
    )


def _execute(job: Job, out_dir: Path, ctx: RenderContext) -> Query | Negative:
    """Produce one query or negative file and its manifest record."""
    sr = ctx.sample_rate
    out = out_dir / job.file
    params = dict(job.params)
    take = job.takes[0]
    piece = take.piece
    if job.group in NEGATIVE_KINDS:
        x, _, _ = _render_take(take, ctx)
        au.write_audio(out, x, sr)
        ref = piece.info.ref
        return Negative(
            job.id,
            job.group,
            job.file,
            round(x.size / sr, 6),
            piece.spec.name,
            piece_composer(piece),
            piece_title(piece),
            ref.path,
            ref.number,
            piece.palette,
            piece.programs,
            round(take.start / sr, 6),
            round((take.start + take.length) / sr, 6),
        )
    start_s, end_s = take.start / sr, (take.start + take.length) / sr
    sources = [_span(piece.id, start_s, end_s, 0.0, take.length / sr)]
    if job.group == RELATED:
        x, _, _ = _render_take(take, ctx)
        sources = list(job.spans)
        params |= {"title": piece_title(piece), "composer": piece_composer(piece)}
    elif job.group in RENDERED_SETS:
        x, sources = _rendered(job, take, ctx, params)
    elif job.group in MIX_SIZES:
        x, sources = _mix(job, sr, params)
    elif job.group in ("embedded", "embedded-6db"):
        x, sources = _embed(job, take, ctx, params)
    elif job.group == "quotation":
        x, sources = _quote(job, take, ctx, params)
    else:
        x = _read_take(take, sr)
        if job.group == "gain":
            x, params["gain_db"] = au.apply_gain(x, params["gain_db"])
            params["gain_db"] = round(params["gain_db"], 3)
        elif job.group.startswith("noise"):
            x = au.add_noise(x, params["snr_db"], params["noise"], stable_rng(*job.seed))
        elif job.group == "phone":
            x = au.normalize(au.band_pass(x, sr, *PHONE_BAND_HZ))
        elif job.group == "reverb":
            ir = au.room_impulse_response(sr, params["rt60_s"], stable_rng(*job.seed))
            x = au.reverberate(x, ir, params["wet"])
    if job.group in LOSSY_SETS:
        au.write_lossy(out, x, sr, params["codec"])
        if params["codec"] == "ogg":
            _fix_ogg_serial(out)
        decoded, _ = au.read_mono(out)
        lag = au.estimate_lag(x, decoded, 4096)
        params["decoder_delay_samples"] = lag
        params["kbps"] = round(out.stat().st_size * 8 / (x.size / sr) / 1000, 1)
        sources = [_span(piece.id, start_s, end_s, lag / sr, (lag + take.length) / sr)]
        duration = decoded.size / sr
    else:
        au.write_audio(out, x, sr)
        duration = x.size / sr
    return Query(job.id, job.group, job.file, round(duration, 6), sources, params)


def _rendered(
    job: Job, take: Take, ctx: RenderContext, params: dict[str, Any]
) -> tuple[np.ndarray, list[SourceSpan]]:
    """A take rendered again: at another tempo or pitch, with other programs or soundfont."""
    sr = ctx.sample_rate
    factor = TEMPO_FACTORS.get(job.group, 1.0)
    transpose = TRANSPOSITIONS.get(job.group, 0)
    programs = tuple(params["programs"]) if "programs" in params else None
    if job.group == "soundfont2":
        ctx = replace(ctx, soundfont=ctx.second_soundfont)
    x, start, length = _render_take(take, ctx, factor, transpose, programs)
    span = _span(
        take.piece.id,
        start * factor / sr,
        (start + length) * factor / sr,
        0.0,
        length / sr,
        factor,
        transpose,
    )
    if factor != 1.0:
        params["tempo_factor"] = factor
    if transpose:
        params["transpose"] = transpose
    return x, [span]


def _mix(job: Job, sr: int, params: dict[str, Any]) -> tuple[np.ndarray, list[SourceSpan]]:
    """Two or three excerpts of equal length summed at the planned levels."""
    gains = [0.0, params["relative_gain_db"]] if job.group == "mix2" else params["gains_db"]
    parts = [
        au.normalize(_read_take(t, sr)) * au.db_to_amp(g)
        for t, g in zip(job.takes, gains, strict=True)
    ]
    x = np.sum(parts, axis=0)
    # Normalisation lowers a peaky excerpt below the target level: record the levels as mixed.
    levels = [au.amp_to_db(au.rms(part) / au.rms(parts[0])) for part in parts]
    params["levels_db"] = [round(v, 2) for v in levels]
    params["level_difference_db"] = round(max(levels) - min(levels), 2)
    spans = [
        _span(t.piece.id, t.start / sr, (t.start + t.length) / sr, 0.0, t.length / sr)
        for t in job.takes
    ]
    return au.normalize(x), spans


def _quote(
    job: Job, take: Take, ctx: RenderContext, params: dict[str, Any]
) -> tuple[np.ndarray, list[SourceSpan]]:
    """The take's melody alone, at another tempo, over a new accompaniment on new instruments."""
    sr = ctx.sample_rate
    factor = params["tempo_factor"]
    start_s, end_s = take.start / sr, (take.start + take.length) / sr
    notes = timed_notes(take.piece.voicing)
    melody = top_voice(notes[(notes[:, 0] >= start_s) & (notes[:, 0] < end_s)])
    melody[:, :2] = (np.minimum(melody[:, :2], end_s) - start_s) / factor
    melody[:, 3], melody[:, 4] = 100, 0
    length_s = (end_s - start_s) / factor
    tonic, mode = estimate_key(melody)
    beat_s = 60.0 / take.piece.voicing.qpm / factor
    chords = implied_chords(melody, tonic, mode, 2 * beat_s, length_s)
    backing = accompany(chords, 2 * beat_s, length_s, params["style"])
    n_samples = round((length_s + TAIL_S) * sr)
    x = synthesize(np.concatenate([melody, backing]), params["programs"], n_samples, ctx)
    params["key"] = f"{_PITCH_NAMES[tonic]} {mode}"
    params["melody_notes"] = int(melody.shape[0])
    span = _span(take.piece.id, start_s, end_s, 0.0, length_s, factor)
    return au.normalize(x), [span]


def _embed(
    job: Job, take: Take, ctx: RenderContext, params: dict[str, Any]
) -> tuple[np.ndarray, list[SourceSpan]]:
    """A catalogue excerpt inside 60 s of other music.

    `embedded` replaces the other music for the excerpt's length (short crossfades outside
    the span), at the other music's level; `embedded-6db` lays it under the other music, which
    goes on playing, at `level_db` below it.
    """
    sr = ctx.sample_rate
    total = round(EMBED_TOTAL_S * sr)
    parts = [_render_take(f, ctx)[0] for f in job.fillers]
    bed = au.normalize(au.crossfade_concat(parts, round(FILLER_XFADE_S * sr))[:total])
    ramp = round(EMBED_RAMP_S * sr)
    excerpt = _read_take(take, sr, margin=ramp)
    core = excerpt[ramp : ramp + take.length]
    level = au.db_to_amp(params.get("level_db", 0.0))
    excerpt = excerpt * (level * au.rms(bed) / max(au.rms(core), 1e-9))
    position = round(params["position_s"] * sr)
    weight = np.concatenate(
        [
            np.linspace(0.0, 1.0, ramp, endpoint=False),
            np.ones(take.length),
            np.linspace(1.0, 0.0, ramp),
        ]
    )
    lo = position - ramp
    mixed = bed.astype(np.float64)
    region = mixed[lo : lo + weight.size]
    under = "level_db" in params
    mixed[lo : lo + weight.size] = (region if under else region * (1 - weight)) + excerpt * weight
    x = au.limit_peak(mixed)
    params["fillers"] = [
        {
            "score_path": f.piece.info.ref.path,
            "score_number": f.piece.info.ref.number,
            "collection": f.piece.spec.name,
        }
        for f in job.fillers
    ]
    span = _span(
        take.piece.id,
        take.start / sr,
        (take.start + take.length) / sr,
        position / sr,
        (position + take.length) / sr,
    )
    return x, [span]


def _ogg_crc(data: bytes) -> int:
    """CRC-32 of an Ogg page (polynomial 0x04C11DB7, no reflection)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _fix_ogg_serial(path: Path, serial: int = 0x45434C47) -> None:
    """Give an Ogg file a fixed stream serial (libsndfile picks a random one): same bytes."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        size = 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        data[pos + 14 : pos + 18] = struct.pack("<I", serial)
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = struct.pack("<I", _ogg_crc(bytes(data[pos : pos + size])))
        pos += size
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def execute_job(args: tuple[Job, str, RenderContext]) -> Query | Negative | str:
    """Pool job: run `_execute`; an error message replaces the record on failure."""
    job, out_dir, ctx = args
    try:
        return _execute(job, Path(out_dir), ctx)
    except Exception as exc:
        return f"{job.id}: {type(exc).__name__}: {exc}"[:300]
