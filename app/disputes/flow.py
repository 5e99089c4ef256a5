"""The dispute workflow as the API and the schedule drive it.

`DisputeFlow` is built once per process by the app's lifespan, around the process's one ledger
appender: every step moves money, so every step runs as ledger work (see
`app.disputes.service`). What can be looked up before taking the chain lock (the label's held
account, created on first use) is looked up in a short transaction of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.config import Settings
from app.db import transaction
from app.disputes import service as disputes
from app.disputes.models import DisputeReason
from app.disputes.service import Actor
from app.ledger import service as ledger
from app.ledger.appender import LedgerAppender, run_alone
from app.ledger.models import AccountKind
from app.ledger.service import ChainHead
from app.logging import get_logger

log = get_logger(__name__)


class DisputeFlow:
    """Opens, decides, appeals and expires disputes; thread-safe (one per process)."""

    def __init__(
        self, *, settings: Settings, sessions: sessionmaker[Session], appender: LedgerAppender
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.appender = appender

    def open(
        self, use_id: uuid.UUID, *, actor: Actor, reason: DisputeReason, comment: str
    ) -> uuid.UUID:
        assert actor.org_id is not None
        held = self._held_account(use_id, actor.org_id)
        days = self.settings.dispute_review_days
        dispute = self.appender.run(
            lambda session, head: disputes.open_dispute(
                session,
                head,
                use_id=use_id,
                actor=actor,
                reason=reason,
                comment=comment,
                review_days=days,
                held_account=held,
            )
        )
        return dispute.id

    def release(
        self,
        dispute_id: uuid.UUID,
        *,
        actor: Actor,
        reason: str,
        do_not_match: Sequence[tuple[float, float]] = (),
    ) -> None:
        self.appender.run(
            lambda session, head: disputes.release(
                session,
                head,
                dispute_id=dispute_id,
                actor=actor,
                reason=reason,
                do_not_match=do_not_match,
            )
        )

    def uphold(self, dispute_id: uuid.UUID, *, actor: Actor, reason: str) -> None:
        self.appender.run(
            lambda session, head: disputes.uphold(
                session, head, dispute_id=dispute_id, actor=actor, reason=reason
            )
        )

    def appeal(self, dispute_id: uuid.UUID, *, actor: Actor, reason: str) -> None:
        self.appender.run(
            lambda session, head: disputes.appeal(
                session, head, dispute_id=dispute_id, actor=actor, reason=reason
            )
        )

    def decide_appeal(
        self, dispute_id: uuid.UUID, *, actor: Actor, grant: bool, reason: str
    ) -> None:
        self.appender.run(
            lambda session, head: disputes.decide_appeal(
                session, head, dispute_id=dispute_id, actor=actor, grant=grant, reason=reason
            )
        )

    def _held_account(self, use_id: uuid.UUID, ai_company_id: uuid.UUID) -> uuid.UUID:
        """The held account of the use's label (created on first use)."""
        with transaction(self.sessions) as session:
            use = disputes.use_for_dispute(session, use_id, ai_company_id)
            return ledger.account_id(
                session,
                org_id=use.label_id,
                kind=AccountKind.HELD,
                currency=disputes.currency_of(session, use),
            )


def _expire(session: Session, head: ChainHead, *, dispute_id: uuid.UUID) -> bool:
    return disputes.expire(session, head, dispute_id=dispute_id) is not None


def expire_due(sessions: sessionmaker[Session], *, clock: Clock) -> list[uuid.UUID]:
    """Release every open dispute whose review window has passed; returns those it released.
    Each in a transaction of its own; a dispute decided meanwhile is left alone, so running
    this twice (or on two workers) releases nothing twice."""
    with sessions() as session:
        due = disputes.due_for_expiry(session, clock())
    released: list[uuid.UUID] = []
    for dispute_id in due:
        if run_alone(sessions, partial(_expire, dispute_id=dispute_id), clock=clock):
            released.append(dispute_id)
    if released:
        log.info("disputes.expired", disputes=[str(d) for d in released])
    return released
