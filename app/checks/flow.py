"""The check workflow: claim the key, analyse, price and record, answer.

`CheckFlow` is built once per process (by the app's lifespan) and holds what a check needs
beyond one request: the embedder, the index, the attribution parameters, the ledger appender
(shared with the other flows that move money; the lifespan closes it) and a bound on checks
that decode and embed at once. The route parses the request and hands it
here; every step lives in `app.checks.service`.

1. The upload is staged (hashed while it streams to disk) and the Idempotency-Key is claimed in
   a short transaction of its own, so a concurrent retry sees it in flight; a key already
   completed replays the stored answer.
2. The piece is decoded, embedded, searched and aligned outside any transaction.
3. Spending limits are checked (a per-check cap, the company's credit limit), and the ledger
   accounts the uses will post to are looked up (created on first use).
4. The check, its uses, the charge and the key's binding are written in one transaction by the
   ledger appender. Any failure before that gives the key back, so the client can retry.
5. The uploaded audio is moved into the blob store (content-addressed), so the check's evidence
   can be listened to until `check_audio_retention_days` have passed.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy.orm import Session, sessionmaker

from app.blobs import BlobStore
from app.checks import service as checks
from app.checks.attribution import Calibration
from app.clock import Clock, system_clock
from app.config import Settings
from app.embedding import Embedder
from app.index.backend import SegmentIndex
from app.ledger import service as ledger
from app.ledger.appender import LedgerAppender
from app.ledger.models import LedgerPosting, LedgerTransaction
from app.ledger.service import ChainHead
from app.logging import get_logger
from app.timing import Stopwatch

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A generated piece as the client sent it."""

    ai_company_id: uuid.UUID
    idempotency_key: str
    audio: BinaryIO
    generation_id: str | None
    model: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """The check as recorded; `timings` (milliseconds per phase, see `Stopwatch`) only when
    it was analysed in this request, not replayed."""

    result: dict[str, Any]
    replayed: bool
    timings: dict[str, float] = field(default_factory=dict)


class CheckFlow:
    """Runs checks and reversals; thread-safe (one instance serves every request)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        embedder: Embedder,
        index: SegmentIndex,
        calibration: Calibration,
        appender: LedgerAppender,
        clock: Clock = system_clock,
        boot_id: int | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.blobs = blobs
        self.embedder = embedder
        self.index = index
        self.params = checks.params_for(calibration.params, embedder)
        self.calibration = calibration
        self.appender = appender
        self.clock = clock
        self.boot_id = boot_id  # claims record it, so a restart can free them (app.boot)
        # Checks are CPU-bound: at most this many decode and embed at once.
        self._slots = threading.BoundedSemaphore(settings.check_concurrency)
        # Keys this process is working on, so it can tell its own live claims from those it
        # failed to give back (the database was down when the attempt failed).
        self._running: collections.Counter[tuple[uuid.UUID, str]] = collections.Counter()
        self._running_lock = threading.Lock()

    def run(self, request: CheckRequest) -> CheckAnswer:
        """Check a piece and pay for its uses, exactly once per Idempotency-Key."""
        mine = (request.ai_company_id, request.idempotency_key)
        with self._running_lock:
            running_here = self._running[mine] > 0
            self._running[mine] += 1
        try:
            return self._run(request, running_here=running_here)
        finally:
            with self._running_lock:
                self._running[mine] -= 1
                if self._running[mine] <= 0:
                    del self._running[mine]

    def _run(self, request: CheckRequest, *, running_here: bool) -> CheckAnswer:
        settings = self.settings
        watch = Stopwatch()
        started = time.perf_counter()
        with self.blobs.stage(request.audio, max_bytes=settings.max_upload_bytes) as staged:
            watch.add("upload", time.perf_counter() - started)  # streamed to disk, hashed
            with watch.phase("claim"):
                replay = checks.claim_key(
                    self.sessions,
                    ai_company_id=request.ai_company_id,
                    key=request.idempotency_key,
                    request_hash=checks.fingerprint(
                        audio_sha256=staged.sha256,
                        generation_id=request.generation_id,
                        model=request.model,
                        metadata=request.metadata,
                    ),
                    lock_seconds=settings.idempotency_lock_seconds,
                    boot_id=self.boot_id,
                    running_here=running_here,
                )
            if replay is not None:
                return CheckAnswer(replay, replayed=True)
            try:
                submission = checks.Submission(
                    check_id=uuid.uuid4(),
                    ai_company_id=request.ai_company_id,
                    idempotency_key=request.idempotency_key,
                    audio_sha256=staged.sha256,
                    generation_id=request.generation_id,
                    model=request.model,
                    metadata=request.metadata,
                    embedder=self.embedder,
                    params=self.params,
                    calibration=self.calibration,
                    currency=settings.currency,
                    fee_bps=settings.platform_fee_bps,
                    created_at=self.clock(),
                )
                waiting = time.perf_counter()
                with self._slots:
                    watch.add("queue", time.perf_counter() - waiting)
                    analysis = checks.analyse(
                        staged.path,
                        settings=settings,
                        embedder=self.embedder,
                        index=self.index,
                        params=self.params,
                        sessions=self.sessions,
                        at=submission.created_at,
                        watch=watch,
                    )
                recording = time.perf_counter()
                checks.enforce_spending_limits(
                    self.sessions,
                    submission,
                    analysis,
                    max_per_check=settings.max_charge_per_check_micros,
                    default_credit_limit=settings.default_credit_limit_micros,
                )
                accounts = checks.resolve_accounts(self.sessions, submission, analysis)
                result = self.appender.run(
                    lambda session, head: checks.record(
                        session, head, submission, analysis, accounts
                    )
                )
                watch.add("record", time.perf_counter() - recording)
            except BaseException:
                checks.release_key(
                    self.sessions,
                    ai_company_id=request.ai_company_id,
                    key=request.idempotency_key,
                )
                raise
            if settings.check_audio_retention_days > 0:
                # Kept for the evidence players; forgotten after the retention period.
                with watch.phase("store"):
                    self.blobs.commit(staged)
        timings = watch.milliseconds()
        log.info("check.timings", check_id=result.get("id"), **timings)
        return CheckAnswer(result, replayed=False, timings=timings)

    def reverse(
        self, check_id: uuid.UUID, *, reason: str, actor_id: uuid.UUID
    ) -> tuple[LedgerTransaction, list[LedgerPosting]]:
        """Cancel a check's charge; returns the reversal and its postings."""

        def work(
            session: Session, head: ChainHead
        ) -> tuple[LedgerTransaction, list[LedgerPosting]]:
            reversal = checks.reverse(
                session, head, check_id=check_id, reason=reason, actor_id=actor_id
            )
            head.flush()
            return reversal, ledger.postings_of(session, [reversal.id])[reversal.id]

        return self.appender.run(work)
