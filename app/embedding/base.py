"""The embedder contract shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class EmbeddingError(ValueError):
    """The audio cannot be embedded (too short, wrong shape, wrong rate)."""


@dataclass(frozen=True, slots=True)
class Embedding:
    """Window vectors of one piece of audio.

    vectors : np.ndarray [shape=(n, dim), dtype=float32], each row L2-normalised
    starts : np.ndarray [shape=(n,), dtype=float32], window start times in seconds
    window_s : window length in seconds (every window has the same length)
    """

    vectors: FloatArray
    starts: FloatArray
    window_s: float

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise EmbeddingError(f"expected vectors of shape (n, dim), got {self.vectors.shape}")
        if self.starts.shape != (self.vectors.shape[0],):
            raise EmbeddingError(
                f"starts shape {self.starts.shape} does not match {self.vectors.shape[0]} vectors"
            )


@runtime_checkable
class Embedder(Protocol):
    """Turns mono audio at `sample_rate` into L2-normalised window vectors."""

    name: str
    version: str
    dim: int
    sample_rate: int
    window_s: float
    hop_s: float
    # Whether `transpose` works: the vectors of transposed audio can be computed from the
    # vectors themselves (the spectral embedder's chroma rotate; learned embeddings do not).
    can_transpose: bool

    def embed(self, audio: FloatArray, sr: int, *, hop_s: float | None = None) -> Embedding:
        """Embed mono float32 audio sampled at `sr` (must equal `sample_rate`).

        audio : np.ndarray [shape=(n_samples,), dtype=float32]
        hop_s : hop between window starts; defaults to the embedder's `hop_s`
        """
        ...

    def transpose(self, vectors: FloatArray, semitones: int) -> FloatArray:
        """The vectors the same audio would give transposed by `semitones`.

        vectors : np.ndarray [shape=(n, dim)] from `embed`
        Raises EmbeddingError when `can_transpose` is False.
        """
        ...


@runtime_checkable
class OctaveViews(Protocol):
    """An embedder that can also read a query with its pitch range moved by whole octaves
    (the spectral one): view o is what `embed` gives of the same music o octaves lower."""

    def embed_octaves(
        self, audio: FloatArray, sr: int, *, hop_s: float | None = None, octaves: Sequence[int]
    ) -> dict[int, Embedding]: ...

    def octave_apart(self, query: FloatArray, reference: FloatArray, semitones: int = 0) -> int:
        """How many octaves (-1, 0 or 1) beyond `semitones` the query's windows sound above
        the reference windows aligned with them row by row, judged by what the vectors keep
        of register."""
        ...


def check_audio(audio: object, sr: int, *, sample_rate: int, window_s: float = 0.0) -> FloatArray:
    """Validate embedder input: mono float32 finite samples at `sample_rate`, at least
    `window_s` long; returns it. Every embedder calls this first, so every one rejects bad
    input alike, naming the bad value.
    """
    if not isinstance(audio, np.ndarray):
        raise EmbeddingError(f"audio must be a numpy array, got {type(audio).__name__}")
    if audio.ndim != 1:
        raise EmbeddingError(
            f"audio must be mono with shape (n_samples,), got shape={audio.shape}; "
            "mix channels down first"
        )
    if audio.dtype != np.float32:
        raise EmbeddingError(f"audio must be float32, got dtype={audio.dtype}")
    if isinstance(sr, bool) or sr != sample_rate:
        raise EmbeddingError(f"sample rate must be {sample_rate} Hz, got sr={sr!r}; resample first")
    need = round(window_s * sample_rate)
    if audio.shape[0] < need:
        raise EmbeddingError(
            f"audio is {audio.shape[0] / sample_rate:.3f} s ({audio.shape[0]} samples), "
            f"shorter than one {window_s:g} s window ({need} samples)"
        )
    if not np.isfinite(audio).all():
        raise EmbeddingError("audio holds non-finite samples (NaN or infinity)")
    checked: FloatArray = audio
    return checked


def l2_normalise(vectors: FloatArray) -> FloatArray:
    """Scale each row to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out = np.zeros(vectors.shape, dtype=np.float32)
    np.divide(vectors, norms, out=out, where=norms > 0)
    return out
