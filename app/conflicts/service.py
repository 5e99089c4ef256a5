"""Ownership conflicts: holding the money of the uses on both sides, and resolving them.

A check whose uses fall on both sides of an open conflict pays the passage once (see
`app.checks.grouping`): the use's credit goes to the earlier registrant's label and, in the
same transaction, into the platform's escrow (`hold`, answering the charge). The escrow (the
held account without an organisation) is used rather than a label's own held account: the
money belongs to neither label until the conflict is decided, and a label's held balance
should only show money that is its own but disputed.

A conflict is resolved once, by one label withdrawing its claim (the other wins) or by an
operator naming the winner with a reason. Resolution withdraws the losing track (it matches
no more) and posts every hold of the conflict: `release` back to the label it was taken from
when that label wins, `uphold` to the other label when it does. A hold dated in a closed month
is posted as an adjustment of the open month (the ledger verbs do this). Resolution runs as
ledger work and locks the conflict's row: of two concurrent resolutions one wins, the other
is a Conflict (409).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.catalogues import tracks
from app.catalogues.models import (
    ConflictResolution,
    OverlapKind,
    OverlapStatus,
    OwnershipConflict,
    Track,
)
from app.conflicts.models import ConflictHold
from app.errors import Conflict, NotFound, Unprocessable
from app.ledger import movements
from app.ledger import service as ledger
from app.ledger.models import AccountKind, LedgerTransaction, TransactionKind
from app.ledger.service import ChainHead
from app.logging import get_logger
from app.orgs.auth import READ_ALL, Principal
from app.orgs.models import OrgKind

log = get_logger(__name__)


def hold_use(
    session: Session,
    head: ChainHead,
    *,
    conflict_id: uuid.UUID,
    charge: LedgerTransaction,
    use_id: uuid.UUID,
    track_id: uuid.UUID,
    label_id: uuid.UUID,
    label_account: uuid.UUID,
    escrow: uuid.UUID,
    amount_micros: int,
) -> LedgerTransaction:
    """Hold a use's credit in escrow for an open conflict. Runs as ledger work, in the
    transaction that records the check."""
    hold = movements.hold(
        session,
        head,
        original=charge,
        source=label_account,
        held=escrow,
        amount_micros=amount_micros,
        use_id=use_id,
        reason=f"ownership conflict {conflict_id}: held until one label's claim is settled",
        actor_id=None,
    )
    head.flush()  # the hold's row names the transaction
    session.add(
        ConflictHold(
            conflict_id=conflict_id,
            use_id=use_id,
            track_id=track_id,
            label_id=label_id,
            check_id=charge.check_id,
            hold_transaction_id=hold.id,
            currency=charge.currency,
            amount_micros=amount_micros,
            created_at=head.now(),
        )
    )
    session.flush()
    return hold


@dataclass(frozen=True, slots=True)
class Decision:
    """Who resolves a conflict, and how."""

    actor_id: uuid.UUID
    operator: bool
    resolution: ConflictResolution
    reason: str
    winner_label_id: uuid.UUID | None = None  # an operator's decision names it


def payee_accounts(
    session: Session, conflict_id: uuid.UUID
) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    """The label accounts a resolution may pay, per (label, currency) of the conflict's
    holds, created on first use (looked up before taking the chain lock)."""
    conflict = session.get(OwnershipConflict, conflict_id)
    if conflict is None:
        return {}
    currencies = session.scalars(
        sa.select(ConflictHold.currency).where(ConflictHold.conflict_id == conflict_id).distinct()
    ).all()
    return {
        (org, currency): ledger.account_id(
            session, org_id=org, kind=AccountKind.LABEL, currency=currency
        )
        for org in (conflict.label_id, conflict.original_label_id)
        for currency in currencies
    }


def resolve(
    session: Session,
    head: ChainHead,
    *,
    conflict_id: uuid.UUID,
    decision: Decision,
    accounts: dict[tuple[uuid.UUID, str], uuid.UUID],
) -> OwnershipConflict:
    """Decide an open conflict and pay what it held to the winner. Runs as ledger work.

    A label withdrawing its claim must be one of the two; the other label wins. An operator
    names the winner, one of the two labels. Raises NotFound for a conflict the actor may not
    see (or a duplicate, which has nothing to decide), Conflict unless it is open.
    """
    head.flush()
    conflict = session.scalars(
        sa.select(OwnershipConflict)
        .where(OwnershipConflict.id == conflict_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if conflict is None:
        raise NotFound("conflict", conflict_id)
    parties = (conflict.label_id, conflict.original_label_id)
    if not decision.operator and decision.actor_id not in parties:
        raise NotFound("conflict", conflict_id)
    if conflict.kind != OverlapKind.CONFLICT:
        raise Conflict(
            "this is a duplicate within one label: there is no claim to settle; withdraw one "
            "of the tracks if you want only one",
            details={"kind": conflict.kind},
        )
    if conflict.status != OverlapStatus.OPEN:
        raise Conflict(
            f"this conflict is already {conflict.status}"
            + (f" (won by label {conflict.winner_label_id})" if conflict.winner_label_id else ""),
            details={"status": conflict.status, "expected": OverlapStatus.OPEN.value},
        )
    if decision.operator:
        winner = decision.winner_label_id
        if winner not in parties:
            raise Unprocessable(
                f"the winner must be one of the conflict's two labels: {parties[0]} or "
                f"{parties[1]}, got {winner}",
                details={"field": "body.winner_label_id"},
            )
    else:
        winner = parties[1] if decision.actor_id == parties[0] else parties[0]
    assert winner is not None
    loser_track_id = (
        conflict.track_id if winner == conflict.original_label_id else conflict.original_track_id
    )
    loser_track = session.get(Track, loser_track_id)
    assert loser_track is not None  # a foreign key
    tracks.withdraw(session, loser_track)

    holds = list(
        session.scalars(
            sa.select(ConflictHold)
            .where(ConflictHold.conflict_id == conflict.id)
            .order_by(ConflictHold.id)
        )
    )
    for held in holds:
        pending = ledger.get_transaction(session, held.hold_transaction_id)
        assert pending is not None  # a foreign key
        move = movements.release if held.label_id == winner else movements.uphold
        move(
            session,
            head,
            pending=pending,
            to=accounts[(winner, held.currency)],
            reason=f"ownership conflict {conflict.id} {decision.resolution.value}: "
            f"{decision.reason}",
            actor_id=decision.actor_id,
        )
    head.flush()
    conflict.status = OverlapStatus.RESOLVED.value
    conflict.resolution = decision.resolution.value
    conflict.winner_label_id = winner
    conflict.resolved_by = decision.actor_id
    conflict.resolved_reason = decision.reason
    conflict.resolved_at = head.now()
    session.flush()
    log.info(
        "conflicts.resolved",
        conflict_id=str(conflict.id),
        resolution=decision.resolution.value,
        winner_label_id=str(winner),
        holds=len(holds),
    )
    return conflict


# Reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConflictFilter:
    label_id: uuid.UUID | None = None  # either side
    kind: OverlapKind | None = None
    status: OverlapStatus | None = None
    track_id: uuid.UUID | None = None  # either side


CONFLICT_ORDER = (OwnershipConflict.detected_at, OwnershipConflict.id)


def conflicts_query(f: ConflictFilter) -> sa.Select[OwnershipConflict]:
    """Duplicates and conflicts matching the filter (unordered; the caller pages)."""
    stmt = sa.select(OwnershipConflict)
    if f.label_id is not None:
        stmt = stmt.where(
            sa.or_(
                OwnershipConflict.label_id == f.label_id,
                OwnershipConflict.original_label_id == f.label_id,
            )
        )
    if f.track_id is not None:
        stmt = stmt.where(
            sa.or_(
                OwnershipConflict.track_id == f.track_id,
                OwnershipConflict.original_track_id == f.track_id,
            )
        )
    if f.kind is not None:
        stmt = stmt.where(OwnershipConflict.kind == f.kind.value)
    if f.status is not None:
        stmt = stmt.where(OwnershipConflict.status == f.status.value)
    return stmt


def scope(principal: Principal, f: ConflictFilter) -> ConflictFilter:
    """Labels see the conflicts they are a party to; operators and auditors all."""
    if principal.kind in READ_ALL:
        return f
    if principal.kind == OrgKind.LABEL:
        return dataclasses.replace(f, label_id=principal.org_id)
    raise NotFound("conflict", "any")  # pragma: no cover - the routes admit no one else


def get_visible(
    session: Session, conflict_id: uuid.UUID, principal: Principal
) -> OwnershipConflict:
    conflict = session.get(OwnershipConflict, conflict_id)
    if conflict is None or (
        principal.kind not in READ_ALL
        and principal.org_id not in (conflict.label_id, conflict.original_label_id)
    ):
        raise NotFound("conflict", conflict_id)
    return conflict


@dataclass(frozen=True, slots=True)
class HoldState:
    """One held use and what became of its money."""

    hold: ConflictHold
    state: str  # held | released | upheld
    resolution_transaction_id: int | None


def holds_of(
    session: Session,
    *,
    conflict_ids: Sequence[uuid.UUID] = (),
    use_ids: Sequence[uuid.UUID] = (),
) -> list[HoldState]:
    """The holds of some conflicts or some uses, with their state, oldest first."""
    if not conflict_ids and not use_ids:
        return []
    stmt = sa.select(ConflictHold).order_by(ConflictHold.id)
    if conflict_ids:
        stmt = stmt.where(ConflictHold.conflict_id.in_(conflict_ids))
    if use_ids:
        stmt = stmt.where(ConflictHold.use_id.in_(use_ids))
    holds = list(session.scalars(stmt))
    if not holds:
        return []
    posted = {
        answers: (tx, kind)
        for answers, tx, kind in session.execute(
            sa.select(
                LedgerTransaction.answers_id, LedgerTransaction.id, LedgerTransaction.kind
            ).where(
                LedgerTransaction.answers_id.in_([h.hold_transaction_id for h in holds]),
                LedgerTransaction.kind.in_(
                    [TransactionKind.RELEASE.value, TransactionKind.UPHOLD.value]
                ),
            )
        )
    }
    states = []
    for h in holds:
        tx, kind = posted.get(h.hold_transaction_id, (None, "held"))
        state = {"release": "released", "uphold": "upheld"}.get(kind, "held")
        states.append(HoldState(h, state, tx))
    return states


@dataclass(frozen=True, slots=True)
class Amounts:
    currency: str
    held_micros: int  # still in escrow
    paid_micros: int  # posted to the winner


def amounts_of(
    session: Session, conflict_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Amounts]]:
    """Per conflict and currency, what is held and what was paid out."""
    out: dict[uuid.UUID, dict[str, list[int]]] = {c: {} for c in conflict_ids}
    for state in holds_of(session, conflict_ids=conflict_ids):
        sums = out[state.hold.conflict_id].setdefault(state.hold.currency, [0, 0])
        sums[0 if state.state == "held" else 1] += state.hold.amount_micros
    return {
        c: [Amounts(cur, held, paid) for cur, (held, paid) in sorted(per.items())]
        for c, per in out.items()
    }


def held_between(session: Session, *, label_id: uuid.UUID, end: dt.datetime) -> dict[str, int]:
    """Per currency, the money of the label's open conflicts held in escrow at `end` (holds
    made before it and not posted before it), whichever side the label is on."""
    posted_before = (
        sa.select(LedgerTransaction.id)
        .where(
            LedgerTransaction.answers_id == ConflictHold.hold_transaction_id,
            LedgerTransaction.kind.in_(
                [TransactionKind.RELEASE.value, TransactionKind.UPHOLD.value]
            ),
            LedgerTransaction.created_at < end,
        )
        .exists()
    )
    rows = session.execute(
        sa.select(ConflictHold.currency, sa.func.sum(ConflictHold.amount_micros))
        .join(OwnershipConflict, OwnershipConflict.id == ConflictHold.conflict_id)
        .where(
            sa.or_(
                OwnershipConflict.label_id == label_id,
                OwnershipConflict.original_label_id == label_id,
            ),
            ConflictHold.created_at < end,
            ~posted_before,
        )
        .group_by(ConflictHold.currency)
    )
    return {currency: int(total) for currency, total in rows}


@dataclass(frozen=True, slots=True)
class HoldAsOf:
    """A held use as it stood at the end of a period."""

    hold: ConflictHold
    conflict: OwnershipConflict
    state: str  # held | released | upheld, at the end
    at: dt.datetime  # when it reached that state


def holds_as_of(
    session: Session, *, label_id: uuid.UUID, start: dt.datetime, end: dt.datetime
) -> list[HoldAsOf]:
    """The holds of the label's conflicts (either side) that were held at some point in
    [start, end), each as it stood at `end`. Built from the holds and the ledger, which are
    append-only, so the answer about a past period never changes."""
    posted = aliased(LedgerTransaction)
    rows = session.execute(
        sa.select(ConflictHold, OwnershipConflict, posted.kind, posted.created_at)
        .join(OwnershipConflict, OwnershipConflict.id == ConflictHold.conflict_id)
        .outerjoin(
            posted,
            sa.and_(
                posted.answers_id == ConflictHold.hold_transaction_id,
                posted.kind.in_([TransactionKind.RELEASE.value, TransactionKind.UPHOLD.value]),
            ),
        )
        .where(
            sa.or_(
                OwnershipConflict.label_id == label_id,
                OwnershipConflict.original_label_id == label_id,
            ),
            ConflictHold.created_at < end,
            sa.or_(posted.id.is_(None), posted.created_at >= start),
        )
        .order_by(ConflictHold.id)
    ).all()
    found = []
    for hold, conflict, kind, posted_at in rows:
        if kind is not None and posted_at < end:
            state, at = {"release": "released", "uphold": "upheld"}[kind], posted_at
        else:
            state, at = "held", hold.created_at
        found.append(HoldAsOf(hold, conflict, state, at))
    return found
