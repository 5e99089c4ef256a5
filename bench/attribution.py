"""Attribution quality on real music: the evaluation corpus through the running service.

    python -m bench.attribution --size small                 # a dozen pieces (minutes)
    python -m bench.attribution --size full --json bench/results/attribution-full.json \\
        --markdown bench/results/attribution-full.md         # the full run (minutes)
    python -m bench.attribution --size full --calibrate      # recalibrate the abstain threshold

The corpus (bench/corpus/: scores rendered with FluidSynth) is built or loaded, then the real
service runs as its own process on a scratch database: a label uploads the catalogue through the
HTTP API (the bulk importer), the worker inside `serve` ingests it, the index takes it in, and an
AI company checks every query and negative through `POST /v1/checks`, each paid use going to
the ledger, which is verified at the end. Per query set it reports top-1 accuracy, recall@5,
both-in-top-3 (mixes), evidence time error, the share given to the true sources, and the
false-positive rate on negatives (a negative with any match at or above the abstain threshold).

With --calibrate the service runs with the abstain threshold at zero (it then reports every
match), the threshold is chosen on one half of the negatives for a false-positive rate of at
most --target-fpr, the metrics are read at that threshold (the FPR on the held-out half is the
honest one), and the threshold is written to the calibration file the service reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.catalogues.importer import TrackFile, import_folder
from app.checks.attribution import DEFAULT_CALIBRATION, AttributionParams
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, transaction
from app.embedding import Embedder, get_embedder
from app.orgs import service as orgs
from app.orgs.models import OrgKind
from bench import metrics
from bench._db import scratch_database
from bench._service import serve
from bench.corpus import Manifest, build_corpus, load_manifest

# Bars from the attribution-quality issue: (query sets, metric, minimum).
BARS: list[tuple[tuple[str, ...], str, float]] = [
    (("clean", "gain", "noise20", "lossy"), "top1", 0.97),
    (("tempo+5", "tempo-5"), "top1", 0.95),
    (("transpose+2", "transpose-2"), "top1", 0.90),
    (("reinstrument",), "top1", 0.85),
    (("mix2",), "all_top3", 0.80),
]
FPR_BAR = 0.01
RATE_MICROS = 1000


@dataclass
class Outcome:
    """Predictions for every query and negative, as the service answered."""

    predictions: dict[str, list[metrics.Prediction]] = field(default_factory=dict)
    seconds: float = 0.0
    checks: int = 0
    ledger_ok: bool | None = None
    ledger_transactions: int = 0
    ingest_seconds: float = 0.0


def _corpus(args: argparse.Namespace) -> Manifest:
    out = Path(args.corpus or f".echoledger/corpus-{args.size}")
    if (out / "manifest.json").exists() and not args.rebuild:
        return load_manifest(out)
    print(f"building the {args.size} corpus in {out} ...", file=sys.stderr)
    return build_corpus(out, size=args.size, seed=args.seed, progress=True)


def _bootstrap(url: str) -> tuple[str, str]:
    """A label and an AI company, straight in the database (as `echoledger create-org`)."""
    engine = create_db_engine(url, pool_size=1)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            _, label = orgs.create(session, kind=OrgKind.LABEL, name="corpus label")
            _, company = orgs.create(session, kind=OrgKind.AI_COMPANY, name="corpus ai")
    finally:
        engine.dispose()
    return label.secret, company.secret


def run_service(manifest: Manifest, *, calibration: Path, workers: int) -> Outcome:
    """Ingest the catalogue and check every query and negative through the HTTP API."""
    outcome = Outcome()
    with scratch_database("bench_attribution") as url, tempfile.TemporaryDirectory() as data:
        label_key, company_key = _bootstrap(url)
        env = {
            "ECHOLEDGER_CALIBRATION_FILE": str(calibration),
            "ECHOLEDGER_INDEX_SYNC_SECONDS": "1",
        }
        with serve(url, Path(data), env=env) as base:
            label = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {label_key}"}, timeout=300
            )
            company = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {company_key}"}, timeout=300
            )
            with label, company:
                catalogue = label.post(
                    "/v1/catalogues",
                    json={"name": "corpus", "license": {"rate_per_use_micros": RATE_MICROS}},
                ).json()
                started = time.perf_counter()
                track_of = _ingest(label, catalogue["id"], manifest)
                outcome.ingest_seconds = time.perf_counter() - started

                items = [(q.id, q.file) for q in manifest.queries]
                items += [(n.id, n.file) for n in manifest.negatives]
                started = time.perf_counter()

                def check(item: tuple[str, str]) -> tuple[str, list[metrics.Prediction]]:
                    ident, rel = item
                    path = manifest.root / rel
                    with path.open("rb") as f:
                        response = company.post(
                            "/v1/checks",
                            files={"file": (path.name, f)},
                            data={"generation_id": ident},
                            headers={"Idempotency-Key": uuid.uuid4().hex},
                        )
                    response.raise_for_status()
                    return ident, [
                        metrics.Prediction.from_dict(track_of.get(m["track_id"], "?"), m)
                        for m in response.json()["matches"]
                    ]

                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for done, (ident, predicted) in enumerate(pool.map(check, items), 1):
                        outcome.predictions[ident] = predicted
                        if done % 50 == 0:
                            print(f"  {done}/{len(items)} checks", file=sys.stderr)
                outcome.seconds = time.perf_counter() - started
                outcome.checks = len(items)

                engine = create_db_engine(url, pool_size=1)
                with transaction(make_sessionmaker(engine)) as session:
                    _, auditor = orgs.create(session, kind=OrgKind.AUDITOR, name="corpus auditor")
                engine.dispose()
                verified = httpx.get(
                    f"{base}/v1/ledger/verify",
                    headers={"Authorization": f"Bearer {auditor.secret}"},
                    timeout=600,
                ).json()
                outcome.ledger_ok = bool(verified["ok"])
                outcome.ledger_transactions = int(verified["transactions_checked"])
    return outcome


def _ingest(label: httpx.Client, catalogue_id: str, manifest: Manifest) -> dict[str, str]:
    """Upload the catalogue, wait until it is indexed and searchable; track id -> piece id."""
    files = [
        TrackFile(
            path=manifest.root / piece.file,
            title=piece.title[:500] or piece.id,
            artist=piece.composer or "unknown",
            external_id=piece.id,
        )
        for piece in manifest.catalogue
    ]
    report = import_folder(label, catalogue_id, files, jobs=2)
    if report.failed:
        raise RuntimeError(f"uploads failed: {report.failed[:5]}")
    print(f"uploaded {len(files)} catalogue pieces; ingesting ...", file=sys.stderr)
    while True:
        counts = label.get(f"/v1/catalogues/{catalogue_id}").json()["track_counts"]
        if counts["pending"] == 0:
            break
        time.sleep(2)
    if counts["failed"]:
        raise RuntimeError(f"{counts['failed']} catalogue pieces failed to ingest")
    track_of: dict[str, str] = {}
    segments = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = label.get(f"/v1/catalogues/{catalogue_id}/tracks", params=params).json()
        for track in page["items"]:
            track_of[track["id"]] = track["external_id"]
            segments += track["segment_count"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    while label.get("/readyz").json()["index_segments"] < segments:
        time.sleep(1)
    return track_of


def evaluate(
    manifest: Manifest, outcome: Outcome, *, threshold: float, held_out: set[str] | None
) -> list[metrics.Row]:
    """Metric rows per query set and per negative kind, at `threshold`."""
    rows = []
    for transformation in dict.fromkeys(q.transformation for q in manifest.queries):
        rows.append(
            metrics.summarise_queries(
                transformation,
                [
                    metrics.score_query(q.sources, outcome.predictions[q.id], threshold=threshold)
                    for q in manifest.queries_for(transformation)
                ],
            )
        )
    negatives = [n for n in manifest.negatives if held_out is None or n.id in held_out]
    for kind in dict.fromkeys(n.kind for n in manifest.negatives):
        rows.append(
            metrics.summarise_negatives(
                kind,
                [
                    metrics.is_false_positive(outcome.predictions[n.id], threshold=threshold)
                    for n in negatives
                    if n.kind == kind
                ],
            )
        )
    rows.append(
        metrics.summarise_negatives(
            "negatives",
            [
                metrics.is_false_positive(outcome.predictions[n.id], threshold=threshold)
                for n in negatives
            ],
        )
    )
    return rows


def negative_scores(manifest: Manifest, outcome: Outcome) -> dict[str, float]:
    """Best resemblance of each negative (0 when nothing matched), for `metrics.calibrate`."""
    return {
        n.id: max((p.resemblance for p in outcome.predictions[n.id]), default=0.0)
        for n in manifest.negatives
    }


def verdicts(rows: list[metrics.Row]) -> list[dict[str, Any]]:
    """Each bar of the issue, with the measured value and whether it is met."""
    by_name = {r.name: r for r in rows}
    found = []
    for names, metric, bar in BARS:
        present = [by_name[n] for n in names if n in by_name and by_name[n].n]
        if not present:
            continue
        worst = min(getattr(r, metric) for r in present)
        found.append({"sets": list(names), "metric": metric, "bar": bar, "value": worst,
                      "met": worst >= bar})  # fmt: skip
    if "negatives" in by_name and by_name["negatives"].fpr is not None:
        fpr = by_name["negatives"].fpr
        found.append({"sets": ["negatives"], "metric": "fpr", "bar": FPR_BAR, "value": fpr,
                      "met": fpr <= FPR_BAR})  # fmt: skip
    return found


def markdown(rows: list[metrics.Row], bars: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"Attribution quality, {info['corpus']} corpus (seed {info['seed']}), embedder "
        f"{info['embedder']}, abstain threshold {info['threshold']:.3f}, {info['date']}",
        "",
        "| set | n | top-1 | recall@5 | both in top 3 | time error p50 / p90 (s) "
        "| true share | FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = (
            f"{r.time_error_median_s:.2f} / {r.time_error_p90_s:.2f}"
            if r.time_error_median_s is not None and r.time_error_p90_s is not None
            else "-"
        )
        lines.append(
            f"| {r.name} | {r.n} | {_f(r.top1)} | {_f(r.recall5)} | {_f(r.all_top3)} | {err} "
            f"| {_f(r.true_share)} | {_f(r.fpr, 3)} |"
        )
    lines += ["", "| bar | measured | met |", "|---|---|---|"]
    for b in bars:
        op = "<=" if b["metric"] == "fpr" else ">="
        lines.append(
            f"| {', '.join(b['sets'])}: {b['metric']} {op} {b['bar']} | {b['value']:.3f} "
            f"| {'yes' if b['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--corpus", default=None, help="corpus directory (built if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the corpus")
    parser.add_argument("--workers", type=int, default=2, help="checks in flight")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--min-threshold", type=float, default=0.1,
                        help="never calibrate the abstain threshold below this")  # fmt: skip
    parser.add_argument("--calibration-file", type=Path, default=DEFAULT_CALIBRATION)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)

    manifest = _corpus(args)
    params = AttributionParams.load(args.calibration_file)
    held_out: set[str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        calibration_path = args.calibration_file
        if args.calibrate:
            # Report every match, so the threshold can be chosen afterwards.
            calibration_path = Path(tmp) / "calibration.json"
            open_params = AttributionParams.from_dict(params.as_dict() | {"abstain_threshold": 0.0})
            calibration_path.write_text(json.dumps({"params": open_params.as_dict()}))
        outcome = run_service(manifest, calibration=calibration_path, workers=args.workers)

    threshold = params.abstain_threshold
    calibration: metrics.Calibration | None = None
    if args.calibrate:
        calibration = metrics.calibrate(
            negative_scores(manifest, outcome),
            {n.id: n.kind for n in manifest.negatives},
            target_fpr=args.target_fpr,
            min_threshold=args.min_threshold,
        )
        threshold = calibration.threshold
        held_out = set(calibration.heldout_ids)

    rows = evaluate(manifest, outcome, threshold=threshold, held_out=held_out)
    bars = verdicts(rows)
    # The embedder the service ran with (it reads the same environment).
    embedder = get_embedder(Settings().embedder)
    info = {
        "corpus": manifest.size,
        "seed": manifest.seed,
        "embedder": f"{embedder.name} {embedder.version}",
        "threshold": threshold,
        "date": dt.date.today().isoformat(),
        "checks": outcome.checks,
        "check_seconds": round(outcome.seconds, 1),
        "ingest_seconds": round(outcome.ingest_seconds, 1),
        "ledger_verified": outcome.ledger_ok,
        "ledger_transactions": outcome.ledger_transactions,
    } | ({"calibration": calibration.as_dict()} if calibration else {})
    print(metrics.format_table(rows))
    print()
    print(markdown(rows, bars, info))
    print(
        f"\n{outcome.checks} checks in {outcome.seconds:.0f} s; "
        f"ingest {outcome.ingest_seconds:.0f} s; ledger verified: {outcome.ledger_ok} "
        f"({outcome.ledger_transactions} transactions)"
    )
    if calibration is not None:
        _write_calibration(args.calibration_file, params, calibration, manifest, rows, embedder)
        print(
            f"abstain threshold {threshold:.4f} written to {args.calibration_file}; "
            f"false-positive rate {calibration.calibration_fpr:.3f} on the calibration half, "
            f"{calibration.heldout_fpr:.3f} on the held-out half"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"info": info, "rows": [asdict(r) for r in rows], "bars": bars}, indent=2)
        )
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, bars, info) + "\n")
    return 0 if outcome.ledger_ok else 1


def _write_calibration(
    path: Path,
    params: AttributionParams,
    calibration: metrics.Calibration,
    manifest: Manifest,
    rows: list[metrics.Row],
    embedder: Embedder,
) -> None:
    """The parameters the service reads, with where the threshold came from (atomically)."""
    document = {
        # Rounded up, so a negative the threshold was fitted to reject stays rejected.
        "params": params.as_dict()
        | {"abstain_threshold": math.ceil(calibration.threshold * 1e6) / 1e6},
        "provenance": {
            "command": "python -m bench.attribution --size "
            f"{manifest.size} --calibrate --target-fpr {calibration.target_fpr}",
            "date": dt.date.today().isoformat(),
            "embedder": {
                "name": embedder.name,
                "version": embedder.version,
                "dim": embedder.dim,
                "window_s": embedder.window_s,
                "hop_s": embedder.hop_s,
            },
            "corpus": {
                "size": manifest.size,
                "seed": manifest.seed,
                "catalogue_pieces": len(manifest.catalogue),
                "queries": len(manifest.queries),
                "negatives": len(manifest.negatives),
                "info": {k: v for k, v in manifest.info.items() if isinstance(v, str | int)},
            },
            "calibration": calibration.as_dict(),
            "results_at_threshold": {r.name: metrics.row_json(r) for r in rows},
        },
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
