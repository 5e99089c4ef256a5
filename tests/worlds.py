"""A shared test world: a label's catalogue of synthesised tracks, indexed, and an AI company."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.config import Settings
from tests.audio_synth import melody_track, write_audio
from tests.factories import Tenants, run_jobs, upload

SR = 22050
SEEDS = {11: "piano", 12: "strings", 13: "flute", 14: "organ"}
RATE = 2000


class Music:
    """Synthesised pieces, written once per test session."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, make: Callable[[], np.ndarray], fmt: str = "WAV") -> Path:
        path = self.root / f"{name}.{fmt.lower()}"
        if not path.exists():
            write_audio(path, make(), SR, fmt)  # type: ignore[arg-type]
        return path

    def track(self, seed: int) -> Path:
        return self.write(
            f"track-{seed}", lambda: melody_track(seed, seconds=30.0, sr=SR, timbre=SEEDS[seed])
        )


def build_world(
    client: TestClient, tenants: Tenants, settings: Settings, engine: Engine, music: Music
) -> dict[str, Any]:
    """A label with a catalogue of four indexed tracks, and an AI company."""
    label = tenants.label()
    catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
    tracks = {
        seed: upload(client, label, catalogue["id"], music.track(seed)).json()["id"]
        for seed in SEEDS
    }
    run_jobs(settings, engine)
    client.app.state.service.index.sync()  # type: ignore[attr-defined]
    return {
        "label": label,
        "catalogue": catalogue,
        "tracks": tracks,
        "company": tenants.ai_company(),
    }


def excerpt(
    seed: int, start: float, seconds: float, *, tempo: float = 1.0, transpose: int = 0, **kw: Any
) -> np.ndarray:
    """`seconds` of track `seed` from `start` (in the transformed piece's own time)."""
    audio = melody_track(
        seed, seconds=start + seconds, sr=SR, tempo=tempo, transpose=transpose, **kw
    )
    return audio[int(start * SR) :]
