"""Rendering with FluidSynth into a cache of level-normalised FLAC, and the worker pool."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from bench import _audio_transforms as au
from bench.corpus.midi import Voicing, midi_bytes, timed_notes
from bench.corpus.scores import configure_music21
from bench.corpus.spec import EXTRACT_VERSION, FLUID_BLOCK, RENDER_VERSION, TAIL_S


@dataclass(frozen=True)
class RenderContext:
    """Settings shared by all renders of one build."""

    cache_dir: str
    sample_rate: int
    soundfont: str
    second_soundfont: str = ""  # for the `soundfont2` set; empty when it is not installed


def fluidsynth_version() -> str:
    """Version line of the installed FluidSynth."""
    out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def synthesize(
    notes: np.ndarray, programs: Sequence[int], n_samples: int, ctx: RenderContext
) -> np.ndarray:
    """Render timed notes to mono float audio of exactly `n_samples` samples."""
    with tempfile.TemporaryDirectory(prefix="corpus-render-") as tmp:
        midi = Path(tmp) / "in.mid"
        raw = Path(tmp) / "out.raw"
        midi.write_bytes(midi_bytes(notes, programs, n_samples / ctx.sample_rate))
        cmd = [
            "fluidsynth",
            "-n",
            "-i",
            "-q",
            "-g",
            "0.5",
            "-r",
            str(ctx.sample_rate),
            "-F",
            str(raw),
            "-T",
            "raw",
            "-O",
            "float",
            "-o",
            "synth.cpu-cores=1",
            "-o",
            "synth.dynamic-sample-loading=1",
            "-o",
            "synth.polyphony=512",
            ctx.soundfont,
            str(midi),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not raw.exists():
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): {proc.stderr[-300:]}")
        stereo = np.fromfile(raw, dtype=np.float32)
    if stereo.size < 2 * FLUID_BLOCK:
        raise RuntimeError("fluidsynth produced no audio")
    mono = stereo[: stereo.size // 2 * 2].reshape(-1, 2).mean(axis=1)
    if not np.all(np.isfinite(mono)) or au.peak(mono) == 0:
        raise RuntimeError("fluidsynth produced silence or invalid samples")
    if mono.size < n_samples:
        mono = np.pad(mono, (0, n_samples - mono.size))
    return np.asarray(mono[:n_samples])


def _render_path(
    ctx: RenderContext,
    voicing: Voicing,
    factor: float,
    transpose: int,
    programs: tuple[int, ...],
    window: tuple[int, int] | None,
) -> Path:
    """Cache path of a rendering (score, tempo, transposition, programs, rate, window)."""
    soundfont = Path(ctx.soundfont)
    key = json.dumps(
        [
            RENDER_VERSION,
            EXTRACT_VERSION,
            voicing.key,
            voicing.tempo,
            voicing.qpm,
            voicing.cap_s,
            factor,
            transpose,
            programs,
            ctx.sample_rate,
            window,
            soundfont.name,
            soundfont.stat().st_size,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "-", voicing.key.lower()).strip("-")[:60]
    kind = "full" if window is None else "window"
    return Path(ctx.cache_dir) / "audio" / kind / f"{slug}-{digest}.flac"


def render(
    voicing: Voicing,
    ctx: RenderContext,
    *,
    factor: float = 1.0,
    transpose: int = 0,
    programs: tuple[int, ...] | None = None,
    window: tuple[int, int] | None = None,
) -> Path:
    """Render a voicing (whole, or a window of (start, length) samples at the rendered tempo).

    A window is cut from a rendering that starts at the beginning of the piece, so it holds
    exactly what the whole rendering holds there. `factor` scales the tempo (1.05 plays 5%
    faster), `transpose` shifts by semitones. The result is level-normalised 16-bit FLAC in the
    render cache; its path is returned.
    """
    programs = programs or voicing.programs
    path = _render_path(ctx, voicing, factor, transpose, programs, window)
    if path.exists():
        return path
    sr = ctx.sample_rate
    notes = timed_notes(voicing)
    notes[:, :2] /= factor
    notes[:, 2] += transpose
    notes = notes[(notes[:, 2] >= 0) & (notes[:, 2] <= 127)]
    if window is None:
        n_samples = round((float(notes[:, 1].max()) + TAIL_S) * sr)
        audio = synthesize(notes, programs, n_samples, ctx)
    else:
        start, length = window
        end_s = (start + length) / sr
        local = notes[notes[:, 0] < end_s].copy()
        local[:, 1] = np.minimum(local[:, 1], end_s + 0.1)
        if not np.any(local[:, 1] > start / sr):
            raise RuntimeError("no notes in window")
        audio = synthesize(local, programs, start + length, ctx)[start:]
    au.write_audio(path, au.normalize(audio), sr)
    return path


def render_full_job(args: tuple[Voicing, RenderContext]) -> tuple[str, str | None]:
    """Pool job: render a whole piece; returns (path, error)."""
    voicing, ctx = args
    try:
        return str(render(voicing, ctx)), None
    except Exception as exc:
        return "", f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------- worker pool


_T = TypeVar("_T")
_R = TypeVar("_R")


def _init_worker(scratch: str) -> None:
    """Pool initializer: offline music21, quiet warnings."""
    configure_music21(Path(scratch))


class Runner:
    """Ordered map over items, in a process pool when more than one worker is used."""

    def __init__(self, workers: int, scratch: Path, progress: bool) -> None:
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(scratch),),
            )
        else:
            _init_worker(str(scratch))

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T], desc: str) -> list[_R]:
        """Apply `fn` to every item; results in item order."""
        if not items:
            return []
        from tqdm import tqdm

        it: Iterator[_R] = (
            map(fn, items) if self._pool is None else self._pool.map(fn, items, chunksize=1)
        )
        bar = tqdm(it, total=len(items), desc=desc, disable=not self.progress, leave=False)
        return list(bar)

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
