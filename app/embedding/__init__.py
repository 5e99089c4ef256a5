"""Embedders turn audio into window vectors; the service uses the one named in its settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np

from app.embedding.base import Embedder, Embedding, EmbeddingError, FloatArray, OctaveViews

__all__ = [
    "Embedder",
    "Embedding",
    "EmbeddingError",
    "OctaveViews",
    "embed_audio",
    "embed_audio_octaves",
    "get_embedder",
]

NAMES = ("spectral", "openl3")


@cache
def get_embedder(name: str) -> Embedder:
    """The process-wide embedder of that name (heavy models load once)."""
    if name == "spectral":
        from app.embedding.spectral import SpectralEmbedder

        return SpectralEmbedder()
    if name == "openl3":
        from app.embedding.openl3 import OpenL3Embedder

        return OpenL3Embedder()
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(NAMES)}")


def embed_audio(embedder: Embedder, audio: FloatArray, *, hop_s: float | None = None) -> Embedding:
    """Embed audio at the embedder's rate; audio shorter than one window is padded with
    silence so that every accepted file (2 s and up) yields at least one vector."""
    return embedder.embed(_padded(embedder, audio), embedder.sample_rate, hop_s=hop_s)


def embed_audio_octaves(
    embedder: Embedder, audio: FloatArray, *, hop_s: float | None, octaves: Sequence[int]
) -> dict[int, Embedding]:
    """As `embed_audio`, and the octave views `octaves` of the same audio in one pass:
    view 0 is the embedding (see `OctaveViews`)."""
    if not isinstance(embedder, OctaveViews):
        raise EmbeddingError(f"the {embedder.name} embedder has no octave views")
    return embedder.embed_octaves(
        _padded(embedder, audio), embedder.sample_rate, hop_s=hop_s, octaves=(0, *octaves)
    )


def _padded(embedder: Embedder, audio: FloatArray) -> FloatArray:
    need = math.ceil(embedder.window_s * embedder.sample_rate)
    if 0 < len(audio) < need:
        audio = np.concatenate([audio, np.zeros(need - len(audio), dtype=np.float32)])
    return audio
