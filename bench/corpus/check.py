"""Self-check of a built corpus: measure that each query's transformation happened as recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import _audio_transforms as au
from bench.corpus.manifest import Manifest, Query, SourceSpan, load_manifest
from bench.corpus.spec import (
    EMBED_TOTAL_S,
    LOSSY_SETS,
    MIX_LEVEL_DB,
    MIX_SIZES,
    PHONE_BAND_HZ,
    RELATED,
    TEMPO_FACTORS,
    TRANSPOSITIONS,
    VERBATIM_S,
)


def _segment(manifest: Manifest, span: SourceSpan, extra_s: float = 0.0) -> np.ndarray:
    """Catalogue audio of a span (optionally longer at the end)."""
    sr = manifest.sample_rate
    path = manifest.path(manifest.piece(span.piece_id).file)
    x, _ = au.read_mono(
        path, round(span.source_start_s * sr), round((span.source_end_s + extra_s) * sr)
    )
    return x


_HOP, _NFFT = 1024, 4096


def _chroma_match(cq: np.ndarray, cs: np.ndarray, sr: int, factor: float, shift: int) -> float:
    """Similarity of mean-removed chroma if the query is the source sped up by `factor`."""
    cq = cq - cq.mean(axis=0)
    cs = np.roll(cs - cs.mean(axis=0), shift, axis=1)
    centres = (np.arange(cq.shape[0]) * _HOP + _NFFT / 2) / sr
    index = np.round((centres * factor * sr - _NFFT / 2) / _HOP).astype(int)
    valid = (index >= 0) & (index < cs.shape[0])
    a, b = cq[valid], cs[index[valid]]
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9
    return float(np.mean(np.sum(a * b, axis=1) / norm))


def _check_query(manifest: Manifest, query: Query) -> dict[str, float]:
    """Measurements showing that a query's transformation happened as recorded."""
    q, _ = au.read_mono(manifest.path(query.file))
    name = query.transformation
    if name == RELATED:
        return {"shared_intervals": query.params["shared_intervals"], "ok": 1.0}
    if name in TEMPO_FACTORS or name == "quotation":
        return _check_tempo(manifest, query, q)
    if name in TRANSPOSITIONS or name in ("reinstrument", "soundfont2"):
        return _check_pitch(manifest, query, q)
    if name in MIX_SIZES:
        return _check_mix(manifest, query, q)
    return _check_verbatim(manifest, query, q)


def _check_tempo(manifest: Manifest, query: Query, q: np.ndarray) -> dict[str, float]:
    """The query's chroma follows the source's best at the recorded tempo factor."""
    sr = manifest.sample_rate
    span = query.sources[0]
    source = _segment(manifest, span, extra_s=(span.source_end_s - span.source_start_s) * 0.2)
    factors = np.round(np.arange(0.80, 1.2001, 0.01), 2)
    cq, cs = au.chroma(q, sr, _HOP, _NFFT), au.chroma(source, sr, _HOP, _NFFT)
    scores = [_chroma_match(cq, cs, sr, float(f), 0) for f in factors]
    best = float(factors[int(np.argmax(scores))])
    ratio = (span.source_end_s - span.source_start_s) / (span.query_end_s - span.query_start_s)
    if query.transformation == "quotation":
        # Only the melody is kept, so the chroma peaks less sharply: the estimate lies near the
        # recorded tempo, or the query follows the source better there than at its own tempo.
        recorded = _chroma_match(cq, cs, sr, span.tempo_factor, 0)
        ok = abs(best - span.tempo_factor) < 0.05 or recorded > _chroma_match(cq, cs, sr, 1.0, 0)
    else:
        ok = abs(best - span.tempo_factor) < 0.015
    return {"duration_ratio": ratio, "estimated_factor": best, "ok": float(ok)}


def _check_pitch(manifest: Manifest, query: Query, q: np.ndarray) -> dict[str, float]:
    """Chroma shift equals the transposition (modulo octaves); other timbre where recorded."""
    sr = manifest.sample_rate
    span = query.sources[0]
    source = _segment(manifest, span)
    cq, cs = au.chroma(q, sr, _HOP, _NFFT), au.chroma(source, sr, _HOP, _NFFT)
    scores = [_chroma_match(cq, cs, sr, 1.0, k) for k in range(12)]
    shift = int(np.argmax(scores))
    shift = shift - 12 if shift > 6 else shift
    timbre = float(
        np.sqrt(np.mean((au.band_profile_db(q, sr) - au.band_profile_db(source, sr)) ** 2))
    )
    ok = (shift - span.transpose) % 12 == 0
    if query.transformation == "reinstrument":
        ok = ok and all(
            a != b
            for a, b in zip(
                query.params["programs"], query.params["original_programs"], strict=True
            )
        )
    return {"chroma_shift": shift, "timbre_distance_db": timbre, "ok": float(ok)}


def _check_mix(manifest: Manifest, query: Query, q: np.ndarray) -> dict[str, float]:
    """The query is the sum of its sources at the recorded levels."""
    sources = [_segment(manifest, s) for s in query.sources]
    snr, coef = au.fit_snr_db(q, sources)
    levels = [au.amp_to_db(abs(c) * au.rms(s)) for c, s in zip(coef, sources, strict=True)]
    measured = [v - levels[0] for v in levels]
    error = max(abs(m - r) for m, r in zip(measured, query.params["levels_db"], strict=True))
    return {
        "fit_snr_db": snr,
        "level_difference_db": max(levels) - min(levels),
        "level_error_db": error,
        "ok": float(snr > 30 and error < 0.5 and max(levels) - min(levels) <= MIX_LEVEL_DB),
    }


def _check_verbatim(manifest: Manifest, query: Query, q: np.ndarray) -> dict[str, float]:
    """Sets that keep the source's notes and timing: how much of the source the query holds."""
    sr = manifest.sample_rate
    span = query.sources[0]
    name = query.transformation
    qs, qe = round(span.query_start_s * sr), round(span.query_end_s * sr)
    source = _segment(manifest, span)
    region = q[qs:qe]
    snr, _ = au.fit_snr_db(region, [source])
    result: dict[str, float] = {"fit_snr_db": min(snr, 99.0)}
    if name == "clean":
        result["ok"] = float(snr > 60)
    elif name == "verbatim16":
        result["ok"] = float(snr > 60 and abs(q.size / sr - VERBATIM_S) < 1e-6)
    elif name == "gain":
        measured = au.amp_to_db(au.rms(region) / au.rms(source))
        result["gain_db_error"] = measured - query.params["gain_db"]
        result["ok"] = float(abs(measured - query.params["gain_db"]) < 0.1 and au.peak(q) < 1)
    elif name.startswith("noise"):
        result["snr_error_db"] = snr - query.params["snr_db"]
        result["ok"] = float(abs(snr - query.params["snr_db"]) < 1.0)
    elif name in LOSSY_SETS:
        if name == "phone":  # the reference is the source through the same band
            source = au.band_pass(source, sr, *PHONE_BAND_HZ)
            result["out_of_band_share"] = _out_of_band_share(region, sr)
            snr, _ = au.fit_snr_db(region, [source])
            result["fit_snr_db"] = snr
        result["residual_lag"] = au.estimate_lag(source, region, 2048)
        result["kbps"] = query.params["kbps"]
        # A band-limited signal survives the codec better: no upper bound on the fit for phone.
        top = 99.0 if name == "phone" else 35.0
        result["ok"] = float(
            5 < snr < top
            and result["residual_lag"] == 0
            and result.get("out_of_band_share", 0.0) < 0.05
        )
    elif name == "reverb":
        # The dry path stays in place (fits), the tail does not: somewhere between. The tail
        # can move the correlation peak by a few samples, never by more than 2 ms.
        result["residual_lag"] = au.estimate_lag(source, region, 2048)
        result["ok"] = float(-8.0 < snr < 10.0 and abs(result["residual_lag"]) <= sr // 500)
    elif name in ("embedded", "embedded-6db"):
        outside = np.concatenate([q[: qs - sr], q[qe + sr :]])
        result["duration_s"] = q.size / sr
        result["outside_energy_share"] = au.rms(outside) ** 2 / (au.rms(q) ** 2 + 1e-12)
        right_length = abs(q.size / sr - EMBED_TOTAL_S) < 1e-3
        if name == "embedded":
            result["ok"] = float(snr > 40 and right_length)
        else:  # under the other music, about level_db below it
            result["ok"] = float(-12.0 < snr < 0.0 and right_length)
    return result


def _out_of_band_share(x: np.ndarray, sr: int) -> float:
    """Share of the energy below 200 Hz or above 4 kHz."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    outside = power[(freqs < 200.0) | (freqs > 4000.0)].sum()
    return float(outside / max(power.sum(), 1e-20))


def check_corpus(out_dir: Path) -> dict[str, dict[str, float]]:
    """Verify every query's transformation; median measurements and pass rate per set."""
    manifest = load_manifest(out_dir)
    rows: dict[str, list[dict[str, float]]] = {}
    for query in manifest.queries:
        rows.setdefault(query.transformation, []).append(_check_query(manifest, query))
    catalogue_paths = {(p.score_path, p.score_number) for p in manifest.catalogue}
    for neg in manifest.negatives:
        disjoint = (neg.score_path, neg.score_number) not in catalogue_paths
        rows.setdefault(neg.kind, []).append({"duration_s": neg.duration_s, "ok": float(disjoint)})
    summary: dict[str, dict[str, float]] = {}
    for name, results in rows.items():
        keys = sorted({k for r in results for k in r})
        summary[name] = {"n": float(len(results))}
        summary[name].update(
            {
                f"median_{k}": float(np.median([r[k] for r in results if k in r]))
                for k in keys
                if k != "ok"
            }
        )
        summary[name]["pass_rate"] = float(np.mean([r["ok"] for r in results]))
    return summary


def format_check(summary: dict[str, dict[str, float]]) -> str:
    """Plain-text table of `check_corpus` results."""
    lines = []
    for name, values in summary.items():
        cells = ", ".join(f"{k}={v:.3g}" for k, v in values.items())
        lines.append(f"{name:>16}: {cells}")
    return "\n".join(lines)
