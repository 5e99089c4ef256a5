"""Service start-up at a given catalogue size: from PostgreSQL alone, then from the snapshot.

    python -m bench.startup                                  # 1M segments, auto index
    python -m bench.startup --sizes 100000,1000000 --catch-up 20000 --json startup.json

For each size, a scratch database gets the catalogue of `bench/checks.py` (eight real tracks
plus filler segments up to the size; filler vectors are random unit vectors, which only
matters for the index's recall, not its start-up). Then:

1. `echoledger serve` starts with an empty data directory: no snapshot, so it builds the
   index from PostgreSQL (choosing and training it). Stopped with SIGTERM, it writes its
   snapshot.
2. `--catch-up` more segments are written, as a catalogue grows while the service is down.
3. `echoledger serve` starts again on the same data directory: it loads the snapshot and
   reads only the segments above the snapshot's watermark.

Start-up is the time from launching the process until `/readyz` answers 200 (Python and the
app's imports included), as an orchestrator sees it. The bar: < 30 s from a snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import sqlalchemy as sa

from app.embedding import get_embedder
from bench import _service
from bench._db import scratch_database
from bench.checks import populate, write_filler

BAR_S = 30.0


def add_filler(url: str, segments: int, *, seed: int = 1) -> None:
    """`segments` more random unit-vector segments under new filler tracks of the catalogue."""
    embedder = get_embedder("spectral")
    rng = np.random.default_rng(seed)
    engine = sa.create_engine(url)
    with engine.raw_connection() as raw:
        cursor = raw.cursor()
        cursor.execute("SELECT id FROM catalogues LIMIT 1")
        catalogue_id = cursor.fetchone()[0]
        write_filler(cursor, catalogue_id, embedder, segments, rng)
        raw.commit()
    engine.dispose()


def timed_start(url: str, data: Path, env: dict[str, str]) -> dict[str, Any]:
    """Start the service, wait for /readyz, read its index report and memory, stop it."""
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.perf_counter()
        server, base = _service.start(url, data, log=log, env=env)
        try:
            _service.wait_ready(server, base, log, timeout=3600)
            seconds = time.perf_counter() - started
            index = httpx.get(f"{base}/readyz", timeout=30).json()["index"]
            rss = psutil.Process(server.pid).memory_info().rss
        finally:
            stopping = time.perf_counter()
            _service.stop(server)
            stop_s = time.perf_counter() - stopping
    return {
        "seconds": round(seconds, 1),
        "index_seconds": index["start_seconds"],
        "started_from": index["started_from"],
        "factory": index["factory"],
        "segments": index["segments"],
        "rss_mb": round(rss / 2**20),
        "stop_s": round(stop_s, 1),
    }


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    with scratch_database("bench_startup") as url, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        print(f"[{size}] populating ...", file=sys.stderr)
        world = populate(url, size)
        env = {
            "ECHOLEDGER_RUN_WORKER": "false",
            "ECHOLEDGER_EMBEDDER": "spectral",
            "ECHOLEDGER_INDEX_FACTORY": args.factory,
            "ECHOLEDGER_INDEX_SEARCH_PARAMS": args.search_params,
        }
        print(f"[{size}] starting without a snapshot ...", file=sys.stderr)
        cold = timed_start(url, data, env)
        snapshot = sum(p.stat().st_size for p in (data / "index").iterdir())
        print(f"[{size}] cold: {cold}; adding {args.catch_up} segments ...", file=sys.stderr)
        add_filler(url, args.catch_up)
        warm = timed_start(url, data, env)
        print(f"[{size}] from snapshot: {warm}", file=sys.stderr)
    return {
        "segments": world["segments"],
        "catch_up": args.catch_up,
        "snapshot_mb": round(snapshot / 2**20),
        "rebuild": cold,
        "snapshot": warm,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated segment counts")
    parser.add_argument("--catch-up", type=int, default=10_000, help="segments added while down")
    parser.add_argument("--factory", default=os.environ.get("ECHOLEDGER_INDEX_FACTORY", "auto"))
    parser.add_argument(
        "--search-params", default=os.environ.get("ECHOLEDGER_INDEX_SEARCH_PARAMS", "")
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    rows = [run_size(int(s), args) for s in args.sizes.split(",")]
    print(
        f"{'segments':>10} {'index':<16}{'rebuild s':>10}{'snapshot s':>11}{'(index)':>9}"
        f"{'snap MB':>9}{'RSS MB':>8}  bar < {BAR_S:.0f} s"
    )
    for r in rows:
        warm = r["snapshot"]
        verdict = (
            "met" if warm["seconds"] < BAR_S and warm["started_from"] == "snapshot" else "MISSED"
        )
        print(
            f"{r['segments']:>10} {warm['factory']:<16}{r['rebuild']['seconds']:>10}"
            f"{warm['seconds']:>11}{warm['index_seconds']:>9}{r['snapshot_mb']:>9}"
            f"{warm['rss_mb']:>8}  {verdict} ({warm['seconds'] / BAR_S:.2f} of the bar; "
            f"{r['catch_up']} segments caught up)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "bar_s": BAR_S}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
