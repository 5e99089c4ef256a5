"""What detecting a recording registered twice costs per ingested track, against the size of
the stored catalogue.

    python -m bench.conflicts                       # 200,000 stored segments
    python -m bench.conflicts --segments 1000000 --repeat 3

A scratch database (DATABASE_URL's server, else an embedded one) is filled with tracks of
100 random unit windows (128 values, the spectral embedder's size), one of them stored again
as a newer track of another label: `overlaps.detect` on it must find that one conflict. The
time is one detection: streaming every stored segment of the embedder against 12 probe
windows, then comparing the candidates in full. Prints segments, seconds and segments/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid

import numpy as np
import sqlalchemy as sa

from app.catalogues import overlaps
from app.catalogues.models import Catalogue, Segment, Track
from app.db import create_db_engine, make_sessionmaker, transaction
from app.orgs.models import Organisation
from bench._db import scratch_database

DIM = 128
WINDOWS = 100
EMBEDDER, VERSION = "spectral", "bench"


def _track(catalogue_id: uuid.UUID, n: int, at: dt.datetime) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "catalogue_id": catalogue_id,
        "title": f"track {n}",
        "artist": "bench",
        "status": "indexed",
        "audio_sha256": uuid.uuid4().hex * 2,
        "audio_format": "wav",
        "size_bytes": 1,
        "duration_s": float(WINDOWS + 7),
        "sample_rate": 11025,
        "channels": 1,
        "embedder": EMBEDDER,
        "embedder_version": VERSION,
        "segment_count": WINDOWS,
        "created_at": at,
    }


def _segments(track_id: uuid.UUID, vectors: np.ndarray) -> list[dict[str, object]]:
    return [
        {
            "track_id": track_id,
            "embedder": EMBEDDER,
            "embedder_version": VERSION,
            "start_s": float(i),
            "duration_s": 8.0,
            "vector": v.astype("<f4").tobytes(),
        }
        for i, v in enumerate(vectors)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2, help="detections timed; best kept")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    tracks = max(2, args.segments // WINDOWS)
    with scratch_database("bench_conflicts") as url:
        engine = create_db_engine(url, pool_size=2)
        sessions = make_sessionmaker(engine)
        start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        with transaction(sessions) as session:
            labels = [Organisation(kind="label", name=f"label {i}") for i in range(2)]
            session.add_all(labels)
            session.flush()
            catalogues = [Catalogue(label_id=label.id, name="bench") for label in labels]
            session.add_all(catalogues)
            session.flush()
            catalogue_ids = [c.id for c in catalogues]
        copied: np.ndarray | None = None
        loaded = time.perf_counter()
        for first in range(0, tracks, 100):
            with transaction(sessions) as session:
                rows, segments = [], []
                for n in range(first, min(first + 100, tracks)):
                    row = _track(catalogue_ids[0], n, start + dt.timedelta(seconds=n))
                    vectors = rng.normal(size=(WINDOWS, DIM)).astype(np.float32)
                    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                    if copied is None:
                        copied = vectors
                    rows.append(row)
                    segments += _segments(row["id"], vectors)  # type: ignore[arg-type]
                session.execute(sa.insert(Track), rows)
                session.execute(sa.insert(Segment), segments)
        loaded = time.perf_counter() - loaded
        assert copied is not None
        with transaction(sessions) as session:
            row = _track(catalogue_ids[1], tracks, start + dt.timedelta(days=1))
            session.execute(sa.insert(Track), [row])
            session.execute(sa.insert(Segment), _segments(row["id"], copied))  # type: ignore[arg-type]
            new_id = row["id"]
        best = float("inf")
        found = 0
        for _ in range(args.repeat):
            with sessions() as session:  # rolled back: every run finds the conflict anew
                began = time.perf_counter()
                found = len(overlaps.detect(session, new_id))  # type: ignore[arg-type]
                best = min(best, time.perf_counter() - began)
                session.rollback()
        engine.dispose()
    stored = tracks * WINDOWS
    result = {
        "stored_segments": stored,
        "stored_tracks": tracks,
        "load_seconds": round(loaded, 1),
        "detect_seconds": round(best, 3),
        "segments_per_second": round(stored / best),
        "conflicts_found": found,
    }
    print(
        f"{stored:,} stored segments ({tracks:,} tracks): one detection {best:.2f} s "
        f"({stored / best:,.0f} segments/s), found {found} conflict(s)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
