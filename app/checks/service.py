"""Attribution checks: idempotent intake, analysis, pricing, and one recording transaction.

A check runs in three steps:

1. `claim_key` binds the client's Idempotency-Key to this request (a short transaction of its
   own, so a concurrent retry sees the key as in flight);
2. `analyse` decodes, embeds, searches the index and aligns hits per track (CPU; no writes);
3. `record` writes the check, its uses and the ledger transaction that pays for them, and binds
   the key to the check, all in one database transaction (run by the ledger appender).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from app import boot
from app.audio.decode import load
from app.blobs import BlobStore
from app.catalogues import overlaps
from app.catalogues.licensing import Licensed, excluded_hits, licensed_tracks
from app.catalogues.models import OverlapStatus, Track
from app.checks.attribution import (
    AttributionParams,
    Calibration,
    Evidence,
    TrackMatch,
    TrackWindows,
    attribute_vectors,
)
from app.checks.grouping import Group, Pair, group_matches
from app.checks.models import Check, IdempotencyKey, Use
from app.checks.pricing import RESEMBLANCE_SCALE, UseCandidate, price, quantise
from app.checks.schemas import CheckResult, EmbedderOut, EvidenceOut, MatchOut
from app.config import Settings
from app.conflicts import service as conflicts
from app.db import transaction, utcnow
from app.embedding import Embedder, Embedding, OctaveViews, embed_audio, embed_audio_octaves
from app.errors import AppError, Conflict, NotFound, PaymentRequired, Unprocessable
from app.index.backend import SegmentIndex
from app.index.base import SearchResult
from app.ledger import movements
from app.ledger import service as ledger
from app.ledger.models import AccountKind, LedgerTransaction
from app.ledger.service import ChainHead
from app.logging import get_logger
from app.orgs import service as orgs
from app.orgs.auth import READ_ALL, Principal
from app.orgs.models import OrgKind
from app.timing import Stopwatch

log = get_logger(__name__)

IDEMPOTENCY_FIELD = "header.Idempotency-Key"


def fingerprint(
    *, audio_sha256: str, generation_id: str | None, model: str | None, metadata: dict[str, Any]
) -> str:
    """What makes two requests "the same request" for idempotency."""
    canonical = json.dumps(
        {
            "audio_sha256": audio_sha256,
            "generation_id": generation_id,
            "model": model,
            "metadata": metadata,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim_key(
    sessions: sessionmaker[Session],
    *,
    ai_company_id: uuid.UUID,
    key: str,
    request_hash: str,
    lock_seconds: float,
    boot_id: int | None = None,
    running_here: bool = False,
) -> dict[str, Any] | None:
    """Take the key for this request; or return the stored result of the request that did.

    Raises Unprocessable when the key was used for a different request, and Conflict while
    another request holding the key is still running. A claim is taken over when the process
    that made it is gone (its boot lock is free, see `app.boot`) or, for a claim without a
    boot, once it is older than `lock_seconds`. A claim this very process holds but is not
    running (`running_here` False: an attempt whose release failed while the database was
    down) is taken over too.
    """
    with transaction(sessions) as session:
        claimed = session.execute(
            insert(IdempotencyKey)
            .values(
                ai_company_id=ai_company_id, key=key, request_hash=request_hash, boot_id=boot_id
            )
            .on_conflict_do_nothing()
            .returning(IdempotencyKey.key)
        ).first()
        if claimed is not None:
            return None
        held = session.scalars(
            sa.select(IdempotencyKey)
            .where(IdempotencyKey.ai_company_id == ai_company_id, IdempotencyKey.key == key)
            .with_for_update()
        ).one()
        if held.request_hash != request_hash:
            raise Unprocessable(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request",
                details={"field": IDEMPOTENCY_FIELD, "reason": "key_reused"},
            )
        if held.check_id is not None:
            check = session.get(Check, held.check_id)
            assert check is not None
            return check.result
        leftover = boot_id is not None and held.boot_id == boot_id and not running_here
        if not leftover and _claim_alive(session, held, lock_seconds):
            raise Conflict(
                "a check with this Idempotency-Key is still being processed; retry shortly",
                details={"field": IDEMPOTENCY_FIELD, "reason": "in_flight"},
            )
        held.claimed_at = utcnow()
        held.boot_id = boot_id
        return None


def _claim_alive(session: Session, held: IdempotencyKey, lock_seconds: float) -> bool:
    if held.boot_id is not None:
        return bool(session.scalar(sa.select(boot.live(sa.literal(held.boot_id)))))
    return held.claimed_at > utcnow() - dt.timedelta(seconds=lock_seconds)


def release_orphaned_claims(sessions: sessionmaker[Session]) -> int:
    """Free every unfinished claim whose process is gone (run at start); returns how many."""
    with transaction(sessions) as session:
        freed = session.execute(
            sa.delete(IdempotencyKey).where(
                IdempotencyKey.check_id.is_(None),
                IdempotencyKey.boot_id.is_not(None),
                ~boot.live(IdempotencyKey.boot_id),
            )
        )
    return int(freed.rowcount)  # type: ignore[attr-defined]


def release_key(sessions: sessionmaker[Session], *, ai_company_id: uuid.UUID, key: str) -> None:
    """Give the key back after a failed attempt, so the client can retry with it."""
    with transaction(sessions) as session:
        session.execute(
            sa.delete(IdempotencyKey).where(
                IdempotencyKey.ai_company_id == ai_company_id,
                IdempotencyKey.key == key,
                IdempotencyKey.check_id.is_(None),
            )
        )


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the piece resembles, before any money moves."""

    duration_s: float
    index_watermark: int
    matches: list[tuple[TrackMatch, Licensed]]
    # Known registrations of one recording with a matched track on one side (see
    # `grouping`), and the live, licensed tracks on their other sides that did not match.
    pairs: list[Pair] = field(default_factory=list)
    partners: dict[uuid.UUID, Licensed] = field(default_factory=dict)


def params_for(params: AttributionParams, embedder: Embedder) -> AttributionParams:
    """The attribution parameters as this embedder can use them: query-side transpositions
    need an embedder that can transpose its vectors (the spectral one); without, the query is
    searched as it is; octave views need one that has them (the spectral one). The result is
    what each check records."""
    if not embedder.can_transpose and params.transpositions != (0,):
        params = replace(params, transpositions=(0,))
    if params.octave_views and not isinstance(embedder, OctaveViews):
        params = replace(params, octave_views=())
    return params


def analyse(
    path: Path,
    *,
    settings: Settings,
    embedder: Embedder,
    index: SegmentIndex,
    params: AttributionParams,
    sessions: sessionmaker[Session],
    at: dt.datetime,
    watch: Stopwatch | None = None,
) -> Analysis:
    """Decode, embed, search and align; only licensed, live tracks take part.

    The query is searched as is and at each of `params.transpositions` when the embedder can
    transpose its vectors (the spectral one can); then sources found are explained away and
    the rest searched again (see `attribute_vectors`). `watch` receives the phases: decode,
    embed, search (the index), licensing and windows (PostgreSQL reads for candidates), and
    verify (the rest of the attribution: exact comparison, explaining away, alignment).
    """
    watch = watch or Stopwatch()
    with watch.phase("decode"):
        audio = load(
            path,
            sample_rate=embedder.sample_rate,
            min_seconds=settings.min_audio_seconds,
            max_seconds=settings.max_check_seconds,
        )
    duration_s = len(audio) / embedder.sample_rate
    octaves: dict[int, Embedding] = {}
    with watch.phase("embed"):
        if params.octave_views:
            octaves = embed_audio_octaves(
                embedder, audio, hop_s=params.query_hop_s, octaves=params.octave_views
            )
            embedding = octaves.pop(0)
        else:
            embedding = embed_audio(embedder, audio, hop_s=params.query_hop_s)
    with watch.phase("search"):
        index.catch_up()
    search = _LicensedSearch(
        index,
        sessions,
        at=at,
        k=params.k,
        min_similarity=params.similarity_floor,
        window_s=embedding.window_s,
        watch=watch,
    )
    parts = ("search", "licensing", "windows")
    before = watch.seconds(*parts)
    started = time.perf_counter()
    matches = attribute_vectors(
        vectors=embedding.vectors,
        query_starts=embedding.starts,
        window_s=embedding.window_s,
        query_duration_s=duration_s,
        search=search,
        windows=search.windows,
        params=params,
        transpose=embedder.transpose if embedder.can_transpose else None,
        octave_views={o: e.vectors for o, e in octaves.items()},
        octave_apart=embedder.octave_apart if isinstance(embedder, OctaveViews) else None,
    )
    inside = watch.seconds(*parts) - before
    watch.add("verify", time.perf_counter() - started - inside)
    licensed = [(m, search.licensed[search.track_ids[m.track]]) for m in matches]
    matched = [lic.track_id for _, lic in licensed]
    with watch.phase("conflicts"), sessions() as session:
        known = overlaps.pairs_touching(session, matched)
        others = {p.track_id for p in known} | {p.original_track_id for p in known}
        partners = licensed_tracks(session, sorted(others - set(matched), key=str), at=at)
    return Analysis(
        duration_s=duration_s,
        index_watermark=search.watermark,
        matches=licensed,
        pairs=[
            Pair(
                conflict_id=p.id,
                track_id=p.track_id,
                original_track_id=p.original_track_id,
                tempo_ratio=p.tempo_ratio,
                offset_s=p.offset_s,
                holds_money=p.status == OverlapStatus.OPEN.value,
                spans=tuple((s["track_start"], s["track_end"]) for s in p.evidence),
            )
            for p in known
        ],
        partners=partners,
    )


class _LicensedSearch:
    """Index search for one check: hits on tracks that are not licensed at `at` (withdrawn,
    catalogue suspended or expired, terms not in force) are dropped, even before the index
    has caught up with the change; so are hits on spans their labels excluded.

    Tracks are numbered per check (`track_ids`), so an index rebuild between two searches of
    the same check cannot mix up track numbers. Hits below `min_similarity` are dropped before
    the licensing lookup: alignment ignores them anyway, and in a large index most of the
    top-k are such distant neighbours, spread over thousands of tracks.
    """

    def __init__(
        self,
        index: SegmentIndex,
        sessions: sessionmaker[Session],
        *,
        at: dt.datetime,
        k: int,
        min_similarity: float,
        window_s: float,
        watch: Stopwatch | None = None,
    ) -> None:
        self.index = index
        self.watch = watch or Stopwatch()
        self.window_s = window_s
        self.sessions = sessions
        self.at = at
        self.k = k
        self.min_similarity = min_similarity
        self.track_ids: list[uuid.UUID] = []
        self.licensed: dict[uuid.UUID, Licensed] = {}
        self.watermark = -1
        self._number: dict[uuid.UUID, int] = {}
        self._looked_up: set[uuid.UUID] = set()

    def windows(self, numbers: Sequence[int]) -> dict[int, TrackWindows]:
        """The stored windows of tracks this check numbered (licensed ones only), without the
        windows on spans their labels excluded."""
        wanted = {self.track_ids[n]: n for n in numbers if 0 <= n < len(self.track_ids)}
        out: dict[int, TrackWindows] = {}
        with self.watch.phase("windows"):
            stored = self.index.source.track_windows(list(wanted))
        for track_id, (starts, vectors) in stored.items():
            spans = self.licensed[track_id].excluded
            if spans:
                middles = np.asarray(starts, dtype=np.float64)[None, :] + self.window_s / 2
                keep = ~excluded_hits(np.zeros(middles.shape, np.int64), middles, {0: spans})[0]
                starts, vectors = starts[keep], vectors[keep]
            out[wanted[track_id]] = TrackWindows(starts=starts, vectors=vectors)
        return out

    def __call__(self, vectors: npt.NDArray[np.float32]) -> SearchResult:
        with self.watch.phase("search"):
            found = self.index.search(vectors, k=self.k)
        if self.watermark < 0:
            self.watermark = found.watermark
        close = (found.tracks >= 0) & (found.similarities >= self.min_similarity)
        slots = np.unique(found.tracks[close])
        new = [found.track_ids[s] for s in slots if found.track_ids[s] not in self._looked_up]
        if new:
            with self.watch.phase("licensing"), self.sessions() as session:
                self.licensed.update(licensed_tracks(session, new, at=self.at))
            self._looked_up.update(new)
        spans = {
            int(s): self.licensed[found.track_ids[s]].excluded
            for s in slots
            if found.track_ids[s] in self.licensed and self.licensed[found.track_ids[s]].excluded
        }
        if spans:
            middles = found.reference_starts + self.window_s / 2
            close &= ~excluded_hits(found.tracks, middles, spans)
        # Index slot -> this check's track number; the extra last entry stands for "no hit".
        numbers = np.full(len(found.track_ids) + 1, -1, dtype=np.int64)
        for s in slots:
            track_id = found.track_ids[s]
            if track_id in self.licensed:
                numbers[s] = self._number.setdefault(track_id, len(self._number))
                if numbers[s] == len(self.track_ids):
                    self.track_ids.append(track_id)
        tracks = np.where(close, numbers[found.tracks], -1)  # -1 picks the last entry
        return SearchResult(
            similarities=found.similarities,
            tracks=tracks,
            reference_starts=found.reference_starts,
            segments=np.where(tracks >= 0, found.segments, -1),
            track_ids=self.track_ids,
            watermark=found.watermark,
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """Everything about the request that the record keeps."""

    check_id: uuid.UUID
    ai_company_id: uuid.UUID
    idempotency_key: str
    audio_sha256: str
    generation_id: str | None
    model: str | None
    metadata: dict[str, Any]
    embedder: Embedder
    params: AttributionParams
    calibration: Calibration
    currency: str
    fee_bps: int
    created_at: dt.datetime


Accounts = dict[uuid.UUID | None, uuid.UUID]  # org id (None: the platform) -> ledger account
# The key of the platform's escrow in `Accounts` (no organisation has the nil UUID): where
# uses on both sides of an open ownership conflict are held.
ESCROW = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Uses:
    """What a check pays for.

    ranked : every match, strongest first
    uses : one per group of matches on the same passage of one recording (its earliest
        registration, at the group's strongest resemblance), strongest first
    counted_with : a match merged into another track's use -> that track
    held_by : a use paid into escrow -> the open ownership conflict that holds it
    thresholds : each matched track -> the threshold it was judged by (`_thresholds`)
    beside : matched tracks heard beside a stronger use, under their terms' threshold
    """

    ranked: list[tuple[TrackMatch, Licensed]]
    uses: list[tuple[TrackMatch, Licensed]]
    counted_with: dict[uuid.UUID, uuid.UUID]
    held_by: dict[uuid.UUID, uuid.UUID]
    thresholds: dict[uuid.UUID, float]
    beside: frozenset[uuid.UUID]


def _by_strength(pair: tuple[TrackMatch, Licensed]) -> tuple[int, int, str]:
    """The highest resemblance first, then the closest match (`TrackMatch.closeness`), then
    by track id."""
    match = pair[0]
    # In millionths like resemblance, so that float rounding cannot reorder near-equal ones.
    return -quantise(match.resemblance), -round(match.closeness * 1e6), str(pair[1].track_id)


def _thresholds(
    matches: list[tuple[TrackMatch, Licensed]], params: AttributionParams
) -> tuple[dict[uuid.UUID, float], frozenset[uuid.UUID]]:
    """The threshold each match is judged by, and the matches heard beside a stronger use.

    A match that reaches its terms' threshold is a use as it is; heard alone it is judged by
    that threshold but never under the abstain threshold, from which matches heard alone are
    listed. One under its terms' threshold, but heard beside a use at least as strong in the
    same piece, is judged as another source of a mix: from its terms' threshold scaled by the
    calibrated ratio (`AttributionParams.beside_threshold`), since what sits beside a true use
    is far less often spurious than a piece's best match (README, "Calibration"); that can lie
    under the abstain threshold.
    """
    alone_threshold = {
        lic.track_id: max(lic.threshold, params.abstain_threshold) for _, lic in matches
    }
    alone = [
        quantise(m.resemblance)
        for m, lic in matches
        if quantise(m.resemblance) >= quantise(alone_threshold[lic.track_id])
    ]
    strongest = max(alone, default=None)
    thresholds: dict[uuid.UUID, float] = {}
    beside: set[uuid.UUID] = set()
    for m, lic in matches:
        r = quantise(m.resemblance)
        if strongest is not None and r < quantise(lic.threshold) and r <= strongest:
            thresholds[lic.track_id] = params.beside_threshold(lic.threshold)
            beside.add(lic.track_id)
        else:
            thresholds[lic.track_id] = alone_threshold[lic.track_id]
    return thresholds, frozenset(beside)


def _ranked_uses(analysis: Analysis, params: AttributionParams) -> Uses:
    """The matches reported, and the uses among them (resemblance at or above the threshold
    each is judged by, `_thresholds`), with matches on two registrations of one recording
    counted once.

    A match is reported from the abstain threshold, or, when it is paid beside a stronger
    use, from the beside threshold, which can lie under it (`AttributionParams.report_floor`:
    the attribution keeps matches down to the lower of the two).
    """
    thresholds, beside = _thresholds(analysis.matches, params)
    above = [
        (m, lic)
        for m, lic in analysis.matches
        if quantise(m.resemblance) >= quantise(thresholds[lic.track_id])
    ]
    of_track = {lic.track_id: (m, lic) for m, lic in above}
    abstain = quantise(params.abstain_threshold)
    reported = [
        (m, lic)
        for m, lic in analysis.matches
        if quantise(m.resemblance) >= abstain or lic.track_id in of_track
    ]
    # Tracks that may join a use through a pair: those that did not match, and those that
    # matched below their threshold.
    partners = dict(analysis.partners)
    partners.update(
        {lic.track_id: lic for m, lic in analysis.matches if lic.track_id not in of_track}
    )
    groups: list[Group] = group_matches(
        [(t, m) for t, (m, _) in of_track.items()], analysis.pairs, partners=partners.keys()
    )
    uses, implied = [], {}
    counted_with: dict[uuid.UUID, uuid.UUID] = {}
    held_by: dict[uuid.UUID, uuid.UUID] = {}
    for group in groups:
        rep = group.representative
        lic = of_track[rep][1] if rep in of_track else partners[rep]
        uses.append((group.match, lic))
        if rep not in of_track:
            implied[rep] = (group.match, lic)
        counted_with.update({t: rep for t in group.members if t != rep})
        if group.held_by is not None:
            held_by[rep] = group.held_by
    ranked = [(m, lic) for m, lic in reported if lic.track_id not in implied]
    ranked = sorted(ranked + list(implied.values()), key=_by_strength)
    return Uses(ranked, sorted(uses, key=_by_strength), counted_with, held_by, thresholds, beside)


def _candidates(uses: list[tuple[TrackMatch, Licensed]]) -> list[UseCandidate]:
    """What pricing reads of each use: its resemblance and the rate it is charged at (the
    penalty rate for a track whose preferences refuse the use, where the label set one)."""
    return [UseCandidate(quantise(m.resemblance), lic.applied_rate_micros) for m, lic in uses]


def charge_for(analysis: Analysis, *, params: AttributionParams, fee_bps: int) -> int:
    """What recording this analysis would charge (the same pricing `record` applies)."""
    uses = _ranked_uses(analysis, params).uses
    return price(_candidates(uses), fee_bps=fee_bps).charge_micros


def enforce_spending_limits(
    sessions: sessionmaker[Session],
    submission: Submission,
    analysis: Analysis,
    *,
    max_per_check: int,
    default_credit_limit: int,
) -> None:
    """Refuse (402, nothing charged) a check that would charge more than `max_per_check`, or
    take the company's debt past its credit limit (its own, else `default_credit_limit`).

    Checked before the ledger append, outside the chain lock: checks running at the same time
    can together pass the credit limit by at most their number times `max_per_check`.
    """
    charge = charge_for(analysis, params=submission.params, fee_bps=submission.fee_bps)
    if charge == 0:
        return
    company = submission.ai_company_id
    if charge > max_per_check:
        _refuse(company, "per_check_cap", charge=charge, limit=max_per_check, owed=None)
    with sessions() as session:
        own_limit = orgs.get(session, company).credit_limit_micros
        owed = -ledger.balance(session, org_id=company, currency=submission.currency).balance_micros
    limit = default_credit_limit if own_limit is None else own_limit
    if owed + charge > limit:
        _refuse(company, "credit_limit", charge=charge, limit=limit, owed=owed)


def _refuse(
    company: uuid.UUID, limit_kind: str, *, charge: int, limit: int, owed: int | None
) -> None:
    # Alert-worthy: a runaway license rate or a company at its limit needs a person.
    log.warning(
        "checks.spending_limit_refused",
        ai_company_id=str(company),
        limit_kind=limit_kind,
        charge_micros=charge,
        limit_micros=limit,
        owed_micros=owed,
    )
    if limit_kind == "per_check_cap":
        message = (
            f"this check would charge {charge} micro-units, over the per-check cap of {limit}; "
            "nothing was charged"
        )
    else:
        message = (
            f"this check would charge {charge} micro-units and bring what you owe ({owed}) "
            f"past your credit limit of {limit}; nothing was charged"
        )
    raise PaymentRequired(
        message,
        details={"limit": limit_kind, "charge_micros": charge, "limit_micros": limit,
                 "owed_micros": owed},
    )  # fmt: skip


def resolve_accounts(
    sessions: sessionmaker[Session], submission: Submission, analysis: Analysis
) -> Accounts:
    """The ledger accounts a check may post to (created on first use), in a short transaction
    of its own, so that the chain lock is never held for these lookups."""
    found = _ranked_uses(analysis, submission.params)
    if not found.uses:
        return {}
    wanted: list[tuple[uuid.UUID | None, AccountKind]] = [
        (submission.ai_company_id, AccountKind.AI_COMPANY)
    ]
    wanted += [(lic.label_id, AccountKind.LABEL) for _, lic in found.uses]
    if submission.fee_bps:
        wanted.append((None, AccountKind.PLATFORM))
    with transaction(sessions) as session:
        accounts: Accounts = {
            org_id: ledger.account_id(
                session, org_id=org_id, kind=kind, currency=submission.currency
            )
            for org_id, kind in dict(wanted).items()
        }
        if found.held_by:
            accounts[ESCROW] = ledger.account_id(
                session, org_id=None, kind=AccountKind.HELD, currency=submission.currency
            )
        return accounts


def record(
    session: Session,
    head: ChainHead,
    submission: Submission,
    analysis: Analysis,
    accounts: Accounts,
) -> dict[str, Any]:
    """Write the check, its uses and the paying ledger transaction; bind the key. Returns the
    result as stored. Runs inside the ledger appender (under the chain lock); `accounts` come
    from `resolve_accounts`."""
    sub = submission
    found = _ranked_uses(analysis, sub.params)
    ranked, uses = found.ranked, found.uses
    pricing = price(_candidates(uses), fee_bps=sub.fee_bps)
    tx_id = head.next_id() if pricing.charge_micros > 0 else None
    use_ids = {lic.track_id: uuid.uuid4() for _, lic in uses}
    share_of = {lic.track_id: s for (_, lic), s in zip(uses, pricing.shares, strict=True)}
    amount_of = {lic.track_id: a for (_, lic), a in zip(uses, pricing.amounts, strict=True)}

    result = CheckResult(
        id=sub.check_id,
        created_at=sub.created_at,
        idempotency_key=sub.idempotency_key,
        audio_sha256=sub.audio_sha256,
        duration_s=round(analysis.duration_s, 3),
        generation_id=sub.generation_id,
        model=sub.model,
        metadata=sub.metadata,
        embedder=EmbedderOut(name=sub.embedder.name, version=sub.embedder.version),
        index_watermark=analysis.index_watermark,
        matches=[
            MatchOut(
                track_id=lic.track_id,
                catalogue_id=lic.catalogue_id,
                label_id=lic.label_id,
                title=lic.title,
                artist=lic.artist,
                resemblance=quantise(m.resemblance) / RESEMBLANCE_SCALE,
                expected_fpr=sub.calibration.expected_fpr(
                    quantise(m.resemblance) / RESEMBLANCE_SCALE,
                    beside=lic.track_id in found.beside,
                ),
                share=round(float(share_of.get(lic.track_id, 0)), 6),
                is_use=lic.track_id in use_ids,
                threshold=found.thresholds.get(lic.track_id, lic.threshold),
                beside_use=lic.track_id in found.beside,
                terms_version=lic.terms_version,
                preference=lic.preference.value,
                preference_policy=lic.preference_policy,
                amount_micros=amount_of.get(lic.track_id, 0),
                evidence=[_evidence_out(e) for e in m.evidence],
                counted_with=found.counted_with.get(lic.track_id),
                conflict_id=found.held_by.get(found.counted_with.get(lic.track_id, lic.track_id)),
            )
            for m, lic in ranked
        ],
        charge_micros=pricing.charge_micros,
        fee_micros=pricing.fee_micros,
        currency=sub.currency,
        ledger_transaction_id=tx_id,
    ).model_dump(mode="json")

    session.add(
        Check(
            id=sub.check_id,
            ai_company_id=sub.ai_company_id,
            idempotency_key=sub.idempotency_key,
            created_at=sub.created_at,
            audio_sha256=sub.audio_sha256,
            duration_s=analysis.duration_s,
            generation_id=sub.generation_id,
            model=sub.model,
            request_metadata=sub.metadata,
            embedder=sub.embedder.name,
            embedder_version=sub.embedder.version,
            index_watermark=analysis.index_watermark,
            params=sub.params.as_dict(),
            charge_micros=pricing.charge_micros,
            currency=sub.currency,
            result=result,
        )
    )
    session.flush()
    if uses:
        session.execute(
            sa.insert(Use),
            [
                {
                    "id": use_ids[lic.track_id],
                    "check_id": sub.check_id,
                    "created_at": sub.created_at,
                    "ai_company_id": sub.ai_company_id,
                    "label_id": lic.label_id,
                    "catalogue_id": lic.catalogue_id,
                    "track_id": lic.track_id,
                    "license_terms_id": lic.terms_id,
                    "terms_version": lic.terms_version,
                    "rate_per_use_micros": lic.applied_rate_micros,
                    "preference": lic.preference.value,
                    "preferences_version": lic.preferences_version,
                    "resemblance": _resemblance(m),
                    "share": float(share_of[lic.track_id]),
                    "amount_micros": amount_of[lic.track_id],
                    "ledger_transaction_id": tx_id,
                }
                for m, lic in uses
            ],
        )
    if tx_id is not None:
        credits = [
            movements.Credit(accounts[lic.label_id], amount_of[lic.track_id], use_ids[lic.track_id])
            for _, lic in uses
        ]
        if pricing.fee_micros:
            credits.append(movements.Credit(accounts[None], pricing.fee_micros))
        charge = movements.charge(
            session,
            head,
            payer=accounts[sub.ai_company_id],
            credits=credits,
            currency=sub.currency,
            check_id=sub.check_id,
            tx_id=tx_id,
            actor_id=sub.ai_company_id,
        )
        for _, lic in uses:
            conflict_id = found.held_by.get(lic.track_id)
            if conflict_id is not None and amount_of[lic.track_id] > 0:
                conflicts.hold_use(
                    session,
                    head,
                    conflict_id=conflict_id,
                    charge=charge,
                    use_id=use_ids[lic.track_id],
                    track_id=lic.track_id,
                    label_id=lic.label_id,
                    label_account=accounts[lic.label_id],
                    escrow=accounts[ESCROW],
                    amount_micros=amount_of[lic.track_id],
                )
    bound = session.execute(
        sa.update(IdempotencyKey)
        .where(
            IdempotencyKey.ai_company_id == sub.ai_company_id,
            IdempotencyKey.key == sub.idempotency_key,
            IdempotencyKey.check_id.is_(None),
        )
        .values(check_id=sub.check_id, completed_at=utcnow())
    )
    if bound.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            "this Idempotency-Key was completed by another request meanwhile",
            details={"field": IDEMPOTENCY_FIELD, "reason": "completed_elsewhere"},
        )
    return result


def _resemblance(match: TrackMatch) -> float:
    """The resemblance as recorded: exactly the value pricing used."""
    return quantise(match.resemblance) / RESEMBLANCE_SCALE


def _evidence_out(evidence: Evidence) -> EvidenceOut:
    return EvidenceOut(
        query_start=round(evidence.query_start, 2),
        query_end=round(evidence.query_end, 2),
        reference_start=round(evidence.reference_start, 2),
        reference_end=round(evidence.reference_end, 2),
        similarity=round(evidence.similarity, 4),
        # The run was found with the query rotated by `variant`: it sounds -variant away.
        transposition=-evidence.variant,
    )


def reverse(
    session: Session,
    head: ChainHead,
    *,
    check_id: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Cancel a check's charge with the opposite transaction (the ledger is never edited).
    Runs inside the ledger appender."""
    head.flush()  # this batch's own appends are read too
    charge = ledger.charge_of(session, check_id)
    if charge is None:
        if session.get(Check, check_id) is None:
            raise NotFound("check", check_id)
        raise Conflict("this check charged nothing; there is nothing to reverse")
    return movements.reverse(session, head, original=charge, reason=reason, actor_id=actor_id)


@dataclass(frozen=True, slots=True)
class CheckFilter:
    ai_company_id: uuid.UUID | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    generation_id: str | None = None


def checks_query(f: CheckFilter) -> sa.Select[Check]:
    """Checks matching the filter (unordered; the caller pages)."""
    stmt = sa.select(Check)
    if f.ai_company_id is not None:
        stmt = stmt.where(Check.ai_company_id == f.ai_company_id)
    if f.start is not None:
        stmt = stmt.where(Check.created_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(Check.created_at < f.end)
    if f.generation_id is not None:
        stmt = stmt.where(Check.generation_id == f.generation_id)
    return stmt


def use_counts(session: Session, check_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many paid uses each check recorded (checks without uses are left out)."""
    if not check_ids:
        return {}
    rows = session.execute(
        sa.select(Use.check_id, sa.func.count())
        .where(Use.check_id.in_(check_ids))
        .group_by(Use.check_id)
    )
    return {check_id: int(n) for check_id, n in rows}


class AudioGone(AppError):
    """The check's audio is past its retention period and no longer kept."""

    status_code = 410
    code = "gone"


def get_audio_visible(session: Session, check_id: uuid.UUID, principal: Principal) -> Check:
    """A check whose audio the principal may hear: the AI company that submitted it, the labels
    whose tracks it used, operators and auditors (anyone else: NotFound)."""
    check = session.get(Check, check_id)
    if check is None:
        raise NotFound("check", check_id)
    if principal.kind in READ_ALL or check.ai_company_id == principal.org_id:
        return check
    if principal.kind == OrgKind.LABEL:
        used = session.scalar(
            sa.select(sa.literal(True))
            .where(Use.check_id == check_id, Use.label_id == principal.org_id)
            .limit(1)
        )
        if used:
            return check
    raise NotFound("check", check_id)


def audio_path(check: Check, blobs: BlobStore, *, retention_days: int, now: dt.datetime) -> Path:
    """Where the check's audio lies, or AudioGone once it is past retention or was not kept."""
    kept_until = check.created_at + dt.timedelta(days=retention_days)
    path = blobs.path(check.audio_sha256)
    if now >= kept_until or not path.is_file():
        raise AudioGone(
            f"the audio of check {check.id} is no longer kept "
            f"(checks' audio is kept {retention_days} days)",
            details={"check_id": str(check.id), "retention_days": retention_days},
        )
    return path


def forget_expired_audio(
    sessions: sessionmaker[Session], blobs: BlobStore, *, retention_days: int, now: dt.datetime
) -> int:
    """Remove the audio of checks past retention; returns how many files were removed.

    Blobs are content-addressed, so a file is kept while a younger check or any track has the
    same bytes."""
    cutoff = now - dt.timedelta(days=retention_days)
    with sessions() as session:
        old = set(
            session.scalars(
                sa.select(Check.audio_sha256).where(Check.created_at < cutoff).distinct()
            )
        )
        if not old:
            return 0
        young = set(
            session.scalars(
                sa.select(Check.audio_sha256).where(
                    Check.created_at >= cutoff, Check.audio_sha256.in_(old)
                )
            )
        )
        tracks = set(
            session.scalars(sa.select(Track.audio_sha256).where(Track.audio_sha256.in_(old)))
        )
    removed = 0
    for sha in sorted(old - young - tracks):
        path = blobs.path(sha)
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
