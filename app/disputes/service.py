"""Disputes: an AI company contests a use; its credit is held until the label (or, on appeal,
an operator) decides, or the review window passes.

The money follows TigerBeetle's two-phase transfers through the ledger verbs:

* opening holds the use's credit: label's account -> label's held account (`hold`);
* the label releases (held -> AI company, `release`) or upholds (held -> label, `uphold`)
  before `review_deadline`; after it, the schedule releases (`expire`);
* the AI company may appeal an upheld dispute once: the money is held again (`hold`,
  answering the uphold) and an operator releases or upholds it.

Every function that changes a dispute runs as ledger work (under the chain lock, inside the
appender) and locks the dispute's row; a decision on a dispute that is no longer in the state
it expects is a Conflict (409), so of two concurrent decisions exactly one wins. The ledger
adds its own guard: a hold is released or upheld at most once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.catalogues import tracks
from app.catalogues.models import Track, TrackExclusion
from app.checks.models import Check, Use
from app.disputes.models import (
    ActorRole,
    Dispute,
    DisputeEvent,
    DisputeReason,
    DisputeStatus,
    DisputeStep,
)
from app.errors import Conflict, NotFound
from app.ledger import movements
from app.ledger import service as ledger
from app.ledger.models import LedgerPosting, LedgerTransaction
from app.ledger.service import ChainHead
from app.orgs.auth import READ_ALL, Principal
from app.orgs.models import OrgKind


@dataclass(frozen=True, slots=True)
class Actor:
    """Who takes a step: an organisation in a role, or the service itself (org_id None)."""

    org_id: uuid.UUID | None
    role: ActorRole

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.org_id, ActorRole(principal.kind.value))


SYSTEM = Actor(None, ActorRole.SYSTEM)


def use_for_dispute(session: Session, use_id: uuid.UUID, ai_company_id: uuid.UUID) -> Use:
    """The AI company's own use (another company's is 404, like a missing one)."""
    use = session.get(Use, use_id)
    if use is None or use.ai_company_id != ai_company_id:
        raise NotFound("use", use_id)
    return use


def currency_of(session: Session, use: Use) -> str:
    """The currency the use was charged in."""
    check = session.get(Check, use.check_id)
    assert check is not None  # a foreign key
    return check.currency


def open_dispute(
    session: Session,
    head: ChainHead,
    *,
    use_id: uuid.UUID,
    actor: Actor,
    reason: DisputeReason,
    comment: str,
    review_days: int,
    held_account: uuid.UUID,
) -> Dispute:
    """Open a dispute on a use and hold its credit. Runs as ledger work.

    held_account : the label's held account, resolved beforehand (see `DisputeFlow`)
    Raises Conflict when the use was not charged, its charge was reversed, it is already
    disputed, or nothing of its credit is left.
    """
    assert actor.org_id is not None
    head.flush()
    use = use_for_dispute(session, use_id, actor.org_id)
    if use.ledger_transaction_id is None:
        raise Conflict("this use was not charged; there is nothing to dispute")
    charge = ledger.get_transaction(session, use.ledger_transaction_id)
    assert charge is not None  # a foreign key
    reversal = ledger.reversal_of(session, [charge.id]).get(charge.id)
    if reversal is not None:
        raise Conflict(
            f"this use's charge was reversed by transaction {reversal}; "
            "there is nothing to dispute",
            details={"reversal_transaction_id": reversal},
        )
    if session.scalar(sa.select(Dispute.id).where(Dispute.use_id == use.id)) is not None:
        raise _already_disputed(session, use.id)
    label_account = ledger.find_account(session, use.label_id, charge.currency)
    assert label_account is not None  # it was credited for the use
    amount = _credit_of(session, label_account, use.id)
    if amount <= 0:
        raise Conflict("nothing of this use's credit is left to hold")
    now = head.now()
    dispute_id, tx_id = uuid.uuid4(), head.next_id()
    created = session.execute(
        insert(Dispute)
        .values(
            id=dispute_id,
            use_id=use.id,
            check_id=use.check_id,
            ai_company_id=use.ai_company_id,
            label_id=use.label_id,
            track_id=use.track_id,
            currency=charge.currency,
            amount_micros=amount,
            reason=reason.value,
            comment=comment,
            status=DisputeStatus.OPEN.value,
            opened_at=now,
            review_deadline=now + dt.timedelta(days=review_days),
            pending_transaction_id=tx_id,
            last_transaction_id=tx_id,
        )
        .on_conflict_do_nothing(index_elements=[Dispute.use_id])
        .returning(Dispute.id)
    ).first()
    if created is None:  # a dispute committed since the check above
        raise _already_disputed(session, use.id)
    hold = movements.hold(
        session,
        head,
        original=charge,
        source=label_account,
        held=held_account,
        amount_micros=amount,
        use_id=use.id,
        reason=f"dispute opened ({reason.value}): {comment}",
        actor_id=actor.org_id,
        dispute_id=dispute_id,
        tx_id=tx_id,
    )
    _record(session, head, dispute_id, DisputeStep.OPENED, DisputeStatus.OPEN, actor,
            reason=reason.value, comment=comment, transaction=hold)  # fmt: skip
    return _reload(session, dispute_id)


def _already_disputed(session: Session, use_id: uuid.UUID) -> Conflict:
    existing = session.scalar(sa.select(Dispute.id).where(Dispute.use_id == use_id))
    return Conflict(
        f"this use is already disputed (dispute {existing})",
        details={"dispute_id": str(existing)},
    )


def release(
    session: Session,
    head: ChainHead,
    *,
    dispute_id: uuid.UUID,
    actor: Actor,
    reason: str,
    do_not_match: Sequence[tuple[float, float]] = (),
) -> Dispute:
    """The label gives the use up: the held money goes back to the AI company. Spans of the
    track in `do_not_match` never match again."""
    dispute = _for_label(session, dispute_id, actor)
    _expect(dispute, DisputeStatus.OPEN)
    _within_review(dispute, head.now())
    decided = _decide(session, head, dispute, DisputeStep.RELEASED, actor, reason)
    if do_not_match:
        track = session.get(Track, dispute.track_id)
        assert track is not None  # a foreign key
        assert actor.org_id is not None
        tracks.exclude_spans(
            session,
            track,
            do_not_match,
            created_by=actor.org_id,
            reason=f"dispute {dispute.id} released: {reason}",
            dispute_id=dispute.id,
            at=head.now(),
        )
    return decided


def uphold(
    session: Session, head: ChainHead, *, dispute_id: uuid.UUID, actor: Actor, reason: str
) -> Dispute:
    """The label stands by the use: the held money is paid to it."""
    dispute = _for_label(session, dispute_id, actor)
    _expect(dispute, DisputeStatus.OPEN)
    _within_review(dispute, head.now())
    return _decide(session, head, dispute, DisputeStep.UPHELD, actor, reason)


def appeal(
    session: Session,
    head: ChainHead,
    *,
    dispute_id: uuid.UUID,
    actor: Actor,
    reason: str,
) -> Dispute:
    """The AI company appeals an upheld dispute (once): the money is held again until an
    operator decides."""
    dispute = _locked(session, dispute_id)
    if dispute is None or dispute.ai_company_id != actor.org_id:
        raise NotFound("dispute", dispute_id)
    if dispute.appealed_at is not None:
        raise Conflict(
            f"this dispute was already appealed at {dispute.appealed_at.isoformat()}; "
            "a dispute is appealed once",
            details={"status": dispute.status},
        )
    _expect(dispute, DisputeStatus.UPHELD)
    use = session.get(Use, dispute.use_id)
    assert use is not None  # a foreign key
    assert use.ledger_transaction_id is not None  # it was charged, or it was not disputed
    reversal = ledger.reversal_of(session, [use.ledger_transaction_id]).get(
        use.ledger_transaction_id
    )
    if reversal is not None:
        raise Conflict(
            f"the use's charge was reversed by transaction {reversal}; its money already went "
            "back, there is nothing to appeal",
            details={"reversal_transaction_id": reversal},
        )
    upheld = ledger.get_transaction(session, dispute.last_transaction_id)
    assert upheld is not None
    label_account = ledger.find_account(session, dispute.label_id, dispute.currency)
    held_account = ledger.find_account(session, dispute.label_id, dispute.currency, held=True)
    assert label_account is not None  # the dispute's hold used both
    assert held_account is not None
    hold = movements.hold(
        session,
        head,
        original=upheld,
        source=label_account,
        held=held_account,
        amount_micros=dispute.amount_micros,
        use_id=dispute.use_id,
        reason=f"dispute appealed: {reason}",
        actor_id=actor.org_id,
        dispute_id=dispute.id,
    )
    head.flush()
    dispute.status = DisputeStatus.APPEALED.value
    dispute.appealed_at = head.now()
    dispute.pending_transaction_id = dispute.last_transaction_id = hold.id
    _record(session, head, dispute.id, DisputeStep.APPEALED, DisputeStatus.APPEALED, actor,
            reason=reason, transaction=hold)  # fmt: skip
    return dispute


def decide_appeal(
    session: Session,
    head: ChainHead,
    *,
    dispute_id: uuid.UUID,
    actor: Actor,
    grant: bool,
    reason: str,
) -> Dispute:
    """An operator decides an appeal: granted, the money goes back to the AI company;
    denied, it is paid to the label. Final."""
    dispute = _locked(session, dispute_id)
    if dispute is None:
        raise NotFound("dispute", dispute_id)
    _expect(dispute, DisputeStatus.APPEALED)
    step = DisputeStep.APPEAL_GRANTED if grant else DisputeStep.APPEAL_DENIED
    return _decide(session, head, dispute, step, actor, reason)


def expire(session: Session, head: ChainHead, *, dispute_id: uuid.UUID) -> Dispute | None:
    """Release a dispute whose review window has passed untouched; None when it is not (any
    longer) an open dispute past its deadline, so running it twice does nothing twice."""
    dispute = _locked(session, dispute_id)
    if (
        dispute is None
        or dispute.status != DisputeStatus.OPEN
        or dispute.review_deadline > head.now()
    ):
        return None
    days = (dispute.review_deadline - dispute.opened_at).days
    return _decide(session, head, dispute, DisputeStep.EXPIRED, SYSTEM,
                   f"the label did not decide within the {days}-day review window")  # fmt: skip


def due_for_expiry(session: Session, now: dt.datetime) -> list[uuid.UUID]:
    """Open disputes whose review window has passed, oldest deadline first."""
    return list(
        session.scalars(
            sa.select(Dispute.id)
            .where(Dispute.status == DisputeStatus.OPEN.value, Dispute.review_deadline <= now)
            .order_by(Dispute.review_deadline)
        )
    )


# What each decision does to the money and to the dispute.
_OUTCOME = {
    DisputeStep.RELEASED: (movements.release, DisputeStatus.RELEASED),
    DisputeStep.EXPIRED: (movements.release, DisputeStatus.RELEASED),
    DisputeStep.APPEAL_GRANTED: (movements.release, DisputeStatus.RELEASED),
    DisputeStep.UPHELD: (movements.uphold, DisputeStatus.UPHELD),
    DisputeStep.APPEAL_DENIED: (movements.uphold, DisputeStatus.UPHELD),
}


def _decide(
    session: Session,
    head: ChainHead,
    dispute: Dispute,
    step: DisputeStep,
    actor: Actor,
    reason: str,
) -> Dispute:
    """Post the pending hold to one side, and record the step."""
    move, status = _OUTCOME[step]
    assert dispute.pending_transaction_id is not None  # open or appealed
    pending = ledger.get_transaction(session, dispute.pending_transaction_id)
    assert pending is not None
    payee_org = dispute.ai_company_id if status is DisputeStatus.RELEASED else dispute.label_id
    payee = ledger.find_account(session, payee_org, dispute.currency)
    assert payee is not None  # both sides have posted to their accounts already
    moved = move(
        session,
        head,
        pending=pending,
        to=payee,
        reason=f"dispute {step.value}: {reason}",
        actor_id=actor.org_id,
        dispute_id=dispute.id,
    )
    head.flush()
    dispute.status = status.value
    dispute.decided_at = head.now()
    dispute.pending_transaction_id = None
    dispute.last_transaction_id = moved.id
    _record(session, head, dispute.id, step, status, actor, reason=reason, transaction=moved)
    return dispute


def _record(
    session: Session,
    head: ChainHead,
    dispute_id: uuid.UUID,
    step: DisputeStep,
    status: DisputeStatus,
    actor: Actor,
    *,
    reason: str,
    comment: str | None = None,
    transaction: LedgerTransaction | None,
) -> None:
    head.flush()  # the event names the transaction, which must be written first
    session.add(
        DisputeEvent(
            dispute_id=dispute_id,
            step=step.value,
            status_after=status.value,
            actor_id=actor.org_id,
            actor_role=actor.role.value,
            reason=reason,
            comment=comment,
            at=head.now(),
            ledger_transaction_id=transaction.id if transaction is not None else None,
        )
    )
    session.flush()


def _locked(session: Session, dispute_id: uuid.UUID) -> Dispute | None:
    """The dispute, its row locked until commit and its state read fresh."""
    return session.scalars(
        sa.select(Dispute)
        .where(Dispute.id == dispute_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def _for_label(session: Session, dispute_id: uuid.UUID, actor: Actor) -> Dispute:
    dispute = _locked(session, dispute_id)
    if dispute is None or dispute.label_id != actor.org_id:
        raise NotFound("dispute", dispute_id)
    return dispute


def _expect(dispute: Dispute, status: DisputeStatus) -> None:
    if dispute.status != status:
        raise Conflict(
            f"this dispute is {dispute.status}, not {status.value}",
            details={"status": dispute.status, "expected": status.value},
        )


def _within_review(dispute: Dispute, now: dt.datetime) -> None:
    if now >= dispute.review_deadline:
        raise Conflict(
            f"the review window closed at {dispute.review_deadline.isoformat()}; the dispute "
            "resolves as released",
            details={"review_deadline": dispute.review_deadline.isoformat()},
        )


def _credit_of(session: Session, account: uuid.UUID, use_id: uuid.UUID) -> int:
    """What an account holds of one use's money, net."""
    total = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LedgerPosting.amount_micros), 0)).where(
            LedgerPosting.account_id == account, LedgerPosting.use_id == use_id
        )
    )
    return int(total or 0)


def _reload(session: Session, dispute_id: uuid.UUID) -> Dispute:
    found = session.get(Dispute, dispute_id, populate_existing=True)
    assert found is not None
    return found


# Reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DisputeFilter:
    ai_company_id: uuid.UUID | None = None
    label_id: uuid.UUID | None = None
    status: DisputeStatus | None = None
    use_id: uuid.UUID | None = None
    check_id: uuid.UUID | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


DISPUTE_ORDER = (Dispute.opened_at, Dispute.id)


def disputes_query(f: DisputeFilter) -> sa.Select[Dispute]:
    """Disputes matching the filter (unordered; the caller pages)."""
    stmt = sa.select(Dispute)
    for column, value in (
        (Dispute.ai_company_id, f.ai_company_id),
        (Dispute.label_id, f.label_id),
        (Dispute.use_id, f.use_id),
        (Dispute.check_id, f.check_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.status is not None:
        stmt = stmt.where(Dispute.status == f.status.value)
    if f.start is not None:
        stmt = stmt.where(Dispute.opened_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(Dispute.opened_at < f.end)
    return stmt


def scope(principal: Principal, f: DisputeFilter) -> DisputeFilter:
    """AI companies see their disputes, labels those on their uses, auditors and operators
    all."""
    if principal.kind in READ_ALL:
        return f
    if principal.kind == OrgKind.LABEL:
        return dataclasses.replace(f, label_id=principal.org_id)
    return dataclasses.replace(f, ai_company_id=principal.org_id)


def get_visible(session: Session, dispute_id: uuid.UUID, principal: Principal) -> Dispute:
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or (
        principal.kind not in READ_ALL
        and principal.org_id not in (dispute.ai_company_id, dispute.label_id)
    ):
        raise NotFound("dispute", dispute_id)
    return dispute


def events_of(
    session: Session, dispute_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[DisputeEvent]]:
    """Each dispute's steps, in the order they happened."""
    found: dict[uuid.UUID, list[DisputeEvent]] = {d: [] for d in dispute_ids}
    if dispute_ids:
        stmt = (
            sa.select(DisputeEvent)
            .where(DisputeEvent.dispute_id.in_(dispute_ids))
            .order_by(DisputeEvent.id)
        )
        for event in session.scalars(stmt):
            found[event.dispute_id].append(event)
    return found


def exclusions_of(
    session: Session, dispute_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[TrackExclusion]]:
    """The track spans each dispute's release excluded from matching."""
    found: dict[uuid.UUID, list[TrackExclusion]] = {d: [] for d in dispute_ids}
    if dispute_ids:
        stmt = (
            sa.select(TrackExclusion)
            .where(TrackExclusion.dispute_id.in_(dispute_ids))
            .order_by(TrackExclusion.start_s)
        )
        for exclusion in session.scalars(stmt):
            assert exclusion.dispute_id is not None
            found[exclusion.dispute_id].append(exclusion)
    return found


@dataclass(frozen=True, slots=True)
class DisputeAsOf:
    """A dispute as it stood at a moment: its state then, from its appended history."""

    dispute: Dispute
    status: DisputeStatus
    last_step: DisputeStep
    last_step_at: dt.datetime


def as_of(
    session: Session,
    *,
    start: dt.datetime,
    end: dt.datetime,
    ai_company_id: uuid.UUID | None = None,
    label_id: uuid.UUID | None = None,
) -> list[DisputeAsOf]:
    """The disputes of an AI company or a label that were open at some point in [start, end)
    or took a step in it, each as it stood at `end`. Built from the appended history alone, so
    the answer about a past period never changes."""
    last = (
        sa.select(
            DisputeEvent.dispute_id,
            DisputeEvent.step,
            DisputeEvent.status_after,
            DisputeEvent.at,
            sa.func.row_number()
            .over(partition_by=DisputeEvent.dispute_id, order_by=DisputeEvent.id.desc())
            .label("n"),
        )
        .where(DisputeEvent.at < end)
        .subquery()
    )
    rows = session.execute(
        sa.select(Dispute, last.c.step, last.c.status_after, last.c.at)
        .join(last, sa.and_(last.c.dispute_id == Dispute.id, last.c.n == 1))
        .where(
            Dispute.ai_company_id == ai_company_id if ai_company_id else sa.true(),
            Dispute.label_id == label_id if label_id else sa.true(),
            Dispute.opened_at < end,
            sa.or_(
                last.c.at >= start,
                last.c.status_after.in_([DisputeStatus.OPEN.value, DisputeStatus.APPEALED.value]),
            ),
        )
        .order_by(Dispute.opened_at, Dispute.id)
    ).all()
    return [
        DisputeAsOf(dispute, DisputeStatus(status), DisputeStep(step), at)
        for dispute, step, status, at in rows
    ]
