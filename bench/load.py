"""Load with retries: many clients, retried and replayed checks, then the books must balance.

    python -m bench.load                                  # 32 clients x 300 checks
    python -m bench.load --clients 8 --checks 40 --tracks 100   # a quick run

A scratch database gets a label's catalogue of `--tracks` synthesised tracks (uploaded through
the API, indexed by the in-process worker), four AI companies, and `echoledger serve` on
loopback. Then `--clients` threads (each with its own connection, spread over the companies)
send `--checks` checks in all: 12-second pieces, most drawn from catalogue tracks (paid uses),
some unrelated (no charge). After a check is answered, 10 % are retried with the same key and
body (the answer must be the first one, replayed) and 5 % are replayed with the same key and
an altered body (must be refused, 422 key_reused).

Verdict (exit status 1 if any fails): zero 5xx; exactly one ledger transaction per charged
key and no check for a refused one; Σ postings = 0 overall and per transaction; the chain
verifies; every acknowledged check is stored. Prints latency p50/p95/p99 and throughput.
Bounded in count and time (every request has a timeout; the run stops by itself).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import sqlalchemy as sa

from app.db import create_db_engine, make_sessionmaker, transaction
from app.orgs import service as orgs
from app.orgs.models import OrgKind
from bench._db import scratch_database
from bench._service import serve
from tests.audio_synth import TIMBRES, melody_track

SR = 22050
TRACK_S = 20.0
PIECE_S = 12.0
COMPANIES = 4
RATE = 1000
TIMEOUT_S = 120.0


def _wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class Tally:
    """What the clients saw; shared between threads under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> first answer
    retries_replayed: int = 0
    retries_wrong: list[str] = field(default_factory=list)
    altered_refused: int = 0
    altered_wrong: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def saw(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append(response.text[:300])


def build_world(base: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Keys, a catalogue of `args.tracks` indexed tracks, and the pieces clients send."""
    engine = create_db_engine(url, pool_size=1)
    with transaction(make_sessionmaker(engine)) as session:
        _, operator = orgs.create(session, kind=OrgKind.OPERATOR, name="load operator")
    engine.dispose()
    ops = {"Authorization": f"Bearer {operator.secret}"}
    timbres = list(TIMBRES)
    with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:

        def org(kind: str, name: str) -> str:
            response = client.post("/v1/orgs", json={"kind": kind, "name": name}, headers=ops)
            response.raise_for_status()
            return str(response.json()["api_key"]["key"])

        label = {"Authorization": f"Bearer {org('label', 'load label')}"}
        companies = [org("ai_company", f"load ai {i}") for i in range(COMPANIES)]
        auditor = org("auditor", "load auditor")
        catalogue = client.post(
            "/v1/catalogues",
            json={"name": "load", "license": {"rate_per_use_micros": RATE, "threshold": 0.3}},
            headers=label,
        ).json()
        started = time.perf_counter()
        for seed in range(args.tracks):
            audio = melody_track(
                seed + 1000, seconds=TRACK_S, sr=SR, timbre=timbres[seed % len(timbres)]
            )
            client.post(
                f"/v1/catalogues/{catalogue['id']}/tracks",
                files={"file": (f"t{seed}.wav", _wav(audio))},
                data={"title": f"track {seed}", "artist": "load"},
                headers=label,
            ).raise_for_status()
        deadline = time.monotonic() + 600
        while True:
            counts = client.get(f"/v1/catalogues/{catalogue['id']}", headers=label).json()
            if counts["track_counts"]["pending"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        print(
            f"catalogue: {counts['track_counts']} in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        # Give the index time to tail the last segments.
        time.sleep(3)
    rng = np.random.default_rng(0)
    pieces = []
    for i in range(40):
        if i % 4 == 3:  # unrelated music: no match, no charge
            audio = melody_track(90_000 + i, seconds=PIECE_S, sr=SR, timbre="flute")
        else:
            seed = int(rng.integers(0, args.tracks))
            whole = melody_track(
                seed + 1000, seconds=TRACK_S, sr=SR, timbre=timbres[seed % len(timbres)]
            )
            start = int(rng.integers(0, int((TRACK_S - PIECE_S) * SR)))
            audio = whole[start : start + int(PIECE_S * SR)]
        pieces.append(_wav(audio))
    return {"companies": companies, "auditor": auditor, "pieces": pieces}


def client_loop(
    base: str,
    key: str,
    pieces: list[bytes],
    n: int,
    seed: int,
    args: argparse.Namespace,
    tally: Tally,
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:
        for i in range(n):
            idem = f"load-{seed}-{i}-{uuid.uuid4().hex[:8]}"
            piece = rng.choice(pieces)
            fields = {"generation_id": f"gen-{seed}-{i}"}

            def post(form: dict[str, str], key_: str = idem, body: bytes = piece) -> httpx.Response:
                return client.post(
                    "/v1/checks",
                    files={"file": ("piece.wav", body)},
                    data=form,
                    headers=headers | {"Idempotency-Key": key_},
                )

            t0 = time.perf_counter()
            first = post(fields)
            elapsed = (time.perf_counter() - t0) * 1000
            tally.saw(first)
            with tally.lock:
                tally.latencies_ms.append(elapsed)
                if first.status_code == 201:
                    tally.acknowledged[key + idem] = first.json()
            if first.status_code != 201:
                continue
            draw = rng.random()
            if draw < args.retry:
                again = post(fields)
                tally.saw(again)
                same = again.status_code == 201 and again.json() == first.json()
                replayed = again.headers.get("Idempotent-Replayed") == "true"
                with tally.lock:
                    if same and replayed:
                        tally.retries_replayed += 1
                    else:
                        tally.retries_wrong.append(f"{idem}: {again.status_code}")
            elif draw < args.retry + args.altered:
                altered = post(fields | {"generation_id": f"altered-{i}"})
                tally.saw(altered)
                ok = altered.status_code == 422 and "key_reused" in altered.text
                with tally.lock:
                    if ok:
                        tally.altered_refused += 1
                    else:
                        tally.altered_wrong.append(f"{idem}: {altered.status_code}")


def audit(url: str, base: str, auditor: str, tally: Tally) -> dict[str, Any]:
    """What the database holds, against what the clients were told."""
    engine = create_db_engine(url, pool_size=1)
    with engine.connect() as conn:
        per_key = conn.execute(
            sa.text(
                "SELECT c.ai_company_id, c.idempotency_key, count(DISTINCT c.id), count(t.id) "
                "FROM checks c LEFT JOIN ledger_transactions t ON t.check_id = c.id "
                "GROUP BY c.ai_company_id, c.idempotency_key"
            )
        ).all()
        total = conn.scalar(sa.text("SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings"))
        unbalanced = conn.scalar(
            sa.text(
                "SELECT count(*) FROM (SELECT transaction_id FROM ledger_postings "
                "GROUP BY transaction_id HAVING sum(amount_micros) <> 0) x"
            )
        )
        transactions = conn.scalar(sa.text("SELECT count(*) FROM ledger_transactions"))
        stored_ids = set(conn.scalars(sa.text("SELECT id::text FROM checks")))
    engine.dispose()
    with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:
        verified = client.get(
            "/v1/ledger/verify", headers={"Authorization": f"Bearer {auditor}"}
        ).json()
    charged_acks = [a for a in tally.acknowledged.values() if a["ledger_transaction_id"]]
    return {
        "keys_with_more_than_one_check": sum(1 for r in per_key if r[2] != 1),
        "keys_with_more_than_one_transaction": sum(1 for r in per_key if r[3] > 1),
        "acknowledged_not_stored": sum(
            1 for a in tally.acknowledged.values() if a["id"] not in stored_ids
        ),
        "transactions": transactions,
        "charged_acknowledged": len(charged_acks),
        "sum_of_postings": int(total),
        "unbalanced_transactions": int(unbalanced),
        "chain_verifies": bool(verified["ok"]),
        "chain_length": verified["transactions_checked"],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--checks", type=int, default=300, help="checks in all, first attempts")
    parser.add_argument("--tracks", type=int, default=100)
    parser.add_argument("--retry", type=float, default=0.10)
    parser.add_argument("--altered", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.tracks < 1 or args.clients < 1 or args.checks < args.clients:
        parser.error("need tracks >= 1, clients >= 1 and checks >= clients")
    env = {
        # The load is the point here, not the per-key limits (tested in tests/test_limits.py).
        "ECHOLEDGER_RATE_LIMIT_CHECKS_PER_MINUTE": "1000000",
        "ECHOLEDGER_RATE_LIMIT_UPLOADS_PER_MINUTE": "1000000",
        "ECHOLEDGER_MAX_CONCURRENT_UPLOADS_PER_KEY": str(args.clients),
        "ECHOLEDGER_INDEX_SYNC_SECONDS": "0.5",
    }
    tally = Tally()
    with (
        scratch_database("bench_load") as url,
        tempfile.TemporaryDirectory() as data,
        serve(url, Path(data), env=env) as base,
    ):
        world = build_world(base, url, args)
        per_client = [args.checks // args.clients] * args.clients
        for i in range(args.checks % args.clients):
            per_client[i] += 1
        print(f"load: {args.clients} clients, {args.checks} checks ...", file=sys.stderr)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            futures = [
                pool.submit(
                    client_loop,
                    base,
                    world["companies"][c % COMPANIES],
                    world["pieces"],
                    per_client[c],
                    c,
                    args,
                    tally,
                )
                for c in range(args.clients)
            ]
            for future in futures:
                future.result()
        wall = time.perf_counter() - started
        books = audit(url, base, world["auditor"], tally)

    requests = sum(tally.statuses.values())
    results = {
        "clients": args.clients,
        "checks": args.checks,
        "tracks": args.tracks,
        "wall_s": round(wall, 1),
        "checks_per_s": round(len(tally.latencies_ms) / wall, 1),
        "requests_per_s": round(requests / wall, 1),
        "latency_ms": {
            "p50": round(percentile(tally.latencies_ms, 0.50), 1),
            "p95": round(percentile(tally.latencies_ms, 0.95), 1),
            "p99": round(percentile(tally.latencies_ms, 0.99), 1),
            "mean": round(statistics.fmean(tally.latencies_ms), 1),
        },
        "statuses": dict(sorted(tally.statuses.items())),
        "retries_replayed": tally.retries_replayed,
        "retries_wrong": tally.retries_wrong[:5],
        "altered_refused": tally.altered_refused,
        "altered_wrong": tally.altered_wrong[:5],
        "server_errors": tally.server_errors[:5],
        **books,
    }
    verdicts = {
        "zero 5xx": not tally.server_errors,
        "every retry replayed the first answer": not tally.retries_wrong,
        "every altered replay refused": not tally.altered_wrong,
        "one check per key": books["keys_with_more_than_one_check"] == 0,
        "at most one transaction per key": books["keys_with_more_than_one_transaction"] == 0,
        "one transaction per charged acknowledged check": books["transactions"]
        == books["charged_acknowledged"],
        "every acknowledged check stored": books["acknowledged_not_stored"] == 0,
        "sum of postings = 0": books["sum_of_postings"] == 0
        and books["unbalanced_transactions"] == 0,
        "chain verifies": books["chain_verifies"],
    }
    results["verdicts"] = verdicts
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for name, held in verdicts.items():
        print(f"{'HELD' if held else 'FAILED':6} {name}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
