"""Query execution: render or cut the planned takes and apply the transformations."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from bench import _audio_transforms as au
from bench.corpus.manifest import Negative, Query, SourceSpan
from bench.corpus.planning import Job, Take
from bench.corpus.render import RenderContext, render
from bench.corpus.selection import piece_composer, piece_title, stable_rng
from bench.corpus.spec import (
    EMBED_RAMP_S,
    EMBED_TOTAL_S,
    FILLER_XFADE_S,
    NEGATIVE_KINDS,
    TEMPO_FACTORS,
    TRANSPOSITIONS,
)


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
    if job.group in TEMPO_FACTORS or job.group in TRANSPOSITIONS or job.group == "reinstrument":
        factor = TEMPO_FACTORS.get(job.group, 1.0)
        transpose = TRANSPOSITIONS.get(job.group, 0)
        programs = tuple(params["programs"]) if "programs" in params else None
        x, start, length = _render_take(take, ctx, factor, transpose, programs)
        sources = [
            _span(
                piece.id,
                start * factor / sr,
                (start + length) * factor / sr,
                0.0,
                length / sr,
                factor,
                transpose,
            )
        ]
        if factor != 1.0:
            params["tempo_factor"] = factor
        if transpose:
            params["transpose"] = transpose
    elif job.group == "mix2":
        second = job.takes[1]
        a = au.normalize(_read_take(take, sr))
        b = au.normalize(_read_take(second, sr)) * au.db_to_amp(params["relative_gain_db"])
        x = au.normalize(a + b)
        sources.append(
            _span(
                second.piece.id,
                second.start / sr,
                (second.start + second.length) / sr,
                0.0,
                second.length / sr,
            )
        )
    elif job.group == "embedded":
        x, sources = _embed(job, take, ctx)
    else:
        x = _read_take(take, sr)
        if job.group == "gain":
            x, params["gain_db"] = au.apply_gain(x, params["gain_db"])
            params["gain_db"] = round(params["gain_db"], 3)
        elif job.group.startswith("noise"):
            x = au.add_noise(x, params["snr_db"], params["noise"], stable_rng(*job.seed))
    if job.group == "lossy":
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


def _embed(job: Job, take: Take, ctx: RenderContext) -> tuple[np.ndarray, list[SourceSpan]]:
    """A catalogue excerpt inside 60 s of other music, with short crossfades outside the span."""
    sr = ctx.sample_rate
    total = round(EMBED_TOTAL_S * sr)
    parts = [_render_take(f, ctx)[0] for f in job.fillers]
    bed = au.normalize(au.crossfade_concat(parts, round(FILLER_XFADE_S * sr))[:total])
    ramp = round(EMBED_RAMP_S * sr)
    excerpt = _read_take(take, sr, margin=ramp)
    core = excerpt[ramp : ramp + take.length]
    excerpt = excerpt * (au.rms(bed) / max(au.rms(core), 1e-9))
    position = round(job.params["position_s"] * sr)
    weight = np.concatenate(
        [
            np.linspace(0.0, 1.0, ramp, endpoint=False),
            np.ones(take.length),
            np.linspace(1.0, 0.0, ramp),
        ]
    )
    lo = position - ramp
    mixed = bed.astype(np.float64)
    mixed[lo : lo + weight.size] = mixed[lo : lo + weight.size] * (1 - weight) + excerpt * weight
    x = au.limit_peak(mixed)
    job.params["fillers"] = [
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
