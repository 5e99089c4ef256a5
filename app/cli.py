"""The `echoledger` command: serve, worker, migrate, create-org, import, import-ddex, reembed,
prune-segments, rebuild-index, close-period, scan-conflicts."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings, get_settings
from app.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = get_logger("app.cli")


def _settings_with_database() -> Settings:
    """Settings whose database URL is resolved (starting the embedded server if needed)."""
    from app.db import resolve_database_url

    settings = get_settings()
    url = resolve_database_url(settings)
    # Child processes (uvicorn reload, workers) and Alembic see the same database.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    return get_settings()


@contextmanager
def _database() -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    """Settings with the database resolved, and sessions on a one-connection engine that is
    disposed on exit (for commands that do a little database work and stop)."""
    from app.db import create_db_engine, make_sessionmaker

    settings = _settings_with_database()
    assert settings.database_url is not None
    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        yield settings, make_sessionmaker(engine)
    finally:
        engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = _settings_with_database()
    app = create_app(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit instead
    # lets atexit hooks run (the embedded PostgreSQL stops with its last user).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        proxy_headers=True,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app import migrate

    settings = _settings_with_database()
    assert settings.database_url is not None
    migrate.upgrade(settings.database_url, args.revision)
    log.info("migrate.done", revision=args.revision)
    return 0


def cmd_create_org(args: argparse.Namespace) -> int:
    from app.db import transaction
    from app.orgs import service as orgs
    from app.orgs.models import OrgKind

    with _database() as (_, sessions), transaction(sessions) as session:
        org, issued = orgs.create(session, kind=OrgKind(args.kind), name=args.name)
    print(f"organisation {org.id} ({org.kind}) {org.name!r}", file=sys.stderr)
    print("API key (shown once, store it now):", file=sys.stderr)
    print(issued.secret)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from app.worker import run_standalone

    settings = _settings_with_database()
    asyncio.run(
        run_standalone(settings, concurrency=args.concurrency or settings.worker_concurrency)
    )
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    from app.catalogues.segments import segment_index
    from app.embedding import get_embedder

    with _database() as (settings, sessions):
        manager = segment_index(settings, get_embedder(settings.embedder), sessions)
        manager.rebuild()
        manager.save_snapshot(force=True)
    print(f"index rebuilt: {manager.size} segments -> {manager.snapshot_path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import httpx
    from tqdm import tqdm

    from app.catalogues.importer import discover, import_folder

    key = args.key or os.environ.get("ECHOLEDGER_API_KEY")
    if not key:
        print("an API key is needed: --key or ECHOLEDGER_API_KEY", file=sys.stderr)
        return 2
    files = discover(args.folder, default_artist=args.artist)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx.Timeout(30.0, read=300.0)
    with (
        httpx.Client(base_url=args.api, headers=headers, timeout=timeout) as client,
        tqdm(total=len(files), unit="file", desc="import") as bar,
    ):
        report = import_folder(
            client, args.catalogue, files, jobs=args.jobs, progress=lambda: bar.update()
        )
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(
        f"uploaded {len(report.uploaded)}, already there {len(report.skipped)}, "
        f"failed {len(report.failed)}",
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def cmd_import_ddex(args: argparse.Namespace) -> int:
    import uuid

    from app.blobs import BlobStore
    from app.catalogues.models import Catalogue
    from app.db import transaction
    from app.errors import AppError
    from app.rights import ddex, delivery

    path: Path = args.message
    try:
        catalogue_id = uuid.UUID(args.catalogue)
    except ValueError:
        print(f"not a catalogue id: {args.catalogue!r}", file=sys.stderr)
        return 2
    try:
        message = ddex.parse(path.read_bytes())
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    except AppError as exc:
        _print_refusal(exc)
        return 2
    with _database() as (settings, sessions):
        try:
            with transaction(sessions) as session:
                catalogue = session.get(Catalogue, catalogue_id)
                if catalogue is None:
                    print(f"no catalogue {args.catalogue}", file=sys.stderr)
                    return 2
                outcomes = delivery.import_message(
                    session,
                    catalogue,
                    message,
                    delivery.FolderFiles(path.parent),
                    blobs=BlobStore(settings.blob_dir),
                    settings=settings,
                )
        except AppError as exc:
            _print_refusal(exc)
            return 2
    for outcome in outcomes:
        detail = outcome.reason if outcome.reason else outcome.track_id
        print(f"{outcome.reference}\t{outcome.isrc}\t{outcome.status.value}\t{detail}")
    tally = delivery.counts(outcomes)
    print(", ".join(f"{status} {n}" for status, n in tally.items()), file=sys.stderr)
    return 1 if tally["failed"] else 0


def _print_refusal(exc: Exception) -> None:
    from app.errors import AppError

    assert isinstance(exc, AppError)
    print(exc.message, file=sys.stderr)
    for detail in exc.details if isinstance(exc.details, list) else []:
        print(f"  {detail}", file=sys.stderr)


def cmd_reembed(args: argparse.Namespace) -> int:
    import uuid

    from app.catalogues.tracks import enqueue_reembedding
    from app.db import transaction
    from app.embedding import get_embedder

    with _database() as (settings, sessions), transaction(sessions) as session:
        embedder = get_embedder(settings.embedder)
        count = enqueue_reembedding(
            session,
            embedder_name=embedder.name,
            embedder_version=embedder.version,
            catalogue_id=uuid.UUID(args.catalogue) if args.catalogue else None,
        )
    print(f"{count} tracks queued for {embedder.name} {embedder.version}; workers will embed them")
    return 0


def cmd_prune_segments(args: argparse.Namespace) -> int:
    from app.catalogues.tracks import prune_superseded_segments
    from app.embedding import get_embedder

    with _database() as (settings, sessions), sessions() as session:
        embedder = get_embedder(settings.embedder)
        pruned = prune_superseded_segments(
            session,
            embedder_name=embedder.name,
            embedder_version=embedder.version,
            dry_run=args.dry_run,
        )
    verb = "would be deleted" if args.dry_run else "deleted"
    print(
        f"{pruned.segments} segments of other embedders or versions {verb} from "
        f"{pruned.tracks} tracks re-embedded with {embedder.name} {embedder.version}"
    )
    if pruned.waiting:
        print(
            f"{pruned.waiting} tracks have only other versions' segments and keep them "
            "(run `echoledger reembed` and its jobs first)"
        )
    return 0


def cmd_scan_conflicts(args: argparse.Namespace) -> int:
    import uuid

    from app.catalogues import overlaps
    from app.db import transaction

    try:
        catalogue_id = uuid.UUID(args.catalogue) if args.catalogue else None
    except ValueError:
        print(
            f"--catalogue must be a catalogue id (a UUID), got {args.catalogue!r}", file=sys.stderr
        )
        return 2
    with _database() as (_, sessions), transaction(sessions) as session:
        found = overlaps.scan(session, catalogue_id=catalogue_id)
        for row in found:
            print(
                f"{row.kind} {row.id}: track {row.track_id} repeats {row.original_track_id} "
                f"(coverage {row.coverage:.0%}, resemblance {row.resemblance:.3f})"
            )
    print(f"{len(found)} new duplicates or conflicts found")
    return 0


def cmd_close_period(args: argparse.Namespace) -> int:
    from app.errors import Conflict
    from app.ledger import periods
    from app.ledger.appender import run_alone

    try:
        month = periods.parse_month(args.month)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    with _database() as (_, sessions):
        try:
            closed, through = run_alone(
                sessions,
                lambda session, head: periods.close_and_report(
                    session, head, month=month, actor_id=None
                ),
            )
        except Conflict as exc:
            print(exc.message, file=sys.stderr)
            return 1
    names = ", ".join(periods.month_name(p.month) for p in closed) or "nothing (already closed)"
    print(f"closed {names}; the ledger is closed through {periods.month_name(through)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echoledger",
        description="Echoledger: licensing of music catalogues as AI training data.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API (and an in-process worker)")
    serve.add_argument("--host", default=None, help="default: ECHOLEDGER_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: ECHOLEDGER_PORT or 8000")
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run an ingestion worker (run several to scale)")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs at once (default: ECHOLEDGER_WORKER_CONCURRENCY)",
    )
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)

    imp = commands.add_parser(
        "import", help="upload a folder of audio files to a catalogue (resumable)"
    )
    imp.add_argument("folder", type=Path)
    imp.add_argument("--catalogue", required=True, help="catalogue id")
    imp.add_argument(
        "--api",
        default=os.environ.get("ECHOLEDGER_API_URL", "http://127.0.0.1:8000"),
        help="service URL (default: ECHOLEDGER_API_URL or http://127.0.0.1:8000)",
    )
    imp.add_argument(
        "--key", default=None, help="the label's API key (default: ECHOLEDGER_API_KEY)"
    )
    imp.add_argument("--artist", default="Unknown artist", help="artist when no metadata says")
    imp.add_argument("--jobs", type=int, default=2, help="uploads at once")
    imp.set_defaults(func=cmd_import)

    ddex_import = commands.add_parser(
        "import-ddex",
        help="import a DDEX ERN 4.x NewReleaseMessage and the audio beside it into a catalogue",
    )
    ddex_import.add_argument("message", type=Path, help="the message's XML file")
    ddex_import.add_argument("--catalogue", required=True, help="catalogue id")
    ddex_import.set_defaults(func=cmd_import_ddex)

    reembed = commands.add_parser(
        "reembed",
        help="queue indexed tracks whose segments came from another embedder or version",
    )
    reembed.add_argument("--catalogue", default=None, help="only this catalogue")
    reembed.set_defaults(func=cmd_reembed)

    prune = commands.add_parser(
        "prune-segments",
        help="delete other embedders' or versions' segments from re-embedded tracks "
        "(once no running release reads them)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")
    prune.set_defaults(func=cmd_prune_segments)

    rebuild = commands.add_parser(
        "rebuild-index",
        help="rebuild the FAISS index snapshot from PostgreSQL (running servers load it on start)",
    )
    rebuild.set_defaults(func=cmd_rebuild_index)

    scan = commands.add_parser(
        "scan-conflicts",
        help="find tracks registered twice (duplicates within a label, ownership conflicts "
        "between labels) among the indexed tracks",
    )
    scan.add_argument("--catalogue", default=None, help="only this catalogue's tracks")
    scan.set_defaults(func=cmd_scan_conflicts)

    close = commands.add_parser(
        "close-period",
        help="close a month that has ended (and any earlier one still open): nothing dated in "
        "it is written again",
    )
    close.add_argument("month", help="YYYY-MM (UTC)")
    close.set_defaults(func=cmd_close_period)

    create_org = commands.add_parser(
        "create-org", help="create an organisation and print its first API key"
    )
    create_org.add_argument(
        "--kind", required=True, choices=["operator", "label", "ai_company", "auditor"]
    )
    create_org.add_argument("--name", required=True)
    create_org.set_defaults(func=cmd_create_org)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
